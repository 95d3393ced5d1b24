#!/usr/bin/env python3
"""chexnet predict --cam with the legend and the colour scales, on the sample
X-rays (samples/: a 1024-px NIH PNG and a 224-px JPEG) and the shipped model:

  - the default on a model without "cam_range": the image's own min-max, one
    warning for the run; the overlay is the X-ray with a band below it;
    --no-cam-legend gives the X-ray's size, and the same pixels as the
    band's X-ray region;
  - --cam-scale model without a cam_range: exit 1, saying what is missing;
  - with a cam_range (written with chexnet export --meta): model scale by
    default, no warning; a range above the whole map makes the map cold
    everywhere: out - (1 - a) x is one colour, a = alpha / 4 (colour 0's
    weight), whatever the range; a range below it makes it colour 1;
  - a malformed cam_range: exit 1 naming the file and the key; usage errors.
"""
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
import cxtest  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

TMP = os.path.join(cxtest.TMP, "cam_scale")
SRC = os.environ.get("CX_SOURCE") or os.path.join(os.path.dirname(__file__), "..", "..")
failures = []


def check(name, ok, detail=""):
    print(("PASS " if ok else "FAIL ") + name + (": " + detail if detail else ""), flush=True)
    if not ok:
        failures.append(name)


def run(*args):
    return subprocess.run([cxtest.CHEXNET] + list(args), capture_output=True, text=True)


def overlay(d, img):
    stem = os.path.splitext(os.path.basename(img))[0]
    return np.array(Image.open(os.path.join(d, stem + ".Pneumonia.png"))).astype(np.int64)


def predict_cam(model, d, imgs, *extra):
    shutil.rmtree(d, ignore_errors=True)
    return run("predict", "--model", model, "--format", "csv", "--cam", d, *extra, *imgs)


def main():
    model = os.path.join(SRC, "models", "chexnet-pneumonia.safetensors")
    if not os.path.exists(model):
        cxtest.skip("the shipped model is absent")
    os.makedirs(TMP, exist_ok=True)
    # the shipped weights without a cam_range (added below with export --meta)
    model = cxtest.strip_metadata(model, os.path.join(TMP, "uncalibrated.safetensors"))
    imgs = [os.path.join(SRC, "samples", f) for f in
            ("nih-00000820_000.png", "normal-IM-0361-0001.jpeg")]
    xr = {i: np.array(Image.open(i).convert("RGB")).astype(np.int64) for i in imgs}

    # -- no cam_range: image scale, one warning
    d = os.path.join(TMP, "default")
    r = predict_cam(model, d, imgs)
    warn = [ln for ln in r.stderr.splitlines() if "cam_range" in ln]
    check("no cam_range: exit 0 and one warning for the run", r.returncode == 0 and
          len(warn) == 1 and "min-max" in warn[0], r.stderr.strip())
    for i in imgs:
        o, x = overlay(d, i), xr[i]
        H, W = x.shape[:2]
        check("%s: the X-ray with a band below (%s -> %s)" % (os.path.basename(i), x.shape,
                                                                o.shape),
              o.shape[1] == W and o.shape[0] > H + 40)
    d2 = os.path.join(TMP, "nolegend")
    r = predict_cam(model, d2, imgs, "--no-cam-legend", "--cam-scale", "image")
    check("--no-cam-legend --cam-scale image: no warning", r.returncode == 0 and
          "cam_range" not in r.stderr, r.stderr.strip())
    for i in imgs:
        a, b = overlay(d, i), overlay(d2, i)
        check("%s: --no-cam-legend is the X-ray's size and the band's X-ray region"
              % os.path.basename(i),
              b.shape == xr[i].shape and np.array_equal(a[:b.shape[0]], b))
    r = predict_cam(model, os.path.join(TMP, "m"), imgs, "--cam-scale", "model")
    check("--cam-scale model without cam_range: exit 1, says what is missing",
          r.returncode == 1 and "cam_range" in r.stderr and "--cam-scale image" in r.stderr and
          not os.path.exists(os.path.join(TMP, "m", "nih-00000820_000.Pneumonia.png")),
          r.stderr.strip())
    r = predict_cam(model, os.path.join(TMP, "m"), imgs, "--cam-scale", "fixed")
    check("--cam-scale fixed: usage error", r.returncode == 2, r.stderr.strip())
    r = run("predict", "--model", model, "--cam-scale", "image", imgs[0])
    check("--cam-scale without --cam: usage error", r.returncode == 2, r.stderr.strip())

    # -- with cam_range
    def with_range(name, value):
        p = os.path.join(TMP, name + ".safetensors")
        e = run("export", model, "-o", p, "--meta", "cam_range=" + value)
        if e.returncode:
            raise SystemExit(e.stderr)
        return p

    cold1, cold2 = with_range("cold1", "[[1e6, 2e6]]"), with_range("cold2", "[[5e7, 9e7]]")
    hot = with_range("hot", "[[-2e6, -1e6]]")
    outs = {}
    for name, m in (("cold1", cold1), ("cold2", cold2), ("hot", hot)):
        d = os.path.join(TMP, name)
        r = predict_cam(m, d, imgs)
        check("%s: model scale by default, no warning" % name,
              r.returncode == 0 and "warning" not in r.stderr, r.stderr.strip())
        outs[name] = {i: overlay(d, i) for i in imgs}
    for i in imgs:
        x = xr[i]
        H = x.shape[0]
        base = os.path.basename(i)
        for name, wt in (("cold1", 0.125), ("hot", 0.5)):
            o = outs[name][i][:H]
            # o = round((1 - a) x + a c) with one colour c: o - (1 - a) x spans
            # at most one rounding (1/2) plus float error, in every channel
            c = (o - (1 - wt) * x) / wt
            spread = (c.max(axis=(0, 1)) - c.min(axis=(0, 1))) * wt
            check("%s, %s: one colour over the whole X-ray (spread %s)"
                  % (base, name, np.round(spread, 2).tolist()), bool(np.all(spread <= 1.01)))
        check("%s: two ranges above the map give the same cold X-ray region" % base,
              np.array_equal(outs["cold1"][i][:H], outs["cold2"][i][:H]))
        img_scale = overlay(os.path.join(TMP, "default"), i)[:H]
        check("%s: the cold map differs from the image-scale one" % base,
              not np.array_equal(outs["cold1"][i][:H], img_scale))
        cold_c = ((outs["cold1"][i][:H] - 0.875 * x) / 0.125).reshape(-1, 3).mean(axis=0)
        hot_c = ((outs["hot"][i][:H] - 0.5 * x) / 0.5).reshape(-1, 3).mean(axis=0)
        check("%s: cold is dark, hot is light (%s vs %s)" % (base, np.round(cold_c).tolist(),
                                                              np.round(hot_c).tolist()),
              cold_c.sum() < 150 and hot_c.sum() > 600)

    for bad in ("[[2, 1]]", "[[0, 1], [0, 1]]", "[0, 1]", "[[0, 1]"):
        m = with_range("bad", bad)
        r = predict_cam(m, os.path.join(TMP, "bad"), imgs[:1])
        check("cam_range %s: exit 1 naming the file and the key" % bad,
              r.returncode == 1 and "bad.safetensors" in r.stderr and "cam_range" in r.stderr,
              r.stderr.strip())
    r = run("predict", "--model", with_range("bad2", "[[2, 1]]"), "--format", "csv", imgs[0])
    check("without --cam a malformed cam_range does not matter", r.returncode == 0,
          r.stderr.strip())

    if failures:
        print("%d failure(s): %s" % (len(failures), ", ".join(failures)))
        sys.exit(1)
    print("all CAM scale checks passed")


if __name__ == "__main__":
    main()
