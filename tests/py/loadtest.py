#!/usr/bin/env python3
"""A bounded load test of `chexnet serve` on loopback (a small client of
chexnet's own: threads, keep-alive connections, http.client).

  loadtest.py [--requests N] [--clients C] [--malformed F] [--model FILE | --tiny]
              [--max-batch B] [--max-wait-ms W] [--precision P] [--json OUT]

starts the server (port 0), sends N requests from C concurrent clients, a
fraction F of them malformed, and stops it with SIGTERM. Valid bodies are
real X-rays (PNG 1024x1024 and 512x512, RGBA PNG, JPEG, DICOM in several
transfer syntaxes); malformed ones are truncated files, a wrong type (text),
a PNG header claiming 100000x100000 pixels, DICOM garbage after a valid
preamble and a truncated DICOM. Every answer is checked: a valid body must
get 200 with exactly the probabilities `chexnet predict` prints for that
file, a malformed one its 4xx code. The server's resident memory is sampled
every 0.25 s. Prints (and writes with --json) the figures: requests, wrong
answers, crashes, p50/p99 latency of the valid requests, images/s, RSS after
warm-up and at the end. Also used by tests/py/test_serve_load.py.

--tiny serves a small DenseNet (growth 8, blocks 2-2-2-2, 14 classes, made
with torchvision) instead of DenseNet-121: every path of the server runs as
with the real model (decoding, batching, answers), with a fraction of the
arithmetic, so that many requests fit in little time on a small machine.
"""
import argparse
import http.client
import json
import os
import random
import struct
import subprocess
import sys
import threading
import time
import zlib

sys.path.insert(0, os.path.dirname(__file__))
import cxtest  # noqa: E402
from servetest import Server  # noqa: E402


def tiny_model(path):
    torch = cxtest.need_torch()
    from torchvision.models.densenet import DenseNet
    torch.manual_seed(0)
    m = DenseNet(growth_rate=8, block_config=(2, 2, 2, 2), num_init_features=16, bn_size=2,
                 num_classes=14)
    cxtest.save_safetensors(path, m.state_dict(), {"classes": json.dumps(cxtest.CLASSES14)})
    return path


def huge_png():
    ihdr = struct.pack(">IIBBBBB", 100000, 100000, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + \
        struct.pack(">I", zlib.crc32(chunk) & 0xffffffff)


def corpus(tmp, model, precision="fp32"):
    """(valid: [(name, bytes, probabilities)], malformed: [(name, bytes, code)])"""
    nih = cxtest.nih_images()
    paths = [p for p in nih if os.path.basename(p) in
             ("00000001_000.png", "00000820_000.png", "00000100_000.png", "00010234_000.png")]
    kd = os.path.join(cxtest.DATA, "kermany-224", "train", "NORMAL")
    if os.path.isdir(kd):
        paths += [os.path.join(kd, f) for f in sorted(os.listdir(kd))[:2]]
    dcm = {}
    try:
        import dicomgen
        dicomgen.need_tools()
        cases = dicomgen.make_cases(os.path.join(tmp, "dicom"))
        dcm = {os.path.basename(c["path"]): c["path"] for c in cases}
        paths += [dcm[k] for k in ("w12_jpegls.dcm", "mono1_rle.dcm", "colour_jpeg_img2dcm.dcm",
                                   "w12_big_endian.dcm")]
    except SystemExit:
        pass
    r = subprocess.run([cxtest.CHEXNET, "predict", "--model", model, "--format", "json",
                        "--precision", precision] + paths, capture_output=True, text=True)
    want = {json.loads(line)["image"]: json.loads(line)["probabilities"]
            for line in r.stdout.splitlines()}
    valid = [(os.path.basename(p), open(p, "rb").read(), want[p]) for p in paths]
    png = open(paths[0], "rb").read()
    jpg = next((v for n, v, _ in valid if n.endswith(".jpeg")), png)
    bad = [("truncated PNG", png[:len(png) // 2], 400),
           ("truncated JPEG", jpg[:len(jpg) // 2], 400),
           ("wrong type (text)", b"GET me an X-ray, please\n" * 20, 415),
           ("huge declared dimensions", huge_png(), 413)]
    if dcm:
        d = open(dcm["mono2_8bit_explicit.dcm"], "rb").read()
        rnd = random.Random(1)
        bad += [("garbage DICOM", d[:132] + bytes(rnd.getrandbits(8) for _ in range(4096)), 400),
                ("truncated DICOM", d[:len(d) // 3], 400),
                ("JPEG 2000 DICOM", open(dcm["mono2_j2k.dcm"], "rb").read(), 415)]
    return valid, bad


def rss_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def percentile(v, q):
    v = sorted(v)
    if not v:
        return float("nan")
    k = (len(v) - 1) * q / 100.0
    i = int(k)
    j = min(i + 1, len(v) - 1)
    return v[i] + (v[j] - v[i]) * (k - i)


def run(model, n_requests=10000, clients=16, malformed=0.1, max_batch=16, max_wait_ms=10,
        tmp=None, seed=0, precision="fp32"):
    tmp = tmp or os.path.join(cxtest.TMP, "load")
    os.makedirs(tmp, exist_ok=True)
    valid, bad = corpus(tmp, model, precision)
    rnd = random.Random(seed)
    plan = []
    for i in range(n_requests):
        if rnd.random() < malformed:
            plan.append(("bad", rnd.randrange(len(bad))))
        else:
            plan.append(("ok", rnd.randrange(len(valid))))
    lock = threading.Lock()
    nxt = [0]
    lat_ok, wrong, errors = [], [], []
    counts = {"ok": 0, "bad": 0}
    srv = Server("--model", model, "--max-batch", max_batch, "--max-wait-ms", max_wait_ms,
                 "--precision", precision)
    pid = srv.proc.pid
    rss = []
    stop = threading.Event()

    def sampler():
        while not stop.is_set():
            v = rss_kb(pid)
            if v is not None:
                with lock:
                    rss.append((time.time(), nxt[0], v))
            stop.wait(0.25)

    def client():
        conn = None
        while True:
            with lock:
                i = nxt[0]
                if i >= n_requests:
                    break
                nxt[0] += 1
            kind, k = plan[i]
            body = valid[k][1] if kind == "ok" else bad[k][1]
            t0 = time.perf_counter()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=300)
                conn.request("POST", "/v1/predict", body=body)
                r = conn.getresponse()
                data = r.read()
                st = r.status
                if r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                with lock:
                    errors.append("%s #%d: %s" % (kind, i, e))
                if conn:
                    conn.close()
                conn = None
                continue
            dt = time.perf_counter() - t0
            with lock:
                counts[kind] += 1
                if kind == "ok":
                    res = json.loads(data) if st == 200 else {}
                    if st != 200 or res.get("probabilities") != valid[k][2]:
                        wrong.append("%s: %d %s" % (valid[k][0], st, data[:120]))
                    else:
                        lat_ok.append(dt)
                else:
                    try:
                        msg = json.loads(data).get("error")
                    except ValueError:
                        msg = None
                    if st != bad[k][2] or not msg:
                        wrong.append("%s: %d %s" % (bad[k][0], st, data[:120]))
        if conn:
            conn.close()

    th_s = threading.Thread(target=sampler, daemon=True)
    th_s.start()
    t0 = time.time()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.time() - t0
    stop.set()
    th_s.join()
    alive = srv.proc.poll() is None
    st, _, metrics = srv.request("GET", "/metrics") if alive else (None, None, b"")
    rc, _, err = srv.stop()
    # RSS: after warm-up (a fifth of the requests) and at the end
    warm = [v for t, i, v in rss if i >= n_requests // 5]
    batches = None
    hist = {}
    for line in metrics.decode().splitlines():
        # the server's own view: forward passes and request latencies
        for name in ("chexnet_forward_duration_seconds_bucket",
                     "chexnet_request_duration_seconds_bucket{handler=\"/v1/predict\""):
            if line.startswith(name):
                le = line.split('le="')[1].split('"')[0]
                hist.setdefault(name.split("_bucket")[0].replace("chexnet_", ""), {})[le] = \
                    float(line.split()[-1])
        if line.startswith("chexnet_batch_size_sum"):
            s_ = float(line.split()[1])
        if line.startswith("chexnet_batch_size_count"):
            batches = (s_, float(line.split()[1]))
    res = {
        "requests": n_requests, "clients": clients, "malformed": counts["bad"],
        "valid": counts["ok"], "max_batch": max_batch, "max_wait_ms": max_wait_ms,
        "precision": precision,
        "wrong_answers": len(wrong), "transport_errors": len(errors),
        "server_alive_at_end": alive, "exit_status": rc,
        "p50_ms": 1000 * percentile(lat_ok, 50), "p99_ms": 1000 * percentile(lat_ok, 99),
        "images_per_s": len(lat_ok) / elapsed, "requests_per_s": n_requests / elapsed,
        "seconds": elapsed,
        "mean_batch": batches[0] / batches[1] if batches and batches[1] else None,
        "rss_mb_after_warmup": warm[0] / 1024 if warm else None,
        "rss_mb_max_after_warmup": max(warm) / 1024 if warm else None,
        "rss_mb_end": rss[-1][2] / 1024 if rss else None,
        "server_histograms": hist,
        "client_slowest_s": sorted(lat_ok)[-5:],
        "examples_wrong": wrong[:5], "examples_errors": errors[:5],
        "server_stderr_tail": err.strip().splitlines()[-3:],
    }
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=10000)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--malformed", type=float, default=0.1)
    ap.add_argument("--model", default=os.path.join(os.path.dirname(__file__), "..", "..",
                                                    "models", "chexnet-pneumonia.safetensors"))
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--max-wait-ms", type=int, default=10)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--json")
    a = ap.parse_args()
    model = a.model
    if a.tiny:
        model = tiny_model(os.path.join(cxtest.TMP, "load-tiny.safetensors"))
    res = run(model, a.requests, a.clients, a.malformed, a.max_batch, a.max_wait_ms,
              precision=a.precision)
    print(json.dumps(res, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    ok = res["wrong_answers"] == 0 and res["transport_errors"] == 0 and \
        res["server_alive_at_end"] and res["exit_status"] == 0
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
