"""The viewer of `chexnet serve` (GET /) in a real browser: Debian's chromium,
headless, driven by playwright-core (tests/browser/viewer.mjs; installed by
scripts/test.sh with npm ci, no browser download).

Real X-rays (PNG, JPEG, a MONOCHROME1 DICOM, a lateral DICOM) are chosen
with the page's file input, as a person would. Checked:
  - the probability shown for each class is `chexnet predict`'s, formatted
    as the page formats it (percent, one decimal), and its exact value;
  - the bar is red at or above the threshold, the threshold is marked;
  - the overlay rendered: at opacity 0 the canvas is exactly the X-ray; at
    0.5 it is `predict --cam`'s overlay (up to the browser's 8-bit alpha
    compositing); at 1 it differs from both;
  - a lateral view shows its warning; a file that is not an image shows the
    server's error; the page makes no request to anything but the server.
"""
import base64
import decimal
import io
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
import cxtest  # noqa: E402
from servetest import Server  # noqa: E402

import numpy as np  # noqa: E402

SRC = os.environ.get("CX_SOURCE") or os.path.join(os.path.dirname(__file__), "..", "..")
BROWSER_DIR = os.path.join(SRC, "tests", "browser")
TMP = os.path.join(cxtest.TMP, "viewer")
passes, failures = [], []


def check(name, ok, detail=""):
    print(("PASS " if ok else "FAIL ") + name + (": " + detail if detail else ""), flush=True)
    (passes if ok else failures).append(name)


def js_percent(p):
    """(100 * p).toFixed(1) + "%", with JavaScript's rounding (ties up)."""
    x = decimal.Decimal(100.0 * p)
    return str(x.quantize(decimal.Decimal("0.1"), rounding=decimal.ROUND_HALF_UP)) + "%"


def pixels(data_url_or_bytes):
    from PIL import Image
    if isinstance(data_url_or_bytes, str):
        data_url_or_bytes = base64.b64decode(data_url_or_bytes.split(",", 1)[1])
    return np.array(Image.open(io.BytesIO(data_url_or_bytes)).convert("RGB")).astype(int)


def main():
    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    if not shutil.which("node"):
        cxtest.skip("node not installed (scripts/deps.sh --test installs nodejs)")
    if not os.path.exists(chromium):
        cxtest.skip("%s not installed (scripts/deps.sh --test installs chromium)" % chromium)
    if not os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", "playwright-core")):
        cxtest.skip("playwright-core not installed: npm ci --prefix tests/browser "
                    "(scripts/test.sh does it)")
    model = os.path.join(SRC, "models", "chexnet-pneumonia.safetensors")
    if not os.path.exists(model):
        cxtest.skip("the shipped model is absent")
    shutil.rmtree(TMP, ignore_errors=True)
    os.makedirs(TMP)
    # the shipped weights without their calibration (no thresholds, no cam_range)
    model = cxtest.strip_metadata(model, os.path.join(TMP, "uncalibrated.safetensors"))
    from PIL import Image
    nih = cxtest.nih_images()
    files = [[p for p in nih if p.endswith("00000820_000.png")][0]]
    kd = os.path.join(cxtest.DATA, "kermany-224", "train", "PNEUMONIA")
    if os.path.isdir(kd):
        files.append(os.path.join(kd, sorted(os.listdir(kd))[3]))
    sources = {f: f for f in files}
    lateral = None
    try:
        import dicomgen
        dicomgen.need_tools()
        cases = dicomgen.make_cases(os.path.join(TMP, "dicom"))
        by = {os.path.basename(c["path"]): c["path"] for c in cases}
        files.append(by["mono1_jpeg_lossless.dcm"])
        sources[by["mono1_jpeg_lossless.dcm"]] = dicomgen.grey_png()
        lateral = by["warn_lateral.dcm"]
        files.append(lateral)
        sources[lateral] = dicomgen.grey_png()
    except SystemExit:
        print("SKIP the DICOM files: pydicom or DCMTK missing")
    garbage = os.path.join(TMP, "notes.txt")
    with open(garbage, "w") as f:
        f.write("not an X-ray\n")

    r = subprocess.run([cxtest.CHEXNET, "predict", "--model", model, "--format", "json"] + files,
                       capture_output=True, text=True)
    want = {json.loads(line)["image"]: json.loads(line) for line in r.stdout.splitlines()}
    camdir = os.path.join(TMP, "cam")
    subprocess.run([cxtest.CHEXNET, "predict", "--model", model, "--cam", camdir,
                    "--no-cam-legend"] + files, capture_output=True)

    out = os.path.join(TMP, "viewer.json")
    with Server("--model", model) as s:
        r = subprocess.run(["node", os.path.join(BROWSER_DIR, "viewer.mjs"), s.url + "/", out]
                           + files + [garbage], capture_output=True, text=True, timeout=600,
                           cwd=BROWSER_DIR, env=dict(os.environ, CHROMIUM=chromium))
    check("chromium drove the viewer", r.returncode == 0 and os.path.exists(out),
          (r.stdout + r.stderr).strip()[-800:])
    if r.returncode != 0:
        sys.exit(1)
    res = json.load(open(out))
    print("chromium %s" % res.get("version"))
    check("the page says research use only, not a medical device",
          "not a medical device" in res.get("notice", ""), res.get("notice", ""))
    check("no script errors", not res.get("pageErrors"), str(res.get("pageErrors")))
    others = [u for u in res["requests"] if not u.startswith(s.url) and not u.startswith("data:")]
    check("the page loads nothing but from the server (offline)", not others, str(others[:5]))
    for f, got in zip(files + [garbage], res["files"]):
        name = os.path.basename(f)
        if f == garbage:
            check("a text file: the server's error is shown", got["error"] and "415" in
                  got["status"] and "not an image" in got["status"], got["status"])
            continue
        w = want[f]
        rows = {row["cls"]: row for row in got["rows"]}
        ok = not got["error"] and set(rows) == set(w["probabilities"])
        detail = []
        for cls, p in w["probabilities"].items():
            row = rows.get(cls, {})
            ok = ok and row.get("text") == js_percent(p) and float(row.get("p", "nan")) == p \
                and row.get("above") == (p >= 0.5) \
                and row.get("positive") == ("1" if p >= 0.5 else "0")
            detail.append("%s: shown %s (%s), predict %.9g" % (cls, row.get("text"), row.get("p"), p))
        check("%s: the shown probability is chexnet predict's" % name, ok, "; ".join(detail))
        if f == lateral:
            check("%s: the lateral view's warning is shown" % name,
                  any("lateral" in x for x in got["warnings"]), str(got["warnings"]))
        check("%s: the overlay rendered" % name, got.get("rendered") is True and
              got.get("camClass") == "Pneumonia", str(got.get("rendered")))
        sc = got.get("scale") or {}
        check("%s: the colour scale: the image's min-max (no cam_range), its range shown"
              % name, sc.get("value") == "image" and
              sc.get("options") == [["model", True], ["image", False]] and
              "min-max" in sc.get("caption", "") and
              sc.get("lo", "").split(" ")[0].lstrip("-").replace(".", "").isdigit(), str(sc))
        if not got.get("canvas"):
            continue
        c0, c5, c1 = (pixels(got["canvas"][a]) for a in ("0", "0.5", "1"))
        xray = np.array(Image.open(sources[f]).convert("RGB")).astype(int)
        exact = c0.shape == xray.shape and np.array_equal(c0, xray)
        check("%s: at opacity 0 the canvas is the X-ray, pixel for pixel" % name, exact,
              "shape %s vs %s" % (c0.shape, xray.shape))
        stem = os.path.splitext(name)[0]
        ref = pixels(open(os.path.join(camdir, stem + ".Pneumonia.png"), "rb").read())
        if c5.shape == ref.shape:
            d = np.abs(c5 - ref)
            check("%s: at opacity 0.5 the canvas is predict --cam's overlay" % name,
                  d.max() <= 2 and d.mean() < 0.5,
                  "max %d, mean %.3f levels" % (d.max(), d.mean()))
        else:
            check("%s: canvas and overlay sizes" % name, False, "%s vs %s" % (c5.shape, ref.shape))
        check("%s: the opacity slider changes the picture" % name,
              np.abs(c1 - c5).mean() > 1 and np.abs(c5 - c0).mean() > 1,
              "mean |1 - 0.5| %.2f, |0.5 - 0| %.2f" % (np.abs(c1 - c5).mean(),
                                                      np.abs(c5 - c0).mean()))
    print("%d passed, %d failed" % (len(passes), len(failures)))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
