"""The shipped pneumonia model (models/chexnet-pneumonia.safetensors):
  - its metadata is complete (architecture, classes, input size,
    normalisation, training data, licence, date, validation figures);
  - `chexnet predict` without --model finds it (source tree) and predicts
    the committed samples (samples/), with CAM overlays;
  - it loads in torchvision (strict) and gives the same probabilities;
  - the README's first command (scripts/demo.sh) works from this checkout
    (own build and output folders).
"""
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


def main():
    if not os.path.exists(MODEL):
        cxtest.skip("no shipped model at %s" % MODEL)
    torch = cxtest.need_torch()
    import torchvision
    from PIL import Image
    from torchvision import transforms

    sd, meta = cxtest.load_safetensors(MODEL)
    need = ["arch", "classes", "input_size", "mean", "std", "training_data", "training_date",
            "licence", "val_auroc"]
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
    with torch.no_grad():
        ref = torch.sigmoid(m(x)).squeeze(1)
    ours = torch.tensor([row["probabilities"]["Pneumonia"] for row in rows])
    diff = float((ours - ref).abs().max()) if len(rows) == len(images) else float("inf")
    check("probabilities equal torchvision's for the same file", diff <= 2e-3,
          "max |dp| %.2e" % diff)
    by_name = {os.path.basename(row["image"]): row["probabilities"]["Pneumonia"] for row in rows}
    print("    " + "\n    ".join("%-45s %.4f" % kv for kv in sorted(by_name.items())))

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
