#!/usr/bin/python3
"""Side-by-side benchmark: chexnet vs PyTorch on this machine, one run.

  bench/bench.py [--chexnet build/chexnet] [--repeat 10] [--threads N] [--quick]

Each configuration runs in its own process (so peak RSS is per process):
  chexnet forward, batch 1 and 16       (chexnet bench)
  chexnet training step, batch 16       (chexnet bench --train)
  PyTorch forward: eager, channels_last, torch.jit.freeze; batch 1 and 16
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
        with torch.no_grad():
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
    for what, batch in (("forward", 1), ("forward", 16), ("train", 16)):
        r_rep = max(3, rep // 3) if what == "train" else rep
        ours = run_chexnet(a.chexnet, what, batch, a.threads, r_rep, wu)
        variants = ["eager", "channels_last", "jit"] if what == "forward" else \
                   ["eager", "channels_last", "memory_efficient"]
        theirs = {}
        for v in variants:
            cfg = {"what": what, "batch": batch, "threads": a.threads, "repeat": r_rep,
                   "warmup": wu, "variant": "eager" if v == "memory_efficient" else v,
                   "memory_efficient": v == "memory_efficient"}
            theirs[v] = run_torch(cfg)
        rows.append((what, batch, ours, theirs))

    print("chexnet vs PyTorch, %d threads, median of repeats (lower time is better)" % a.threads)
    print("%-22s %-18s %10s %9s %9s %9s" % ("figure", "system", "time", "img/s", "GFLOP/s",
                                              "peak RSS"))
    for what, batch, ours, theirs in rows:
        fl = FWD_GFLOP * batch * (3 if what == "train" else 1)
        name = "%s batch %d" % ("inference" if what == "forward" else "training step", batch)

        def line(system, r):
            if "error" in r:
                print("%-22s %-18s %s" % (name, system, r["error"][:60]))
                return
            print("%-22s %-18s %8.1f ms %9.2f %9.1f %7.0f MB" % (
                name, system, r["median_s"] * 1e3, batch / r["median_s"], fl / r["median_s"],
                r["peak_rss_mb"]))
        line("chexnet", ours)
        best = None
        for v, r in theirs.items():
            line("torch " + v, r)
            if "error" not in r and v != "memory_efficient" and (best is None or r["median_s"] < best[1]):
                best = (v, r["median_s"])
        if best and "error" not in ours:
            print("%-22s %-18s ratio chexnet/PyTorch best (%s): %.2fx time (%s)" % (
                name, "", best[0], ours["median_s"] / best[1],
                "faster" if ours["median_s"] < best[1] else "slower"))
        if what == "train":
            me = theirs.get("memory_efficient", {})
            if "error" not in me and "error" not in ours:
                print("%-22s %-18s peak RSS chexnet %.0f MB vs PyTorch memory_efficient %.0f MB"
                      % (name, "", ours["peak_rss_mb"], me["peak_rss_mb"]))


if __name__ == "__main__":
    main()
