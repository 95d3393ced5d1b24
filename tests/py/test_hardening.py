"""Robustness of chexnet against bad, huge or interrupted input:
  - temporary files of writers killed with SIGKILL are removed by the next
    successful write of the same file, and only those (a live writer's,
    another file's, names of other forms are kept); also with real kills of
    `chexnet train` while it writes checkpoints;
  - a predictions CSV whose columns name one class twice is an error that
    names both columns (it was a use-after-free);
  - a model whose metadata has a non-finite mean or a non-finite or
    non-positive std is refused at load, naming the model file;
  - the limits on pixels, rows and decompressed bytes fail early, naming the
    limit and the option that raises it, and raising it lets the input in;
  - `train --max-steps` stops at an epoch's end too, with status 0, and the
    resumed run ends with the weights of a straight run.
"""
import gzip
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib

sys.path.insert(0, os.path.dirname(__file__))
import cxtest  # noqa: E402

TMP = os.path.join(cxtest.TMP, "hardening")
passes, failures = [], []


def check(name, ok, detail=""):
    print(("PASS " if ok else "FAIL ") + name + (": " + detail if detail else ""), flush=True)
    (passes if ok else failures).append(name)


def run(*args, **kw):
    return subprocess.run([cxtest.CHEXNET] + [str(a) for a in args], capture_output=True,
                          text=True, **kw)


def last_line(s):
    s = s.strip().splitlines()
    return s[-1] if s else ""


def temps(d, base):
    return sorted(f for f in os.listdir(d) if f.startswith("." + base + ".tmp-"))


def dead_pid():
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


# ------------------------------------------------------------ atomic writes

def atomic_cleanup():
    tool = cxtest.tool("atomic_tool")
    d = os.path.join(TMP, "atomic")
    os.makedirs(d)
    target = os.path.join(d, "file.bin")

    def holder():
        p = subprocess.Popen([tool, target, "3000000", "hold"], stdout=subprocess.PIPE,
                             text=True)
        assert p.stdout.readline().strip() == "written"
        return p

    killed = []
    for _ in range(2):
        p = holder()
        p.kill()  # SIGKILL while the temporary file is open and not committed
        p.wait()
        killed.append(p.pid)
    left = temps(d, "file.bin")
    check("two writers killed with SIGKILL leave their temporary files",
          len(left) == 2 and all(any("-%d-" % pid in f for f in left) for pid in killed),
          " ".join(left))
    live = holder()
    live_tmp = [f for f in temps(d, "file.bin") if "-%d-" % live.pid in f]
    dp = dead_pid()
    keep = [".file.bin.tmp-abc",                        # not the pattern
            ".file.bin.tmp-%d-7" % os.getpid(),         # a live process, no lock
            ".other.bin.tmp-%d-0" % dp,                 # another file's
            "file.bin.tmp-%d-0" % dp]                   # no leading dot
    for k in keep:
        with open(os.path.join(d, k), "w") as f:
            f.write("x")
    r = subprocess.run([tool, target, "10"], capture_output=True, text=True)
    after = set(os.listdir(d))
    gone = not any(any("-%d-" % pid in f for f in after) for pid in killed)
    check("the next successful write removes the dead writers' temporary files", r.returncode == 0
          and gone and os.path.getsize(target) == 10, " ".join(sorted(after)))
    check("... and keeps a live writer's, another file's and other names",
          len(live_tmp) == 1 and live_tmp[0] in after and all(k in after for k in keep))
    live.kill()
    live.wait()
    r = subprocess.run([tool, target, "20"], capture_output=True, text=True)
    check("once that writer is killed, the next write removes its file too",
          r.returncode == 0 and live_tmp[0] not in os.listdir(d))
    r = subprocess.run([tool, os.path.join(d, "other.bin"), "5"], capture_output=True, text=True)
    check("a write of the other file removes the other file's stale one",
          r.returncode == 0 and ".other.bin.tmp-%d-0" % dp not in os.listdir(d)
          and ".file.bin.tmp-abc" in os.listdir(d))


# ----------------------------------------------------- predictions, models

def pred_two_columns():
    d = os.path.join(TMP, "pred")
    os.makedirs(d)
    p, lab = os.path.join(d, "p.csv"), os.path.join(d, "l.csv")
    with open(p, "w") as f:
        f.write("image,Effusion,effusion\na.png,0.1,0.2\n")
    with open(lab, "w") as f:
        f.write("image,Effusion\na.png,1\n")
    r = run("evaluate", "--pred", p, "--labels", lab)
    check("predictions naming a class twice: an error naming both columns", r.returncode == 1 and
          "columns 'Effusion' and 'effusion' name the same class" in r.stderr and p in r.stderr,
          last_line(r.stderr))


def set_metadata(path, out, **kv):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    header.setdefault("__metadata__", {}).update(kv)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(out, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data[8 + n:])


def model_normalisation():
    d = os.path.join(TMP, "model")
    os.makedirs(d)
    base = os.path.join(d, "init.safetensors")
    r = run("init", "--classes", "1", "--seed", "1", "-o", base)
    assert r.returncode == 0, r.stderr
    samples = os.path.join(os.environ.get("CX_SOURCE", os.path.join(os.path.dirname(__file__),
                                                                     "..", "..")), "samples")
    img = sorted(os.path.join(samples, f) for f in os.listdir(samples)
                 if f.endswith((".png", ".jpeg", ".jpg")))[0]
    cases = [("mean", "nan,0.456,0.406"), ("mean", "0.485,inf,0.406"),
             ("std", "0.229,-inf,0.225"), ("std", "0.229,0.224,0"),
             ("std", "-0.229,0.224,0.225"), ("std", "nan,0.224,0.225"),
             ("std", "1e-45,0.224,0.225"), ("mean", "1e39,0.456,0.406")]
    for i, (key, val) in enumerate(cases):
        m = os.path.join(d, "bad%d.safetensors" % i)
        set_metadata(base, m, **{key: val})
        ri = run("info", m)
        rp = run("predict", "--model", m, "--format", "csv", img)
        check("model with %s '%s' refused at load, naming the file" % (key, val),
              ri.returncode == 1 and rp.returncode == 1 and m in ri.stderr and m in rp.stderr
              and ("'%s'" % key in ri.stderr or "mean'/'std" in ri.stderr)
              and img not in rp.stderr, last_line(rp.stderr))
    good = os.path.join(d, "good.safetensors")
    set_metadata(base, good, mean="0.5,0.5,0.5", std="0.25,0.25,0.25")
    r = run("predict", "--model", good, "--format", "csv", img)
    check("finite mean and positive std load and predict", r.returncode == 0, last_line(r.stderr))
    return base, img


# ------------------------------------------------------------------ limits

def png_header_only(w, h):
    def chunk(t, data):
        return struct.pack(">I", len(data)) + t + data + struct.pack(">I", zlib.crc32(t + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 6, 0, 0, 0))
            + chunk(b"IEND", b""))


def limits(model):
    d = os.path.join(TMP, "limits")
    os.makedirs(d)
    big = os.path.join(d, "big.png")
    with open(big, "wb") as f:
        f.write(png_header_only(10000, 9000))
    t0 = time.time()
    r = run("predict", "--model", model, "--format", "csv", big)
    dt = time.time() - t0
    check("an image beyond the pixel limit fails early, naming the limit and --max-pixels",
          r.returncode == 1 and "90000000 pixels" in r.stderr and "--max-pixels" in r.stderr
          and "67108864" in r.stderr, "%.2f s: %s" % (dt, last_line(r.stderr)))
    r = run("predict", "--model", model, "--format", "csv", "--max-pixels=90000000", big)
    check("--max-pixels raises it (the header passes; the missing data is the error)",
          r.returncode == 1 and "--max-pixels" not in r.stderr and "invalid PNG" in r.stderr,
          last_line(r.stderr))
    r = run("predict", "--model", model, "--max-pixels", "0", big)
    check("--max-pixels 0 is a usage error", r.returncode == 2, last_line(r.stderr))

    pred, lab = os.path.join(d, "p.csv"), os.path.join(d, "l.csv")
    with open(pred, "w") as f:
        f.write("image,Pneumonia\n" + "".join("i%d.png,%.2f\n" % (i, i / 40) for i in range(40)))
    with open(lab, "w") as f:
        f.write("image,Pneumonia\n" + "".join("i%d.png,%d\n" % (i, i % 2) for i in range(40)))
    r = run("evaluate", "--pred", pred, "--labels", lab, "--bootstrap", "0", "--max-rows", "39")
    check("a table beyond the row limit fails, naming the limit and --max-rows",
          r.returncode == 1 and "more than 39 lines" in r.stderr and "--max-rows" in r.stderr,
          last_line(r.stderr))
    r = run("evaluate", "--pred", pred, "--labels", lab, "--bootstrap", "0", "--max-rows=40")
    check("--max-rows raises it", r.returncode == 0, last_line(r.stderr))

    bomb = os.path.join(d, "bomb.csv.gz")
    with gzip.open(bomb, "wb", compresslevel=9) as g:
        g.write(b"image,Pneumonia\n")
        g.write(b"i0.png,1\n" * 3000000)  # 27 MB of text from a file of ~30 KB
    t0 = time.time()
    r = run("evaluate", "--pred", pred, "--labels", bomb, "--bootstrap", "0", "--max-bytes",
            "1000000")
    dt = time.time() - t0
    check("a gzip file beyond the byte limit fails early, naming the limit and --max-bytes",
          r.returncode == 1 and "more than 1000000 bytes" in r.stderr and "--max-bytes" in
          r.stderr and dt < 5, "%.2f s, gz %d bytes: %s" % (dt, os.path.getsize(bomb),
                                                             last_line(r.stderr)))
    r = run("evaluate", "--pred", pred, "--labels", bomb, "--bootstrap", "0", "--max-rows", "100")
    check("... and beyond the row limit, while it is decompressed", r.returncode == 1 and
          "--max-rows" in r.stderr, last_line(r.stderr))

    lst = os.path.join(d, "list.txt")
    with open(lst, "w") as f:
        f.write("\n".join("x%d.png" % i for i in range(20)) + "\n")
    r = run("predict", "--model", model, "--max-rows", "5", "@" + lst)
    check("an @LIST beyond the row limit is refused", r.returncode == 1 and "--max-rows" in
          r.stderr, last_line(r.stderr))


# ------------------------------------------------------------- training

def training():
    try:
        import test_train_cli as ttc
    except SystemExit:  # no torch: test_train_cli skipped itself
        print("SKIP training checks: PyTorch not available")
        return
    manifest = os.path.join(TMP, "tiny.csv")
    images = ttc.small_manifest(manifest, n_each=5)  # 10 images: 8 train, 2 val
    weights = os.path.join(TMP, "tiny.safetensors")
    ttc.small_weights(weights)
    base = ["--batch", "8", "--epochs", "5"]

    # --max-steps at an epoch boundary: one step per epoch
    a = os.path.join(TMP, "straight")
    r = ttc.train(a, base + ["--checkpoint-every", "0"], manifest, images, weights)
    ok = r.returncode == 0
    steps = [json.loads(x)["steps"] for x in open(os.path.join(a, "log.jsonl"))] if ok else []
    check("straight run: one step per epoch", ok and steps == [1, 2, 3, 4, 5],
          "steps %s %s" % (steps, last_line(r.stderr)))
    b = os.path.join(TMP, "boundary")
    r = ttc.train(b, base + ["--max-steps", "2", "--checkpoint-every", "0"], manifest, images,
                  weights)
    lines = [json.loads(x) for x in open(os.path.join(b, "log.jsonl"))] \
        if os.path.exists(os.path.join(b, "log.jsonl")) else []
    check("--max-steps 2 with one step per epoch stops after 2 epochs, status 0",
          r.returncode == 0 and [x["epoch"] for x in lines] == [1, 2] and lines[-1]["steps"] == 2
          and "--max-steps 2 reached" in r.stderr and "end of epoch 2" in r.stderr,
          "status %d, epochs %s: %s" % (r.returncode, [x["epoch"] for x in lines],
                                        last_line(r.stderr)))
    r = ttc.train(b, base + ["--resume", "--checkpoint-every", "0"], manifest, images, weights)
    ckpt = os.path.join(b, "last.safetensors")
    check("--resume says where it resumes", r.returncode == 0 and
          ("resuming from %s: epoch 3/5 from its start, step 2" % ckpt) in r.stderr,
          " ".join([x for x in r.stderr.splitlines() if "resum" in x][:1]))
    same, why = ttc.same_tensors(os.path.join(a, "last.safetensors"), ckpt)
    check("stopped at the boundary + resumed == straight", same and
          ttc.log_lines(a) == ttc.log_lines(b), why)

    # real kills while checkpoints are written: leftovers are cleaned
    c = os.path.join(TMP, "kills")
    seen, rounds = set(), 0
    extra = ["--batch", "4", "--epochs", "40", "--checkpoint-every", "1"]
    for rounds in range(1, 31):
        cmd = [cxtest.CHEXNET, "train", "--labels", manifest, "--images", images, "--task",
               "pneumonia", "--patient-column", "patient_key", "--fractions", "0.8,0.2,0",
               "--weights", weights, "--seed", "3", "--threads", "2", "--out", c] + extra
        if os.path.exists(os.path.join(c, "last.safetensors")):
            cmd.append("--resume")
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0 = time.time()
        hit = False
        while p.poll() is None and time.time() - t0 < 60:
            # kill while a checkpoint is being written, once one exists
            # (so that the rounds resume, mid-run)
            if os.path.exists(os.path.join(c, "last.safetensors")) and \
                    [f for f in os.listdir(c) if ".tmp-" in f and "-%d-" % p.pid in f]:
                p.kill()
                hit = True
                break
            time.sleep(0.0005)
        p.wait()
        if hit:
            now = [f for f in os.listdir(c) if ".tmp-%d-" % p.pid in f]
            seen.update(now)
        if len(seen) >= 3 or p.returncode == 0:
            break
    left = [f for f in os.listdir(c) if ".tmp-" in f]
    cmd = [cxtest.CHEXNET, "train", "--labels", manifest, "--images", images, "--task",
           "pneumonia", "--patient-column", "patient_key", "--fractions", "0.8,0.2,0",
           "--weights", weights, "--seed", "3", "--threads", "2", "--out", c] + extra
    if os.path.exists(os.path.join(c, "last.safetensors")):
        cmd.append("--resume")
    r = subprocess.run(cmd, capture_output=True, text=True)
    after = [f for f in os.listdir(c) if ".tmp-" in f]
    check("kill -9 during checkpoint writes (%d rounds) left temporary files" % rounds,
          len(seen) >= 1, "%d seen: %s" % (len(seen), " ".join(sorted(seen))))
    check("the resumed run removes them all", r.returncode == 0 and not after,
          "before %s, after %s %s" % (left, after, last_line(r.stderr)))
    s = os.path.join(TMP, "kills-straight")
    cmd[cmd.index(c)] = s
    if "--resume" in cmd:
        cmd.remove("--resume")
    r = subprocess.run(cmd, capture_output=True, text=True)
    same, why = ttc.same_tensors(os.path.join(s, "last.safetensors"),
                                 os.path.join(c, "last.safetensors"))
    check("killed and resumed %d times == straight" % rounds, r.returncode == 0 and same, why)


def main():
    if os.path.exists(TMP):
        shutil.rmtree(TMP)
    os.makedirs(TMP)
    atomic_cleanup()
    pred_two_columns()
    model, _ = model_normalisation()
    limits(model)
    training()
    print("%d passed, %d failed" % (len(passes), len(failures)))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
