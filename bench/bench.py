#!/usr/bin/python3
"""Side-by-side benchmark: chexnet, PyTorch and ONNX Runtime on this machine,
in one run, with the machine's own GEMM peak as the yardstick.

  bench/bench.py [--chexnet build/chexnet] [--repeat 10] [--rounds 3] [--threads N]
                 [--quick] [--isa avx2|baseline] [--no-torch] [--no-onnx] [--json FILE]
                 [--compare OTHER_CHEXNET]

Each configuration runs in its own process (so peak RSS is per process):
  GEMM peak        oneDNN's sgemm on a 3072^3 square (libdnnl from Debian)
  chexnet          forward batch 1 and 16, training step batch 16 (chexnet bench),
                   bf16 forward batch 1 and 16 where the CPU has bf16 instructions
  PyTorch          forward: eager, channels_last, torch.jit.freeze; batch 1 and 16
                   bf16 forward: torch.autocast("cpu", bfloat16), eager and channels_last
                   training step batch 16: eager, channels_last, memory_efficient=True
  ONNX Runtime     forward batch 1 and 16 (onnxruntime-node from npm, run by Node.js,
                   on torchvision's densenet121 exported with torch.onnx.export)
The configurations run in turn, --rounds times over (a virtual machine's
speed drifts by tens of percent over minutes; taking turns lets every system
see the same drift): each figure is the median over rounds of each round's
median over repeats after warm-up; images/s; GFLOP/s (DenseNet-121 224x224:
5.67 GFLOP forward, 3x per trained image); ratios to PyTorch's best and to
ONNX Runtime; the share of the GEMM peak. Timings are reported, never asserted.
GFLOP/s and the share of the peak count that same nominal work for every
system, whatever it executes: chexnet does fewer multiply-adds (transitions
pool before their 1x1 convolution; 3x3 convolutions on the larger maps run
by Winograd F(2x2,3x3)), so its share of the peak is a rate of useful work,
which can exceed what its GEMM reaches.

--isa caps every system to an instruction set, to measure what a CPU without
AVX-512 would run: chexnet (CHEXNET_ISA), oneDNN and PyTorch's oneDNN
(ONEDNN_MAX_CPU_ISA / DNNL_MAX_CPU_ISA), PyTorch's own kernels
(ATEN_CPU_CAPABILITY). ONNX Runtime has no such cap, and its row is left out.

ONNX Runtime is installed on first use into bench/.cache with
`npm install --ignore-scripts onnxruntime-node@1.30.0` (skipped with a message
where Node.js or npm is absent). The targets printed at the end are the
project's (README, "Performance").

--compare runs a second chexnet binary (another build or version) as one
more system in every row and round, and prints its time over chexnet's: a
before/after comparison under the same drift.
"""
import argparse
import ctypes
import json
import os
import resource
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.path.join(HERE, ".cache")
FWD_GFLOP = 5.67
ORT_VERSION = "1.30.0"
GEMM_N = 3072


def median(ts):
    ts = sorted(ts)
    n = len(ts)
    return ts[n // 2] if n % 2 else 0.5 * (ts[n // 2 - 1] + ts[n // 2])


def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---------------------------------------------------------------- workers

def torch_worker(cfg):
    import torch
    import torchvision
    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    mem_eff = cfg.get("memory_efficient", False)
    m = torchvision.models.densenet121(num_classes=14, memory_efficient=mem_eff)
    b = cfg["batch"]
    x = torch.randn(b, 3, 224, 224)
    if cfg["variant"] == "channels_last":
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
                if hasattr(torch.jit, "optimize_for_inference"):
                    f = torch.jit.optimize_for_inference(f)
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
    print(json.dumps({"median_s": median(times), "min_s": min(times), "peak_rss_mb": rss_mb()}))


def gemm_worker(cfg):
    """oneDNN's sgemm on an n^3 square: the GEMM peak of this machine."""
    import numpy as np
    lib = ctypes.CDLL(cfg["lib"])
    f = lib.dnnl_sgemm
    f.argtypes = [ctypes.c_char, ctypes.c_char] + [ctypes.c_int64] * 3 + [ctypes.c_float] + \
                 [ctypes.c_void_p, ctypes.c_int64] * 2 + [ctypes.c_float, ctypes.c_void_p,
                                                          ctypes.c_int64]
    n = cfg["n"]
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    c = np.zeros((n, n), np.float32)
    times = []
    for i in range(cfg["warmup"] + cfg["repeat"]):
        t0 = time.perf_counter()
        st = f(b"N", b"N", n, n, n, 1.0, a.ctypes.data, n, b.ctypes.data, n, 0.0, c.ctypes.data, n)
        if st != 0:
            raise SystemExit("dnnl_sgemm failed with status %d" % st)
        if i >= cfg["warmup"]:
            times.append(time.perf_counter() - t0)
    print(json.dumps({"median_s": median(times), "min_s": min(times),
                      "gflops": 2.0 * n ** 3 / median(times) * 1e-9}))


ORT_JS = r"""
const ort = require(process.argv[2]);
const [model, batch, threads, warmup, repeat] = process.argv.slice(3).map((v, i) => i ? +v : v);
(async () => {
  const s = await ort.InferenceSession.create(model, {
    intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: 'sequential',
    graphOptimizationLevel: 'all'});
  const n = batch * 3 * 224 * 224, data = new Float32Array(n);
  let seed = 1;
  for (let i = 0; i < n; i++) { seed = (seed * 1103515245 + 12345) >>> 0; data[i] = (seed >>> 8) / 8388608 - 1; }
  const x = new ort.Tensor('float32', data, [batch, 3, 224, 224]);
  const times = [];
  for (let i = 0; i < warmup + repeat; i++) {
    const t0 = process.hrtime.bigint();
    await s.run({input: x});
    const t = Number(process.hrtime.bigint() - t0) / 1e9;
    if (i >= warmup) times.push(t);
  }
  times.sort((a, b) => a - b);
  const m = times.length % 2 ? times[(times.length - 1) / 2]
                             : 0.5 * (times[times.length / 2 - 1] + times[times.length / 2]);
  console.log(JSON.stringify({median_s: m, min_s: times[0],
                              peak_rss_mb: process.resourceUsage().maxRSS / 1024}));
})().catch(e => { console.error(String(e)); process.exit(1); });
"""


# ---------------------------------------------------------------- runners

def worker(kind, cfg, env=None):
    py = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    r = subprocess.run([py, __file__, "--worker", kind, json.dumps(cfg)], capture_output=True,
                       text=True, env=env)
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def run_chexnet(exe, what, batch, threads, repeat, warmup, env):
    cmd = [exe, "bench", "--batch", str(batch), "--repeat", str(repeat), "--warmup",
           str(warmup), "--threads", str(threads), "--json"]
    if what == "train":
        cmd.append("--train")
    if what == "bf16":
        cmd += ["--precision", "bf16"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        return {"error": r.stderr.strip()}
    return json.loads(r.stdout.strip().splitlines()[-1])


def ort_setup():
    """(node, package dir, model path) or an error string."""
    node, npm = shutil.which("node") or shutil.which("nodejs"), shutil.which("npm")
    if not node or not npm:
        return "Node.js or npm not installed (Debian: apt-get install nodejs npm)"
    pkg = os.path.join(CACHE, "ort", "node_modules", "onnxruntime-node")
    if not os.path.exists(os.path.join(pkg, "package.json")):
        os.makedirs(os.path.join(CACHE, "ort"), exist_ok=True)
        r = subprocess.run([npm, "install", "--ignore-scripts", "--no-audit", "--no-fund",
                            "--prefix", os.path.join(CACHE, "ort"),
                            "onnxruntime-node@" + ORT_VERSION], capture_output=True, text=True)
        if r.returncode != 0:
            return "npm install onnxruntime-node failed: " + r.stderr.strip()[-200:]
    model = os.path.join(CACHE, "densenet121-14.onnx")
    if not os.path.exists(model):
        code = ("import torch, torchvision; torch.manual_seed(0);"
                "m = torchvision.models.densenet121(num_classes=14).eval();"
                "torch.onnx.export(m, torch.randn(1, 3, 224, 224), %r, input_names=['input'],"
                " output_names=['logits'], dynamic_axes={'input': {0: 'b'}, 'logits': {0: 'b'}},"
                " opset_version=13)" % (model + ".tmp"))
        r = subprocess.run(["/usr/bin/python3", "-c", code], capture_output=True, text=True)
        if r.returncode != 0:
            return "torch.onnx.export failed: " + (r.stderr.strip().splitlines() or ["?"])[-1]
        os.replace(model + ".tmp", model)
    js = os.path.join(CACHE, "ort-bench.js")
    with open(js, "w") as f:
        f.write(ORT_JS)
    return node, pkg, model, js


def run_ort(setup, batch, threads, repeat, warmup):
    node, pkg, model, js = setup
    r = subprocess.run([node, js, pkg, model, str(batch), str(threads), str(warmup),
                        str(repeat)], capture_output=True, text=True)
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def find_dnnl():
    for name in ("libdnnl.so.3", "libdnnl.so.2", "libdnnl.so"):
        try:
            ctypes.CDLL(name)
            return name
        except OSError:
            pass
    return None


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return "unknown CPU"
    name = next((l.split(":", 1)[1].strip() for l in info.splitlines()
                 if l.startswith(("model name", "Model name", "CPU part"))), "unknown CPU")
    flags = next((l.split(":", 1)[1].split() for l in info.splitlines()
                  if l.startswith(("flags", "Features"))), [])
    isa = [f for f in ("avx512f", "avx512_bf16", "amx_bf16", "avx2", "fma", "asimd", "sve")
           if f in flags]
    return "%s (%s)" % (name, " ".join(isa) or "baseline")


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chexnet", default=os.path.join(HERE, "..", "build", "chexnet"))
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--rounds", type=int, default=3,
                    help="times every configuration runs, in turn with the others")
    ap.add_argument("--quick", action="store_true", help="3 repeats, 1 warm-up, 1 round")
    ap.add_argument("--isa", choices=["avx2", "baseline"],
                    help="cap every system to this instruction set")
    ap.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    ap.add_argument("--no-onnx", action="store_true", help="leave ONNX Runtime out")
    ap.add_argument("--json", help="also write every figure to this JSON file")
    ap.add_argument("--compare", metavar="OTHER_CHEXNET",
                    help="another chexnet binary to run beside --chexnet (before/after)")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        {"torch": torch_worker, "gemm": gemm_worker}[a.worker[0]](json.loads(a.worker[1]))
        return
    rep, wu = (3, 1) if a.quick else (a.repeat, 2)
    if a.quick:
        a.rounds = 1
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    if a.isa:
        cap = {"avx2": "AVX2", "baseline": "SSE41"}[a.isa]
        env.update(CHEXNET_ISA=a.isa, ONEDNN_MAX_CPU_ISA=cap, DNNL_MAX_CPU_ISA=cap,
                   ATEN_CPU_CAPABILITY="avx2" if a.isa == "avx2" else "default")

    # the machine's GEMM peak
    lib = find_dnnl()
    peak = worker("gemm", {"lib": lib, "n": GEMM_N, "repeat": max(rep, 5), "warmup": 2},
                  env) if lib else {"error": "libdnnl not installed (apt-get install libdnnl2)"}

    ort = "left out (--no-onnx)" if a.no_onnx else \
        "left out: --isa caps nothing in ONNX Runtime" if a.isa else ort_setup()
    have_bf16 = run_chexnet(a.chexnet, "bf16", 1, a.threads, 1, 0, env).get("precision") == "bf16"
    plan = [("forward", 1), ("forward", 16), ("train", 16)]
    if have_bf16:
        plan += [("bf16", 1), ("bf16", 16)]
    jobs = []  # (row index, system, thunk)
    for i, (what, batch) in enumerate(plan):
        r_rep = max(3, rep // 3) if what == "train" else rep
        jobs.append((i, "chexnet", lambda w=what, b=batch, n=r_rep:
                     run_chexnet(a.chexnet, w, b, a.threads, n, wu, env)))
        if a.compare:
            jobs.append((i, "chexnet --compare", lambda w=what, b=batch, n=r_rep:
                         run_chexnet(a.compare, w, b, a.threads, n, wu, env)))
        if not a.no_torch:
            variants = {"forward": ["eager", "channels_last", "jit"],
                        "bf16": ["bf16 eager", "bf16 channels_last"],
                        "train": ["eager", "channels_last", "memory_efficient"]}[what]
            for v in variants:
                base = v.replace("bf16 ", "")
                cfg = {"what": "train" if what == "train" else "forward", "batch": batch,
                       "threads": a.threads, "repeat": r_rep, "warmup": wu,
                       "variant": "eager" if base == "memory_efficient" else base,
                       "memory_efficient": base == "memory_efficient", "bf16": what == "bf16"}
                jobs.append((i, "torch " + v, lambda c=cfg: worker("torch", c, env)))
        if what == "forward" and isinstance(ort, tuple):
            jobs.append((i, "onnxruntime", lambda b=batch: run_ort(ort, b, a.threads, rep, wu)))
    got = {}
    for rnd in range(a.rounds):
        for i, system, thunk in jobs:
            got.setdefault((i, system), []).append(thunk())
    rows = []
    for i, (what, batch) in enumerate(plan):
        res = {}
        for (j, system), rs in got.items():
            if j != i:
                continue
            ok = [r for r in rs if "error" not in r]
            if not ok:
                res[system] = rs[-1]
                continue
            res[system] = dict(ok[-1], median_s=median([r["median_s"] for r in ok]),
                               min_s=min(r["min_s"] for r in ok),
                               peak_rss_mb=max(r["peak_rss_mb"] for r in ok),
                               rounds_s=[r["median_s"] for r in ok])
        rows.append({"what": what, "batch": batch, "chexnet": res.pop("chexnet"),
                     "others": res})

    kern = next((r["chexnet"].get("kernel") for r in rows if "kernel" in r["chexnet"]), "?")
    print("machine: %s, %d CPUs; chexnet fp32 GEMM: %s%s" % (
        cpu_name(), os.cpu_count(), kern, "; capped to " + a.isa if a.isa else ""))
    if a.compare:
        print("chexnet: %s; chexnet --compare: %s" % (a.chexnet, a.compare))
    if "error" in peak:
        print("GEMM peak: not measured (%s)" % peak["error"])
    else:
        print("GEMM peak: oneDNN sgemm %d^3, %d threads: %.1f GFLOP/s (median)" % (
            GEMM_N, a.threads, peak["gflops"]))
    if not isinstance(ort, tuple):
        print("ONNX Runtime: %s" % ort)
    if not have_bf16:
        print("bf16: this CPU has no bf16 instructions (chexnet runs fp32 for --precision bf16)")
    print("%d threads; median over %d rounds of the median of repeats (lower time is better)"
          % (a.threads, a.rounds))
    print("%-23s %-27s %10s %9s %9s %7s %9s" % ("figure", "system", "time", "img/s", "GFLOP/s",
                                               "% peak", "peak RSS"))
    for row in rows:
        what, batch = row["what"], row["batch"]
        fl = FWD_GFLOP * batch * (3 if what == "train" else 1)
        name = "%s batch %d" % ({"forward": "inference", "bf16": "bf16 inference",
                                 "train": "training step"}[what], batch)

        def line(system, r):
            if "error" in r:
                print("%-23s %-27s %s" % (name, system, r["error"][:70]))
                return
            g = fl / r["median_s"]
            pk = "%6.0f%%" % (100 * g / peak["gflops"]) if "gflops" in peak else "%7s" % "-"
            print("%-23s %-27s %8.1f ms %9.2f %9.1f %s %7.0f MB" % (
                name, system, r["median_s"] * 1e3, batch / r["median_s"], g, pk,
                r["peak_rss_mb"]))
        line("chexnet", row["chexnet"])
        for v, r in row["others"].items():
            line(v, r)
        ours = row["chexnet"]
        if "error" in ours:
            continue
        tv = {v: r["median_s"] for v, r in row["others"].items()
              if v.startswith("torch") and "error" not in r and "memory_efficient" not in v}
        if tv:
            best = min(tv, key=tv.get)
            row["torch_best"] = best
            row["speedup_vs_torch"] = tv[best] / ours["median_s"]
            print("%-23s %-27s PyTorch best (%s) / chexnet: %.2fx" % (
                name, "", best[6:], row["speedup_vs_torch"]))
        c = row["others"].get("chexnet --compare", {})
        if "median_s" in c:
            row["compare_over_chexnet"] = c["median_s"] / ours["median_s"]
            print("%-23s %-27s --compare / chexnet: %.3f" % (name, "",
                                                            row["compare_over_chexnet"]))
        o = row["others"].get("onnxruntime", {})
        if "median_s" in o:
            row["speedup_vs_onnxruntime"] = o["median_s"] / ours["median_s"]
            print("%-23s %-27s ONNX Runtime / chexnet: %.2fx" % (name, "",
                                                                row["speedup_vs_onnxruntime"]))
        if "gflops" in peak:
            row["share_of_peak"] = fl / ours["median_s"] / peak["gflops"]
        me = row["others"].get("torch memory_efficient", {})
        if what == "train" and "peak_rss_mb" in me:
            print("%-23s %-27s peak RSS chexnet %.0f MB vs PyTorch memory_efficient %.0f MB"
                  % (name, "", ours["peak_rss_mb"], me["peak_rss_mb"]))

    # the targets (README, "Performance"); fp32 rows
    print("targets:")
    by = {(r["what"], r["batch"]): r for r in rows}

    def target(label, ok, value):
        print("  %-52s %-22s %s" % (label, value, "not measured" if ok is None else
                                    "met" if ok else "NOT met"))
    for key, label in ((("forward", 1), "inference batch 1"), (("forward", 16),
                                                                "inference batch 16"),
                       (("train", 16), "training step batch 16")):
        r = by.get(key, {})
        s = r.get("speedup_vs_torch")
        target(label + ": >= 1.25x PyTorch's best", None if s is None else s >= 1.25,
               "%.2fx" % s if s else "-")
        if key[0] == "forward":
            s = r.get("speedup_vs_onnxruntime")
            target(label + ": faster than ONNX Runtime", None if s is None else s > 1.0,
                   "%.2fx" % s if s else "-")
        if key != ("forward", 1):
            p = r.get("share_of_peak")
            target(label + ": >= 80% of the GEMM peak", None if p is None else p >= 0.8,
                   "%.0f%%" % (100 * p) if p else "-")
    tr = by.get(("train", 16), {}).get("chexnet", {})
    if "peak_rss_mb" in tr:
        target("training peak RSS <= 1 GB", tr["peak_rss_mb"] <= 1024,
               "%.0f MB" % tr["peak_rss_mb"])
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": cpu_name(), "threads": a.threads, "isa_cap": a.isa,
                       "gemm_peak": peak, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
