#!/usr/bin/python3
"""Side-by-side benchmark: chexnet vs PyTorch on this machine, one run.

  bench/bench.py [--chexnet build/chexnet] [--repeat 10] [--threads N] [--quick]

The last lines compare the figures with the targets of issue #6.

Each configuration runs in its own process (so peak RSS is per process):
  chexnet forward, batch 1 and 16       (chexnet bench)
  chexnet training step, batch 16       (chexnet bench --train)
  chexnet bf16 forward, batch 1 and 16  (chexnet bench --precision bf16)
  PyTorch forward: eager, channels_last, torch.jit.freeze; batch 1 and 16
  PyTorch bf16 forward: torch.autocast("cpu", bfloat16), eager and channels_last
  PyTorch training step batch 16: eager, channels_last, memory_efficient=True
Medians over repeats after warm-up; images/s; GFLOP/s (DenseNet-121 224x224:
5.67 GFLOP forward, 3x per trained image); ratio to PyTorch's best. Timings are
reported, never asserted.
"""
import argparse
import json
import os
import resource
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
FWD_GFLOP = 5.67


def torch_worker(cfg):
    import time
    import torch
    import torchvision
    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    mem_eff = cfg.get("memory_efficient", False)
    m = torchvision.models.densenet121(num_classes=14, memory_efficient=mem_eff)
    b = cfg["batch"]
    x = torch.randn(b, 3, 224, 224)
    cl = cfg["variant"] == "channels_last"
    if cl:
        m = m.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    times = []
    if cfg["what"] == "forward":
        m.eval()
        import contextlib
        amp = torch.autocast("cpu", dtype=torch.bfloat16) if cfg.get("bf16") \
            else contextlib.nullcontext()
        with torch.no_grad(), amp:
            f = m
            if cfg["variant"] == "jit":
                f = torch.jit.freeze(torch.jit.script(m))
                f = torch.jit.optimize_for_inference(f) if hasattr(torch.jit, "optimize_for_inference") else f
            for i in range(cfg["warmup"] + cfg["repeat"]):
                t0 = time.perf_counter()
                f(x)
                if i >= cfg["warmup"]:
                    times.append(time.perf_counter() - t0)
    else:
        m.train()
        opt = torch.optim.Adam(m.parameters(), lr=1e-6)
        y = (torch.rand(b, 14) > 0.7).float()
        lossf = torch.nn.BCEWithLogitsLoss()
        for i in range(cfg["warmup"] + cfg["repeat"]):
            t0 = time.perf_counter()
            opt.zero_grad()
            loss = lossf(m(x), y)
            loss.backward()
            opt.step()
            if i >= cfg["warmup"]:
                times.append(time.perf_counter() - t0)
    times.sort()
    n = len(times)
    med = times[n // 2] if n % 2 else 0.5 * (times[n // 2 - 1] + times[n // 2])
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"median_s": med, "min_s": times[0], "peak_rss_mb": rss}))


def run_torch(cfg):
    py = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    r = subprocess.run([py, __file__, "--worker", json.dumps(cfg)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return {"error": r.stderr.strip().splitlines()[-1] if r.stderr else "failed"}
    return json.loads(r.stdout.strip().splitlines()[-1])


def run_chexnet(exe, what, batch, threads, repeat, warmup):
    cmd = [exe, "bench", "--batch", str(batch), "--repeat", str(repeat), "--warmup",
           str(warmup), "--threads", str(threads), "--json"]
    if what == "train":
        cmd.append("--train")
    if what == "bf16":
        cmd += ["--precision", "bf16"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return {"error": r.stderr.strip()}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--chexnet", default=os.path.join(HERE, "..", "build", "chexnet"))
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--quick", action="store_true", help="3 repeats, 1 warm-up")
    ap.add_argument("--worker")
    a = ap.parse_args()
    if a.worker:
        torch_worker(json.loads(a.worker))
        return
    rep, wu = (3, 1) if a.quick else (a.repeat, 2)
    rows = []
    for what, batch in (("forward", 1), ("forward", 16), ("train", 16), ("bf16", 1),
                        ("bf16", 16)):
        r_rep = max(3, rep // 3) if what == "train" else rep
        ours = run_chexnet(a.chexnet, what, batch, a.threads, r_rep, wu)
        variants = {"forward": ["eager", "channels_last", "jit"],
                    "bf16": ["bf16 eager", "bf16 channels_last"],
                    "train": ["eager", "channels_last", "memory_efficient"]}[what]
        theirs = {}
        for v in variants:
            base = v.replace("bf16 ", "")
            cfg = {"what": "train" if what == "train" else "forward", "batch": batch,
                   "threads": a.threads, "repeat": r_rep, "warmup": wu,
                   "variant": "eager" if base == "memory_efficient" else base,
                   "memory_efficient": base == "memory_efficient", "bf16": what == "bf16"}
            theirs[v] = run_torch(cfg)
        rows.append((what, batch, ours, theirs))

    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        pass
    def kernel(what):
        return next((r[2].get("kernel") for r in rows if r[0] == what and "kernel" in r[2]), "?")
    print("machine: %s, %d CPUs; chexnet fp32 GEMM: %s, bf16 kernel: %s"
          % (cpu, os.cpu_count(), kernel("forward"), kernel("bf16")))
    print("chexnet vs PyTorch, %d threads, median of repeats (lower time is better)" % a.threads)
    print("%-23s %-24s %10s %9s %9s %9s" % ("figure", "system", "time", "img/s", "GFLOP/s",
                                              "peak RSS"))
    for what, batch, ours, theirs in rows:
        fl = FWD_GFLOP * batch * (3 if what == "train" else 1)
        name = "%s batch %d" % ({"forward": "inference", "bf16": "bf16 inference",
                                  "train": "training step"}[what], batch)

        def line(system, r):
            if "error" in r:
                print("%-23s %-24s %s" % (name, system, r["error"][:60]))
                return
            print("%-23s %-24s %8.1f ms %9.2f %9.1f %7.0f MB" % (
                name, system, r["median_s"] * 1e3, batch / r["median_s"], fl / r["median_s"],
                r["peak_rss_mb"]))
        line("chexnet", ours)
        best = None
        for v, r in theirs.items():
            line("torch " + v, r)
            if "error" not in r and v != "memory_efficient" and (best is None or r["median_s"] < best[1]):
                best = (v, r["median_s"])
        if best and "error" not in ours:
            print("%-23s %-24s ratio chexnet/PyTorch best (%s): %.2fx time (%s)" % (
                name, "", best[0], ours["median_s"] / best[1],
                "faster" if ours["median_s"] < best[1] else "slower"))
        if what == "bf16" and "error" not in ours:
            fp32 = [r for r in rows if r[0] == "forward" and r[1] == batch]
            if fp32:
                t32 = [v["median_s"] for v in fp32[0][3].values() if "error" not in v]
                if t32:
                    print("%-23s %-24s ratio to PyTorch's best fp32: %.2fx time" % (
                        name, "", ours["median_s"] / min(t32)))
        if what == "train":
            me = theirs.get("memory_efficient", {})
            if "error" not in me and "error" not in ours:
                print("%-23s %-24s peak RSS chexnet %.0f MB vs PyTorch memory_efficient %.0f MB"
                      % (name, "", ours["peak_rss_mb"], me["peak_rss_mb"]))

    # the targets of issue #6 (fp32 unless named)
    got = {(w, b): r[2] for r in rows for (w, b) in [(r[0], r[1])]}

    def med(w, b):
        r = got.get((w, b), {})
        return r.get("median_s") if "error" not in r else None
    checks = [("inference batch 1 <= 30 ms", med("forward", 1), lambda t: t * 1e3, 30, "ms", 1),
              ("inference batch 16 >= 28 img/s", med("forward", 16), lambda t: 16 / t, 28,
               "img/s", -1),
              ("training step batch 16 <= 1.5 s", med("train", 16), lambda t: t, 1.5, "s", 1),
              ("bf16 inference batch 1 <= 15 ms", med("bf16", 1), lambda t: t * 1e3, 15, "ms", 1)]
    print("targets:")
    for label, t, f, bar, unit, sign in checks:
        if t is None:
            print("  %-34s not measured" % label)
            continue
        v = f(t)
        ok = v <= bar if sign > 0 else v >= bar
        print("  %-34s %8.2f %-5s %s" % (label, v, unit, "met" if ok else "NOT met"))
    tr = got.get(("train", 16), {})
    if "peak_rss_mb" in tr:
        print("  %-34s %8.0f %-5s %s" % ("training peak RSS <= 1 GB", tr["peak_rss_mb"], "MB",
                                         "met" if tr["peak_rss_mb"] <= 1024 else "NOT met"))


if __name__ == "__main__":
    main()
