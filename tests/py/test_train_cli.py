"""chexnet train end to end on real paediatric X-rays (a small subset, a
small DenseNet so the test is quick):
  - a straight run vs a run stopped mid-epoch (--max-steps, status 0), then
    resumed (saying where): identical weights, Adam state and log;
  - --opt=value; without a terminal a loss line every --log-every steps on
    stderr; --log-steps adds a line per step to log.jsonl;
  - Ctrl-C (SIGINT) and kill -9 during a run, then --resume: identical
    final weights (checkpoints are atomic);
  - the best model loads in torchvision (strict) and in chexnet predict;
  - a NaN loss stops with a clear error and writes no checkpoint;
  - missing image files are reported before training starts;
  - weights with another head size get a fresh head.
"""
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import cxtest  # noqa: E402

torch = cxtest.need_torch()
from torchvision.models.densenet import DenseNet  # noqa: E402

TMP = os.path.join(cxtest.TMP, "train_cli")
passes, failures = [], []


def check(name, ok, detail=""):
    print(("PASS " if ok else "FAIL ") + name + (": " + detail if detail else ""), flush=True)
    (passes if ok else failures).append(name)


def small_manifest(path, n_each=20, missing=0):
    src = cxtest.shared("kermany-224", "manifest.csv")
    with open(src, newline="") as f:
        rows = list(csv.DictReader(f))
    normal = [r for r in rows if r["pneumonia"] == "0"][:n_each]
    pneu = [r for r in rows if r["pneumonia"] == "1"][:n_each]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        for r in normal + pneu:
            w.writerow(r)
        for i in range(missing):
            r = dict(normal[0])
            r["path"] = "train/NORMAL/missing-%d.jpeg" % i
            r["patient_key"] = "MISSING-%d" % i
            w.writerow(r)
    return os.path.dirname(src)


def small_weights(path, classes=1, nan=False):
    torch.manual_seed(0)
    m = DenseNet(growth_rate=8, block_config=(2, 2, 2, 2), num_init_features=16, bn_size=2,
                 num_classes=classes)
    sd = m.state_dict()
    if nan:
        sd["classifier.bias"][:] = float("nan")
    meta = {"classes": json.dumps(["Pneumonia"] if classes == 1 else
                                  ["c%d" % i for i in range(classes)])}
    cxtest.save_safetensors(path, sd, meta)


def train(out, extra, manifest, images, weights, check_rc=True, **kw):
    cmd = [cxtest.CHEXNET, "train", "--labels", manifest, "--images", images, "--task",
           "pneumonia", "--patient-column", "patient_key", "--fractions", "0.8,0.2,0",
           "--weights", weights, "--batch", "4", "--epochs", "2", "--seed", "3", "--threads",
           "2", "--out", out] + extra
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def tensors(path):
    return cxtest.load_safetensors(path)[0]


def same_tensors(a, b):
    ta, tb = tensors(a), tensors(b)
    if set(ta) != set(tb):
        return False, "different tensor names"
    for k in ta:
        if not torch.equal(ta[k], tb[k]):
            return False, "tensor %s differs (max %.3g)" % (k, float((ta[k] - tb[k]).abs().max()))
    return True, "%d tensors bit-identical" % len(ta)


def log_lines(out):
    keep = ("epoch", "train_loss", "val_loss", "val_auroc", "lr", "next_lr", "best", "steps")
    with open(os.path.join(out, "log.jsonl")) as f:
        recs = [json.loads(line) for line in f]
    return [{k: v for k, v in x.items() if k in keep} for x in recs if list(x)[0] == "epoch"]


def main():
    if os.path.exists(TMP):
        shutil.rmtree(TMP)
    os.makedirs(TMP)
    manifest = os.path.join(TMP, "small.csv")
    images = small_manifest(manifest)
    weights = os.path.join(TMP, "small.safetensors")
    small_weights(weights)

    # 1. straight run
    a = os.path.join(TMP, "straight")
    r = train(a, ["--checkpoint-every", "0"], manifest, images, weights)
    check("straight run", r.returncode == 0, r.stderr.strip().splitlines()[-1] if r.stderr else "")
    if r.returncode != 0:
        print(r.stderr)
        sys.exit(1)
    lines = log_lines(a)
    check("log has one line per epoch", len(lines) == 2, json.dumps(lines[-1]))

    # 2. stop mid-epoch with --max-steps, then resume
    b = os.path.join(TMP, "stopped")
    r = train(b, ["--max-steps", "5", "--checkpoint-every", "0"], manifest, images, weights)
    check("--max-steps stops with status 0 and a checkpoint", r.returncode == 0 and
          os.path.exists(os.path.join(b, "last.safetensors")) and "--max-steps 5 reached" in
          r.stderr, r.stderr.strip().splitlines()[-1])
    r = train(b, ["--resume", "--checkpoint-every", "0"], manifest, images, weights)
    check("resume finishes", r.returncode == 0, r.stderr.strip().splitlines()[-1])
    where = re.search(r"resuming from (\S+): epoch 1/2 at batch 6/(\d+), step 5\n", r.stderr)
    check("--resume says where: epoch, batch, step, file", where is not None and
          where.group(1) == os.path.join(b, "last.safetensors"),
          " ".join(x for x in r.stderr.splitlines() if "resum" in x))
    ok, why = same_tensors(os.path.join(a, "last.safetensors"), os.path.join(b, "last.safetensors"))
    check("interrupted + resumed == straight (weights, Adam moments, BN stats)", ok, why)
    ok, why = same_tensors(os.path.join(a, "best.safetensors"), os.path.join(b, "best.safetensors"))
    check("same best model", ok, why)
    check("same log", log_lines(a) == log_lines(b))

    # 2b. --opt=value, progress lines without a terminal, per-step log lines
    e = os.path.join(TMP, "equals")
    cmd = [cxtest.CHEXNET, "train", "--labels=" + manifest, "--images=" + images,
           "--task=pneumonia", "--patient-column=patient_key", "--fractions=0.8,0.2,0",
           "--weights=" + weights, "--batch=4", "--epochs=2", "--seed=3", "--threads=2",
           "--out=" + e, "--checkpoint-every=0", "--log-every=3", "--log-steps"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    ok, why = same_tensors(os.path.join(a, "last.safetensors"), os.path.join(e, "last.safetensors"))
    check("train --opt=value as --opt value (and --log-steps changes nothing)",
          r.returncode == 0 and ok, why)
    n_steps = log_lines(a)[-1]["steps"]
    prog = re.findall(r"^epoch \d+/2 batch \d+/\d+ step (\d+): loss [0-9.]+ \(epoch mean "
                      r"[0-9.]+\), lr [0-9.e-]+, [0-9.]+ img/s, epoch ETA \d+:\d\d$",
                      r.stderr, re.M)
    check("without a terminal: a loss line every --log-every steps on stderr",
          [int(x) for x in prog] == list(range(3, n_steps + 1, 3)), "%s of %d steps" % (prog,
                                                                                     n_steps))
    plain = train(os.path.join(TMP, "plain"), ["--checkpoint-every", "0"], manifest, images,
                  weights)
    check("default --log-every 50: no line in a run of %d steps" % n_steps,
          plain.returncode == 0 and " step " not in plain.stderr)
    with open(os.path.join(e, "log.jsonl")) as f:
        recs = [json.loads(x) for x in f]
    steps = [x for x in recs if list(x)[0] == "step"]
    check("--log-steps: one log line per step with its loss, epoch lines unchanged",
          [x["step"] for x in steps] == list(range(1, n_steps + 1)) and
          all(isinstance(x["loss"], float) for x in steps) and
          log_lines(e) == log_lines(a), "%d step lines" % len(steps))

    # 3. Ctrl-C and kill -9, then resume
    for sig, name in ((signal.SIGINT, "Ctrl-C"), (signal.SIGKILL, "kill -9")):
        c = os.path.join(TMP, "sig%d" % sig)
        cmd = [cxtest.CHEXNET, "train", "--labels", manifest, "--images", images, "--task",
               "pneumonia", "--patient-column", "patient_key", "--fractions", "0.8,0.2,0",
               "--weights", weights, "--batch", "4", "--epochs", "2", "--seed", "3",
               "--threads", "2", "--out", c, "--checkpoint-every", "1"]
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        ck = os.path.join(c, "last.safetensors")
        t0 = time.time()
        while not os.path.exists(ck) and time.time() - t0 < 120 and p.poll() is None:
            time.sleep(0.005)
        p.send_signal(sig)
        err = p.communicate()[1]
        rc = p.returncode
        exp = 130 if sig == signal.SIGINT else -signal.SIGKILL
        r = train(c, ["--resume", "--checkpoint-every", "1"], manifest, images, weights)
        ok, why = same_tensors(os.path.join(a, "last.safetensors"), ck)
        check("%s (status %s), resume: identical final weights" % (name, rc),
              rc == exp and r.returncode == 0 and ok,
              why + (" | " + r.stderr.strip().splitlines()[-1] if r.returncode else ""))

    # 4. the best model loads in torchvision and in chexnet predict
    best = os.path.join(a, "best.safetensors")
    sd, meta = cxtest.load_safetensors(best)
    m = DenseNet(growth_rate=8, block_config=(2, 2, 2, 2), num_init_features=16, bn_size=2,
                 num_classes=1)
    m.load_state_dict(sd, strict=True)
    check("best model loads in torchvision (strict)", True,
          "metadata classes=%s training_data=%s" % (meta.get("classes"),
                                                     os.path.basename(meta.get("training_data", ""))))
    img = os.path.join(images, "train", "PNEUMONIA",
                       sorted(os.listdir(os.path.join(images, "train", "PNEUMONIA")))[0])
    r = subprocess.run([cxtest.CHEXNET, "predict", "--model", best, "--format", "json", img],
                       capture_output=True, text=True)
    check("best model predicts", r.returncode == 0 and "Pneumonia" in r.stdout, r.stdout.strip())
    r = subprocess.run([cxtest.CHEXNET, "predict", "--model", os.path.join(a, "last.safetensors"),
                        "--format", "json", img], capture_output=True, text=True)
    check("last checkpoint also loads as a model", r.returncode == 0, r.stderr.strip())

    # 5. NaN loss
    nanw = os.path.join(TMP, "nan.safetensors")
    small_weights(nanw, nan=True)
    d = os.path.join(TMP, "nan")
    r = train(d, [], manifest, images, nanw)
    check("NaN loss: clear error, no checkpoint", r.returncode == 1 and "loss is NaN" in r.stderr
          and not os.path.exists(os.path.join(d, "last.safetensors")),
          r.stderr.strip().splitlines()[-1])

    # 6. missing images
    mm = os.path.join(TMP, "missing.csv")
    small_manifest(mm, missing=3)
    r = train(os.path.join(TMP, "missing"), [], mm, images, weights)
    msg = r.stderr.strip().splitlines()[-1] if r.stderr else ""
    check("missing images reported before training", r.returncode == 1 and "missing-0" in msg
          and "missing-1" in msg and not os.path.exists(os.path.join(TMP, "missing", "log.jsonl")),
          msg)

    # 7. head of another size
    w14 = os.path.join(TMP, "w14.safetensors")
    small_weights(w14, classes=14)
    r = train(os.path.join(TMP, "head"), ["--epochs", "1"], manifest, images, w14)
    check("14-output weights get a fresh 1-output head", r.returncode == 0 and
          "replacing the head" in r.stderr,
          " ".join(l for l in r.stderr.splitlines() if "replacing" in l) or r.stderr[-300:])

    print("%d passed, %d failed" % (len(passes), len(failures)))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
