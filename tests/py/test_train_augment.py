"""chexnet train: the augmentation options and where a run stands, end to end
on real paediatric X-rays (a small subset and a small DenseNet, as
test_train_cli.py):
  - bad values of every augmentation and stopping option are refused
    (status 2) with a message naming the option and what it wants;
  - a run with every augmentation records it in the model ("augmentation"
    JSON, "training_command"); stopped mid-epoch (--max-steps) and resumed it
    ends with the same weights, Adam state and log as a straight run (the
    draws are functions of (seed, epoch, image));
  - --resume with other augmentation options is refused, naming both;
  - every epoch line of log.jsonl has lr_divisions, best_epoch, best_loss,
    epochs_since_best, stop_after_decays, stop_patience,
    stop_condition_met, stopping, consistent with the line's own losses and
    learning rates, and the stderr line says the same;
  - --stop-after-decays 2 ends the run (status 0) at the end of the epoch
    where the learning rate is divided the second time; --resume with it
    ends at once, without it the run goes on;
  - without the options the model says {"flip": true, "crop_scale": null,
    ...};
  - crops from a pack at the input size come with a note (they are
    enlarged).
"""
import csv
import json
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
import cxtest  # noqa: E402

torch = cxtest.need_torch()
from torchvision.models.densenet import DenseNet  # noqa: E402

TMP = os.path.join(cxtest.TMP, "train_augment")
passes, failures = [], []
AUG = ["--crop-scale", "0.7,1", "--crop-ratio", "0.9,1.1", "--rotate", "8", "--brightness",
       "0.2", "--contrast", "0.2", "--gamma", "0.15"]
AUG_JSON = {"flip": True, "crop_scale": [0.7, 1], "crop_ratio": [0.9, 1.1], "rotate": 8,
            "brightness": 0.2, "contrast": 0.2, "gamma": 0.15}


def check(name, ok, detail=""):
    print(("PASS " if ok else "FAIL ") + name + (": " + detail if detail else ""), flush=True)
    (passes if ok else failures).append(name)


def small_manifest(path, n_each=16):
    src = cxtest.shared("kermany-224", "manifest.csv")
    with open(src, newline="") as f:
        rows = list(csv.DictReader(f))
    keep = [r for r in rows if r["pneumonia"] == "0"][:n_each] + \
        [r for r in rows if r["pneumonia"] == "1"][:n_each]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        for r in keep:
            w.writerow(r)
    return os.path.dirname(src)


def small_weights(path):
    torch.manual_seed(0)
    m = DenseNet(growth_rate=8, block_config=(2, 2, 2, 2), num_init_features=16, bn_size=2,
                 num_classes=1)
    cxtest.save_safetensors(path, m.state_dict(), {"classes": json.dumps(["Pneumonia"])})


def train(out, extra, base):
    cmd = [cxtest.CHEXNET, "train", *base, "--out", out] + extra
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1200)


def last_line(r):
    lines = r.stderr.strip().splitlines()
    return lines[-1] if lines else ""


def epoch_lines(out):
    with open(os.path.join(out, "log.jsonl")) as f:
        return [x for x in (json.loads(line) for line in f) if list(x)[0] == "epoch"]


def same_tensors(a, b):
    ta, tb = cxtest.load_safetensors(a)[0], cxtest.load_safetensors(b)[0]
    if set(ta) != set(tb):
        return False, "different tensor names"
    for k in ta:
        if not torch.equal(ta[k], tb[k]):
            return False, "tensor %s differs" % k
    return True, "%d tensors bit-identical" % len(ta)


def standing_consistent(lines, decays, patience):
    """The where-it-stands fields recomputed from the lines' own values."""
    best, best_ep, divisions = float("inf"), 0, 0
    for x in lines:
        loss = x["val_loss"] if x["val_loss"] is not None else x["train_loss"]
        if loss < best:
            best, best_ep = loss, x["epoch"]
        divisions += x["next_lr"] < x["lr"]
        since = x["epoch"] - best_ep
        met = (decays > 0 and divisions >= decays) or (patience > 0 and since >= patience)
        want = {"lr_divisions": divisions, "best_epoch": best_ep, "epochs_since_best": since,
                "stop_after_decays": decays, "stop_patience": patience,
                "stop_condition_met": met}
        got = {k: x.get(k) for k in want}
        if got != want or abs(x["best_loss"] - best) > 1e-9 * max(1, abs(best)):
            return False, "epoch %d: %s, want %s (best loss %s, want %s)" % (
                x["epoch"], got, want, x["best_loss"], best)
    return True, "%d epoch lines" % len(lines)


def main():
    if os.path.exists(TMP):
        shutil.rmtree(TMP)
    os.makedirs(TMP)
    manifest = os.path.join(TMP, "small.csv")
    images = small_manifest(manifest)
    weights = os.path.join(TMP, "small.safetensors")
    small_weights(weights)
    base = ["--labels", manifest, "--images", images, "--task", "pneumonia", "--patient-column",
            "patient_key", "--fractions", "0.75,0.25,0", "--weights", weights, "--batch", "4",
            "--epochs", "2", "--seed", "3", "--threads", "2", "--checkpoint-every", "0"]

    # 1. bad values: status 2, the option and what it wants
    bad = [(["--crop-scale", "0,1"], "--crop-scale", "0 < LO <= HI <= 1"),
           (["--crop-scale", "0.9,0.5"], "--crop-scale", "0 < LO <= HI <= 1"),
           (["--crop-scale", "0.5,1.2"], "--crop-scale", "0 < LO <= HI <= 1"),
           (["--crop-scale", "0.5"], "--crop-scale", "LO,HI"),
           (["--crop-scale", "a,b"], "--crop-scale", "LO,HI"),
           (["--crop-scale", "0.8,1", "--crop-ratio", "0,1"], "--crop-ratio", "0 < LO <= HI"),
           (["--crop-scale", "0.8,1", "--crop-ratio", "1.2,1"], "--crop-ratio", "0 < LO <= HI"),
           (["--crop-ratio", "0.9,1.1"], "--crop-ratio needs --crop-scale", ""),
           (["--rotate", "-2"], "--rotate", "degrees in 0..180"),
           (["--rotate", "400"], "--rotate", "degrees in 0..180"),
           (["--rotate", "nan"], "--rotate", "degrees in 0..180"),
           (["--brightness", "-0.1"], "--brightness", ">= 0"),
           (["--contrast", "inf"], "--contrast", ">= 0"),
           (["--gamma", "1"], "--gamma", "< 1"),
           (["--gamma", "x"], "--gamma", "< 1"),
           (["--stop-after-decays", "-1"], "--stop-after-decays", ""),
           (["--stop-patience", "two"], "--stop-patience", "")]
    for args, opt, want in bad:
        r = train(os.path.join(TMP, "bad"), args, base)
        check("refused: %s" % " ".join(args), r.returncode == 2 and opt in r.stderr and
              want in r.stderr and not os.path.exists(os.path.join(TMP, "bad")),
              r.stderr.strip().splitlines()[0] if r.stderr else "(no message)")

    # 2. a run with every augmentation, straight and interrupted + resumed
    a = os.path.join(TMP, "aug_straight")
    r = train(a, AUG, base)
    check("a run with every augmentation", r.returncode == 0, last_line(r))
    if r.returncode != 0:
        print(r.stderr)
        sys.exit(1)
    check("it says which augmentation it uses",
          "augmentation: " + json.dumps(AUG_JSON) in r.stderr,
          [x for x in r.stderr.splitlines() if x.startswith("augmentation")][0])
    for f in ("best.safetensors", "last.safetensors"):
        meta = cxtest.load_safetensors(os.path.join(a, f))[1]
        check("%s: metadata augmentation == %s" % (f, json.dumps(AUG_JSON)),
              json.loads(meta.get("augmentation", "null")) == AUG_JSON, meta.get("augmentation"))
    meta = cxtest.load_safetensors(os.path.join(a, "best.safetensors"))[1]
    tc = meta.get("training_command", "")
    check("metadata training_command is the command line",
          tc.startswith("chexnet train --labels ") and "--rotate 8" in tc and
          "--crop-scale 0.7,1" in tc, tc)
    b = os.path.join(TMP, "aug_resumed")
    r = train(b, AUG + ["--max-steps", "5"], base)
    check("augmented run stopped by --max-steps", r.returncode == 0, last_line(r))
    r = train(b, AUG + ["--resume"], base)
    check("resumed with the same options", r.returncode == 0, last_line(r))
    ok, why = same_tensors(os.path.join(a, "last.safetensors"), os.path.join(b, "last.safetensors"))
    check("augmented: interrupted + resumed == straight (weights, Adam, BN statistics)", ok, why)
    keep = ("epoch", "train_loss", "val_loss", "lr", "next_lr", "best", "steps", "lr_divisions",
            "best_epoch", "best_loss", "epochs_since_best", "stop_condition_met")
    la = [{k: x[k] for k in keep} for x in epoch_lines(a)]
    lb = [{k: x[k] for k in keep} for x in epoch_lines(b)]
    check("the same log lines", la == lb)

    # 3. a resume with other augmentation is refused, naming both
    c = os.path.join(TMP, "aug_other")
    r = train(c, AUG + ["--max-steps", "3"], base)
    other = ["--rotate", "5"]
    r = train(c, other + ["--resume"], base)
    check("--resume with other augmentation options: refused",
          r.returncode == 1 and "this run was started with augmentation" in r.stderr and
          '"rotate": 8' in r.stderr and '"rotate": 5' in r.stderr, last_line(r))
    r = train(c, ["--resume", "--no-augment"] + AUG, base)
    check("... and without the flip", r.returncode == 1 and '"flip": false' in r.stderr,
          last_line(r))

    # 4. where the run stands; --stop-after-decays ends it
    ok, why = standing_consistent(epoch_lines(a), 2, 3)
    check("log.jsonl: lr_divisions, best_epoch, best_loss, epochs_since_best, "
          "stop_condition_met on every epoch line, consistent with its losses", ok, why)
    d = os.path.join(TMP, "stop")
    # --threshold 1: no loss counts as an improvement for the schedule, so the
    # learning rate is divided at the end of every epoch
    sched = ["--threshold", "1", "--epochs", "4"]
    r = train(d, sched + ["--stop-after-decays", "2"], base)
    lines = epoch_lines(d)
    check("--stop-after-decays 2: status 0 after the 2nd epoch of 4 (the lr divided twice)",
          r.returncode == 0 and len(lines) == 2 and lines[-1]["lr_divisions"] == 2 and
          lines[-1]["stop_condition_met"] is True and lines[-1]["stopping"] is True and
          lines[0]["stopping"] is False and
          "the stopping condition held at the end of epoch 2" in r.stderr,
          last_line(r))
    ok, why = standing_consistent(lines, 2, 3)
    check("its log lines are consistent", ok, why)
    m = re.findall(r"^epoch (\d+): lr divided (\d+) times?; best epoch (\d+) \((val) loss "
                   r"([0-9.]+)\), (\d+) epochs? since; stopping condition \(lr divided 2 times "
                   r"or 3 epochs without a lower loss\): (not met|met|met, stopping)$",
                   r.stderr, re.M)
    check("the stderr line at each epoch's end says the same",
          [(int(x[0]), int(x[1]), int(x[2]), int(x[5]), x[6]) for x in m] ==
          [(y["epoch"], y["lr_divisions"], y["best_epoch"], y["epochs_since_best"],
            "met, stopping" if y["stopping"] else "met" if y["stop_condition_met"] else
            "not met") for y in lines], str(m))
    r = train(d, sched + ["--stop-after-decays", "2", "--resume"], base)
    check("--resume of a run the condition ended: ends at once, status 0",
          r.returncode == 0 and len(epoch_lines(d)) == 2 and
          "the stopping condition held at the end of epoch 2" in r.stderr, last_line(r))
    r = train(d, sched + ["--resume"], base)
    lines = epoch_lines(d)
    check("--resume without the option: the run goes on (the condition is only reported)",
          r.returncode == 0 and [x["epoch"] for x in lines] == [1, 2, 3, 4] and
          lines[-1]["lr_divisions"] == 4 and lines[-1]["stopping"] is False, last_line(r))
    meta = cxtest.load_safetensors(os.path.join(d, "best.safetensors"))[1]
    want = {"flip": True, "crop_scale": None, "crop_ratio": None, "rotate": 0, "brightness": 0,
            "contrast": 0, "gamma": 0}
    check("without augmentation options: metadata augmentation is the flip alone",
          json.loads(meta.get("augmentation", "null")) == want, meta.get("augmentation"))

    # 5. crops from a pack at the input size: said
    pk = os.path.join(TMP, "small.cxpack")
    r = subprocess.run([cxtest.CHEXNET, "prepare", "--manifest", manifest, "--image-dir", images,
                        "-o", pk],
                       capture_output=True, text=True, timeout=600)
    pbase = [x if x != manifest else pk for x in base]
    e = os.path.join(TMP, "pack")
    r = train(e, ["--crop-scale", "0.8,1", "--max-steps", "1"], pbase)
    check("a crop from a pack at the input size: a note says it is enlarged",
          r.returncode == 0 and "note: the pack holds 224-pixel images: crops from them are "
          "enlarged to the input size 224" in r.stderr, last_line(r))

    print("%d passed, %d failed" % (len(passes), len(failures)))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
