"""The shipped pneumonia model (models/chexnet-pneumonia.safetensors):
  - its metadata is complete (architecture, classes, input size,
    normalisation, training data, licence, date, validation and test
    figures, the calibration: temperature, threshold, CAM range);
  - `chexnet predict` without --model finds it (source tree) and predicts
    the committed samples (samples/), with CAM overlays;
  - it loads in torchvision (strict) and gives the same probabilities
    (sigmoid(logit / T) with the file's temperature), and predict's
    positive flag is p >= the file's threshold;
  - on the test split committed beside it (models/split/test.txt) its fp32
    AUROC is the model card's, and bf16 inference changes the AUROC by at
    most 1e-3 and no probability by more than 1e-2;
  - the README's first command (scripts/demo.sh) works from this checkout
    (own build and output folders).
"""
import csv as csv_module
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
import cxtest  # noqa: E402

SRC = os.environ.get("CX_SOURCE") or os.path.join(os.path.dirname(__file__), "..", "..")
MODEL = os.path.join(SRC, "models", "chexnet-pneumonia.safetensors")
SAMPLES = os.path.join(SRC, "samples")
passes, failures = [], []


def check(name, ok, detail=""):
    print(("PASS " if ok else "FAIL ") + name + (": " + detail if detail else ""), flush=True)
    (passes if ok else failures).append(name)


def bf16_auroc_change(kdir, card_auroc):
    """The model card's test split (models/split/test.txt), predicted in fp32
    and in bf16; both evaluated with chexnet evaluate."""
    tmp = os.path.join(cxtest.TMP, "shipped-bf16")
    os.makedirs(tmp, exist_ok=True)
    manifest = os.path.join(kdir, "manifest.csv")
    with open(os.path.join(SRC, "models", "split", "test.txt")) as f:
        val = [os.path.join(kdir, line.split()[0]) for line in f if line.strip()]
    lst = os.path.join(tmp, "val-images.txt")
    with open(lst, "w") as f:
        f.write("\n".join(val) + "\n")
    auroc, probs, warned = {}, {}, False
    for prec in ("fp32", "bf16"):
        csv = os.path.join(tmp, prec + ".csv")
        with open(csv, "w") as out:
            r = subprocess.run([cxtest.CHEXNET, "predict", "--model", MODEL, "--precision", prec,
                                "--format", "csv", "@" + lst], stdout=out,
                               stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            check("predict --precision " + prec, False, r.stderr.strip()[-300:])
            return
        warned = warned or "running fp32" in r.stderr
        js = os.path.join(tmp, prec + ".json")
        r = subprocess.run([cxtest.CHEXNET, "evaluate", "--pred", csv, "--labels", manifest,
                            "--json", js], capture_output=True, text=True)
        if r.returncode != 0:
            check("evaluate " + prec, False, r.stderr.strip()[-300:])
            return
        with open(js) as f:
            auroc[prec] = json.load(f)["auroc"]["Pneumonia"]["value"]
        with open(csv) as f:  # the probability column (a :positive column follows it)
            probs[prec] = [float(row["Pneumonia"]) for row in csv_module.DictReader(f)]
    check("fp32 test AUROC is the model card's %.4f (%d images)" % (card_auroc, len(val)),
          abs(auroc["fp32"] - card_auroc) <= 5e-5, "AUROC %.6f" % auroc["fp32"])
    dp = max(abs(a - b) for a, b in zip(probs["fp32"], probs["bf16"]))
    d = auroc["bf16"] - auroc["fp32"]
    if warned:  # no bf16 instructions here (bf16 numerics: test_bf16_torch, portable kernel)
        check("--precision bf16 on a CPU without bf16 instructions warns and runs fp32",
              dp == 0 and len(probs["bf16"]) == len(val), "max |dp| %.2e" % dp)
        return
    check("bf16 on the test split: AUROC change and probabilities",
          abs(d) <= 1e-3 and dp <= 1e-2 and len(probs["bf16"]) == len(val),
          "AUROC fp32 %.6f, bf16 %.6f (change %+.2e, bar 1e-3); max |dp| %.2e (bar 1e-2)"
          % (auroc["fp32"], auroc["bf16"], d, dp))


def main():
    if not os.path.exists(MODEL):
        cxtest.skip("no shipped model at %s" % MODEL)
    torch = cxtest.need_torch()
    import torchvision
    from PIL import Image
    from torchvision import transforms

    sd, meta = cxtest.load_safetensors(MODEL)
    need = ["arch", "classes", "input_size", "mean", "std", "training_data", "training_date",
            "licence", "val_auroc", "test_auroc", "thresholds", "temperature",
            "threshold_method", "cam_range"]
    missing = [k for k in need if not meta.get(k)]
    check("metadata complete", not missing and json.loads(meta["classes"]) == ["Pneumonia"],
          "missing %s" % missing if missing else ", ".join("%s=%s" % (k, meta[k][:40])
                                                            for k in need))

    images = sorted(os.path.join(SAMPLES, f) for f in os.listdir(SAMPLES)
                    if f.lower().endswith((".png", ".jpeg", ".jpg")))
    cam = os.path.join(cxtest.TMP, "shipped-cam")
    env = dict(os.environ)
    env.pop("CHEXNET_MODEL", None)
    r = subprocess.run([cxtest.CHEXNET, "predict", "--format", "json", "--cam", cam] + images,
                       capture_output=True, text=True, env=env)
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    check("predict without --model finds the shipped model and reads every sample",
          r.returncode == 0 and len(rows) == len(images), r.stderr.strip()[-200:])
    pngs = os.listdir(cam) if os.path.isdir(cam) else []
    check("one CAM overlay per sample", len(pngs) == len(images), ", ".join(sorted(pngs)[:3]))

    # the same model in torchvision
    m = torchvision.models.densenet121(num_classes=1)
    m.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()},
                      strict=True)
    m.eval()
    mean = [float(v) for v in meta["mean"].split(",")]
    std = [float(v) for v in meta["std"].split(",")]
    size = int(meta["input_size"])
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
    x = torch.stack([tf(Image.open(p).convert("RGB").resize((size, size), Image.BILINEAR))
                     for p in images])
    temperature = json.loads(meta["temperature"])[0]
    threshold = json.loads(meta["thresholds"])[0]
    with torch.no_grad():
        ref = torch.sigmoid(m(x) / temperature).squeeze(1)
    ours = torch.tensor([row["probabilities"]["Pneumonia"] for row in rows])
    diff = float((ours - ref).abs().max()) if len(rows) == len(images) else float("inf")
    check("probabilities equal torchvision's for the same file", diff <= 2e-3,
          "max |dp| %.2e" % diff)
    check("the positive flag is p >= the file's threshold %.6g" % threshold,
          len(rows) == len(images) and
          all(row.get("positive", {}).get("Pneumonia") ==
              (row["probabilities"]["Pneumonia"] >= threshold) for row in rows),
          str([row.get("positive") for row in rows]))
    by_name = {os.path.basename(row["image"]): row["probabilities"]["Pneumonia"] for row in rows}
    print("    " + "\n    ".join("%-45s %.4f" % kv for kv in sorted(by_name.items())))

    # bf16 inference on the real validation split: AUROC change
    kdir = os.path.join(cxtest.DATA, "kermany-224")
    if os.path.isdir(kdir):
        bf16_auroc_change(kdir, float(meta["test_auroc"].split()[0]))
    else:
        print("SKIP bf16 AUROC check: no %s" % kdir)

    # the README's first command
    demo = os.path.join(SRC, "scripts", "demo.sh")
    env["BUILD_DIR"] = os.path.join(cxtest.TMP, "demo-build")
    env["OUT_DIR"] = os.path.join(cxtest.TMP, "demo-out")
    r = subprocess.run(["bash", demo], capture_output=True, text=True, env=env, cwd=SRC)
    ncam = len(os.listdir(os.path.join(env["OUT_DIR"], "cam"))) if r.returncode == 0 else 0
    check("scripts/demo.sh runs predict on the samples with heatmaps",
          r.returncode == 0 and "Pneumonia" in r.stdout and ncam == len(images),
          (r.stdout.strip().splitlines() or [""])[0] + " ... " + r.stderr.strip()[-200:])
    print("%d passed, %d failed" % (len(passes), len(failures)))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
