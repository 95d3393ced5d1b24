"""DICOM input, on files made at test time from real X-rays (dicomgen.py):

  1. every transfer syntax chexnet reads (implicit/explicit little endian,
     big endian, deflated, bare datasets, JPEG lossless SV1 and process 14,
     JPEG-LS, RLE, JPEG baseline, colour JPEG from img2dcm, RGB in both
     planar configurations), MONOCHROME1 and 2, 12-bit with rescale and a
     window, signed: decoded pixels equal the expected ones exactly, and a
     DICOM made losslessly from a PNG gives exactly that PNG's
     probabilities (chexnet predict, JSON);
  2. lossy files: JPEG baseline pixels equal PIL's decoding of the same
     JPEG stream; JPEG-LS near-lossless within its NEAR bound;
  3. the Modality and VOI steps against pydicom's apply_modality_lut and
     apply_voi_lut (LINEAR, LINEAR_EXACT, SIGMOID windows, a VOI LUT
     sequence, full range with a negative slope, MONOCHROME1, signed);
  4. JPEG 2000 refused with a message naming the transfer syntax; warnings
     for a lateral view, another body part, another modality, several
     frames; truncated and corrupt files are errors, never crashes;
  5. prepare (packs), evaluate --model and train accept DICOM files: the
     same results as from the PNG/JPEG files they were made from.
"""
import csv
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
import cxtest  # noqa: E402
import dicomgen  # noqa: E402

import numpy as np  # noqa: E402

TMP = os.path.join(cxtest.TMP, "dicom")
passes, failures = [], []


def check(name, ok, detail=""):
    print(("PASS " if ok else "FAIL ") + name + (": " + detail if detail else ""), flush=True)
    (passes if ok else failures).append(name)


def run(*args):
    return subprocess.run([cxtest.CHEXNET] + [str(a) for a in args], capture_output=True,
                          text=True)


def model_path():
    src = os.environ.get("CX_SOURCE") or os.path.join(os.path.dirname(__file__), "..", "..")
    p = os.path.join(src, "models", "chexnet-pneumonia.safetensors")
    if os.path.exists(p):
        return p
    p = os.path.join(TMP, "init.safetensors")
    r = run("init", "--arch", "densenet121", "--classes", "14", "--seed", "1", "-o", p)
    if r.returncode != 0:
        raise SystemExit("chexnet init failed: " + r.stderr)
    return p


def decode(paths, channels=0):
    """chexnet's decoded pixels (tests/tools/img_dump): list of arrays or
    None (failed)."""
    out = os.path.join(TMP, "pixels.bin")
    subprocess.run([cxtest.tool("img_dump"), "decode", str(channels), out] + list(paths),
                   capture_output=True)
    res = []
    with open(out, "rb") as f:
        data = f.read()
    off = 0
    while off < len(data):
        st, w, h, c = np.frombuffer(data[off:off + 16], dtype="<i4")
        off += 16
        if st:
            res.append(None)
            continue
        a = np.frombuffer(data[off:off + w * h * c], dtype=np.uint8).reshape(h, w, c)
        off += w * h * c
        res.append(a[:, :, 0] if c == 1 else a)
    return res


def predict(model, paths):
    """{path: (probabilities dict, warnings)} and stderr."""
    r = run("predict", "--model", model, "--format", "json", "--batch", "4", *paths)
    res = {}
    for line in r.stdout.splitlines():
        o = json.loads(line)
        res[o["image"]] = (o["probabilities"], o["warnings"])
    return res, r.stderr


def transfer_syntaxes(model, cases):
    good = [c for c in cases if c["error"] is None]
    pix = decode([c["path"] for c in good])
    for c, p in zip(good, pix):
        if c["pixels"] is not None:
            same = p is not None and p.shape == c["pixels"].shape and np.array_equal(p, c["pixels"])
            diff = "" if p is None or p.shape != c["pixels"].shape else \
                "max diff %d" % int(np.abs(p.astype(int) - c["pixels"].astype(int)).max())
            check("pixels exact: " + c["name"], same,
                  "decode failed" if p is None else diff)
        if c["close"] is not None:
            ref, bound = c["close"]
            d = None if p is None else int(np.abs(p.astype(int) - ref.astype(int)).max())
            check("pixels within %d: %s" % (bound, c["name"]), d is not None and d <= bound,
                  "max diff %s" % d)
    refs = sorted({c["same_as"] for c in good if c["same_as"]})
    res, err = predict(model, [c["path"] for c in good] + refs)
    for c in good:
        got = res.get(c["path"])
        if got is None:
            check("predict: " + c["name"], False, err.strip()[-300:])
            continue
        warns = got[1]
        if c["same_as"]:
            want = res.get(c["same_as"])
            check("probabilities identical to %s's: %s" % (os.path.basename(c["same_as"]),
                                                           c["name"]),
                  want is not None and got[0] == want[0],
                  "%s vs %s" % (got[0], want and want[0]))
        if c["warn"]:
            miss = [w for w in c["warn"] if not any(w in x for x in warns)]
            check("warnings: " + c["name"], not miss, "got %s" % warns)
        else:
            check("no warnings: " + c["name"], warns == [], "got %s" % warns)
    for c in cases:
        if c["error"] is None:
            continue
        r = run("predict", "--model", model, c["path"])
        check("refused with a clear message: " + c["name"],
              r.returncode == 1 and c["error"] in r.stderr and c["path"] in r.stderr,
              r.stderr.strip())


def voi_oracle(files):
    import pydicom
    from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut
    pix = decode([p for _, p in files])
    for (name, path), got in zip(files, pix):
        ds = pydicom.dcmread(path)
        arr = ds.pixel_array
        m = apply_modality_lut(arr, ds)
        if "VOILUTSequence" in ds:
            lut = apply_voi_lut(m.astype(np.int64), ds, prefer_lut=True).astype(np.float64)
            t = lut * 255.0 / 65535.0
        elif "WindowCenter" in ds:
            y = apply_voi_lut(m.astype(np.float64), ds, prefer_lut=False)
            # pydicom's output range: the stored range after the rescale
            bits = ds.BitsStored
            lo, hi = (0, 2 ** bits - 1) if ds.PixelRepresentation == 0 else \
                (-2 ** (bits - 1), 2 ** (bits - 1) - 1)
            slope, icpt = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
            lo, hi = sorted((lo * slope + icpt, hi * slope + icpt))
            t = (y - lo) * 255.0 / (hi - lo)
        else:
            bits = ds.BitsStored
            lo, hi = (0, 2 ** bits - 1) if ds.PixelRepresentation == 0 else \
                (-2 ** (bits - 1), 2 ** (bits - 1) - 1)
            slope, icpt = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
            lo, hi = sorted((lo * slope + icpt, hi * slope + icpt))
            t = (m - lo) * 255.0 / (hi - lo)
        want = np.clip(np.floor(t + 0.5), 0, 255)
        if ds.PhotometricInterpretation == "MONOCHROME1":
            want = 255 - want
        if got is None:
            check("VOI oracle: " + name, False, "decode failed")
            continue
        diff = np.abs(got.astype(np.int64) - want.astype(np.int64))
        # exact, except where the oracle's own value sits on a rounding tie
        # (x.5 within 1e-6: the two float orders of operations may differ)
        frac = np.abs((t - np.floor(t)) - 0.5)
        bad = (diff > 1) | ((diff == 1) & (frac > 1e-6))
        check("pixels equal pydicom's Modality + VOI steps: " + name, not bad.any(),
              "%d of %d pixels differ (max %d); %d on rounding ties" %
              (int(bad.sum()), diff.size, int(diff.max()), int(((diff == 1) & ~bad).sum())))


def corrupt_files(model, cases):
    src = next(c["path"] for c in cases if c["path"].endswith("mono2_8bit_explicit.dcm"))
    data = open(src, "rb").read()
    bad = {
        "truncated in the pixel data": data[:len(data) // 2],
        "truncated in the header": data[:200],
        "DICM and garbage": data[:132] + os.urandom(4000),
        "empty after DICM": data[:132],
    }
    lossless = next(c["path"] for c in cases if c["path"].endswith("w12_jpegls.dcm"))
    d2 = bytearray(open(lossless, "rb").read())
    for i in range(len(d2) - 2000, len(d2) - 1000):
        d2[i] ^= 0x5a
    bad["JPEG-LS stream corrupted"] = bytes(d2)
    paths = []
    for k, v in bad.items():
        p = os.path.join(TMP, "bad_%s.dcm" % k.replace(" ", "_"))
        with open(p, "wb") as f:
            f.write(v)
        paths.append((k, p))
    for k, p in paths:
        r = run("predict", "--model", model, "--format", "json", p)
        ok = r.returncode in (0, 1) and "Traceback" not in r.stderr and \
            (r.returncode == 1 and p in r.stderr or r.returncode == 0)
        # a corrupted entropy-coded stream may still decode to (wrong) pixels;
        # the others must be errors
        if k != "JPEG-LS stream corrupted":
            ok = ok and r.returncode == 1
        check("corrupt file handled (%s)" % k, ok, (r.stderr.strip() or r.stdout.strip())[-200:])


def tiny_weights(path):
    torch = cxtest.need_torch()
    from torchvision.models.densenet import DenseNet
    torch.manual_seed(0)
    m = DenseNet(growth_rate=8, block_config=(2, 2, 2, 2), num_init_features=16, bn_size=2,
                 num_classes=1)
    cxtest.save_safetensors(path, m.state_dict(), {"classes": json.dumps(["Pneumonia"])})


def data_commands(model):
    """prepare, evaluate --model and train on DICOM files made from JPEGs
    (img2dcm encapsulates the JPEG stream: identical pixels)."""
    kdir = os.path.join(cxtest.DATA, "kermany-224")
    with open(os.path.join(kdir, "manifest.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    pick = [r for r in rows if r["pneumonia"] == "0"][:6] + \
        [r for r in rows if r["pneumonia"] == "1"][:6]
    ddir = os.path.join(TMP, "kermany-dcm")
    os.makedirs(ddir, exist_ok=True)
    dcm_rows = []
    for r in pick:
        out = os.path.join(ddir, os.path.basename(r["path"]).replace(".jpeg", ".dcm"))
        dicomgen.tool("img2dcm", "-k", "Modality=CR", os.path.join(kdir, r["path"]), out)
        d = dict(r)
        d["path"] = os.path.basename(out)
        dcm_rows.append(d)
    jman, dman = os.path.join(TMP, "jpeg.csv"), os.path.join(ddir, "manifest.csv")
    for path, rs, in ((jman, pick), (dman, dcm_rows)):
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
            w.writeheader()
            for r in rs:
                w.writerow(dict(r, path=os.path.join(kdir, r["path"]) if rs is pick
                                else r["path"]))
    # prepare
    jp, dp = os.path.join(TMP, "jpeg.cxpack"), os.path.join(TMP, "dcm.cxpack")
    r1 = run("prepare", "--manifest", jman, "-o", jp)
    r2 = run("prepare", "--manifest", dman, "-o", dp)
    check("prepare reads DICOM files", r1.returncode == 0 and r2.returncode == 0,
          (r1.stderr + r2.stderr).strip()[-300:])
    p1 = run("predict", "--model", model, "--format", "csv", jp).stdout.splitlines()[1:]
    p2 = run("predict", "--model", model, "--format", "csv", dp).stdout.splitlines()[1:]
    v1 = [line.split(",")[1:] for line in p1]
    v2 = [line.split(",")[1:] for line in p2]
    check("a pack of DICOM files predicts as the pack of their JPEGs",
          len(v1) == len(pick) and v1 == v2, "%d vs %d rows" % (len(v1), len(v2)))
    # evaluate --model on a folder of DICOM files
    labels = os.path.join(TMP, "labels.csv")
    with open(labels, "w") as f:
        f.write("Image,Pneumonia\n")
        for r in dcm_rows:
            f.write("%s,%s\n" % (r["path"], r["pneumonia"]))
    pred = os.path.join(TMP, "eval_pred.csv")
    r = run("evaluate", "--model", model, "--images", ddir, "--labels", labels,
            "--save-pred", pred, "--bootstrap", "0")
    ok = r.returncode == 0 and os.path.exists(pred)
    if ok:
        with open(pred) as f:
            ev = {os.path.basename(row[0]): row[1] for row in list(csv.reader(f))[1:]}
        direct, _ = predict(model, [os.path.join(ddir, r["path"]) for r in dcm_rows])
        want = {os.path.basename(k): "%.9g" % v[0]["Pneumonia"] for k, v in direct.items()}
        ok = len(ev) == len(dcm_rows) and \
            all(float(ev[k]) == float(want[k]) for k in want)
    check("evaluate --model reads a folder of DICOM files", ok, r.stderr.strip()[-300:])
    # train: the same weights from the DICOM files as from the JPEGs
    w = os.path.join(TMP, "tiny.safetensors")
    tiny_weights(w)
    outs = []
    for man, images, tag in ((jman, kdir, "jpeg"), (dman, ddir, "dcm")):
        out = os.path.join(TMP, "train-" + tag)
        shutil.rmtree(out, ignore_errors=True)
        r = run("train", "--labels", man, "--images", images, "--task", "pneumonia",
                "--patient-column", "patient_key", "--fractions", "0.75,0.25,0",
                "--weights", w, "--batch", "4", "--epochs", "1", "--seed", "3",
                "--threads", "2", "--out", out)
        outs.append((r, os.path.join(out, "best.safetensors")))
    ok = all(r.returncode == 0 and os.path.exists(p) for r, p in outs)
    if ok:
        a, _ = cxtest.load_safetensors(outs[0][1])
        b, _ = cxtest.load_safetensors(outs[1][1])
        import torch
        ok = set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    check("train on DICOM files gives the weights of training on their JPEGs", ok,
          "; ".join(r.stderr.strip()[-200:] for r, _ in outs if r.returncode))


def main():
    dicomgen.need_tools()
    cxtest.shared("nih", "images")
    shutil.rmtree(TMP, ignore_errors=True)
    os.makedirs(TMP)
    model = model_path()
    cases = dicomgen.make_cases(os.path.join(TMP, "files"))
    transfer_syntaxes(model, cases)
    voi_oracle(dicomgen.make_voi_cases(os.path.join(TMP, "files")))
    corrupt_files(model, cases)
    data_commands(model)
    print("%d passed, %d failed" % (len(passes), len(failures)))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
