"""`chexnet calibrate` and `predict`'s positive flag end to end, on 40 real
X-rays (../shared/data/kermany-224; skipped without them) with the shipped
model's weights (its own calibration removed):
  - T against scipy's minimisation of the NLL on PyTorch's logits of the same
    images (torchvision DenseNet-121, PIL preprocessing); NLL before/after;
  - the Youden threshold against scikit-learn's roc_curve on the calibrated
    model's probabilities as predict prints them; sensitivity, specificity
    and ECE at it;
  - cam_range against numpy percentiles of PyTorch's class activation maps;
  - predict's positive flag in json, csv and table, --threshold; a model
    without thresholds prints no flag, and one with thresholds only prints
    the same bytes plus the flags; --out = --model rewrites atomically.
"""
import json
import os
import re
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cxtest  # noqa: E402
from test_calibrate import check, f32, failures, nll, sk_thresholds, SOURCE  # noqa: E402

import numpy as np  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

WORK = os.path.join(cxtest.TMP, "test_calibrate_e2e.%d" % os.getpid())


def torch_outputs(model_path, paths):
    """Logits and class activation maps of the model's torchvision twin."""
    torch = cxtest.need_torch()
    import torchvision
    tensors, meta = cxtest.load_safetensors(model_path)
    nc = len(json.loads(meta["classes"]))
    m = torchvision.models.densenet121(num_classes=nc)
    sd = {k: v for k, v in tensors.items()}
    m.load_state_dict(sd, strict=True)
    m.eval()
    logits, cams = [], []
    with torch.no_grad():
        for i in range(0, len(paths), 8):
            x = cxtest.xray_batch(paths[i:i + 8])
            f = torch.nn.functional.relu(m.features(x))
            logits.append(m.classifier(torch.flatten(
                torch.nn.functional.adaptive_avg_pool2d(f, 1), 1)).double().numpy())
            cams.append(torch.einsum("ck,nkhw->nchw", m.classifier.weight, f).double().numpy())
    return np.concatenate(logits), np.concatenate(cams)


def run(args, ok=True):
    r = cxtest.run([cxtest.CHEXNET] + args)
    if ok and r.returncode != 0:
        raise SystemExit("chexnet %s failed (%d): %s" % (" ".join(args), r.returncode, r.stderr))
    return r


def predict(model, files, fmt, extra=()):
    return run(["predict", "--model", model, "--format", fmt] + list(extra) + files).stdout


def test_end_to_end():
    kermany = os.path.join(cxtest.DATA, "kermany-224")
    if not os.path.exists(os.path.join(kermany, "manifest.csv")):
        return "skipped"
    model = os.path.join(SOURCE, "models", "chexnet-pneumonia.safetensors")
    if not os.path.exists(model):
        return "skipped"
    # the shipped weights without their own calibration: the test fits one
    model = cxtest.strip_metadata(model, os.path.join(WORK, "uncalibrated.safetensors"))
    rows = open(os.path.join(kermany, "manifest.csv")).read().splitlines()
    header, body = rows[0], rows[1:]
    neg = [r for r in body if r.split(",")[3] == "0"][:20]
    pos = [r for r in body if r.split(",")[3] == "1"][:20]
    manifest = os.path.join(WORK, "cal.csv")
    with open(manifest, "w") as f:
        f.write(header + "\n")
        for r in neg + pos:
            f.write(os.path.join(kermany, r.split(",", 1)[0]) + "," + r.split(",", 1)[1] + "\n")
    files = [os.path.join(kermany, r.split(",")[0]) for r in neg + pos]
    y = np.array([0] * len(neg) + [1] * len(pos))
    out = os.path.join(WORK, "calibrated.safetensors")

    r = run(["calibrate", "--model", model, "--labels", manifest, "-o", out, "--json"])
    s = json.loads(r.stdout)
    c = s["classes"][0]
    print("calibrate: %s" % json.dumps(c))
    check(s["images"] == 40 and c["positives"] == 20 and c["negatives"] == 20,
          "calibrate: 40 images, 20 positive")
    check(not [f for f in os.listdir(WORK) if ".tmp-" in f], "calibrate: no temporary files")
    _, meta = cxtest.load_safetensors(out)
    T = float(json.loads(meta["temperature"])[0])
    thr = float(json.loads(meta["thresholds"])[0])
    check("Youden" in meta.get("threshold_method", "") and "40" in meta["threshold_method"],
          "threshold_method: %r" % meta.get("threshold_method"))

    # T against scipy on PyTorch's logits of the same images
    from scipy.optimize import minimize_scalar
    z, cams = torch_outputs(model, files)
    z = z[:, 0]
    res = minimize_scalar(lambda u: nll(z, y, np.exp(u)), bounds=(np.log(0.01), np.log(100)),
                          method="bounded", options={"xatol": 1e-12, "maxiter": 2000})
    T_ref = float(np.exp(res.x))
    print("T: chexnet %.9g, scipy on PyTorch's logits %.9g" % (T, T_ref))
    check(abs(T - T_ref) <= 1e-4 * T_ref, "calibrate: T %.9g vs scipy %.9g" % (T, T_ref))
    check(abs(c["nll_before"] - nll(z, y, 1.0)) <= 1e-5 * nll(z, y, 1.0) and
          abs(c["nll_after"] - nll(z, y, T_ref)) <= 1e-5 * nll(z, y, T_ref),
          "calibrate: NLL before %.9g / after %.9g vs PyTorch %.9g / %.9g" % (
              c["nll_before"], c["nll_after"], nll(z, y, 1.0), nll(z, y, T_ref)))
    check(c["nll_after"] <= c["nll_before"] + 1e-12, "calibrate: the NLL does not rise")

    # cam_range: 1st and 99th percentiles of PyTorch's maps pooled over the images
    cr = json.loads(meta["cam_range"])
    lo, hi = np.percentile(cams[:, 0].reshape(-1), [1, 99])
    print("cam_range: chexnet %r, PyTorch %.6g %.6g" % (cr, lo, hi))
    check(len(cr) == 1 and abs(cr[0][0] - lo) <= 1e-4 * (abs(lo) + 1) and
          abs(cr[0][1] - hi) <= 1e-4 * (abs(hi) + 1), "cam_range vs numpy on PyTorch's maps")

    # thresholds: scikit-learn on the calibrated model's probabilities (predict)
    lines = predict(out, files, "json").splitlines()
    recs = [json.loads(line) for line in lines]
    p = f32([rr["probabilities"]["Pneumonia"] for rr in recs])
    want = sk_thresholds(p, y, "youden")
    check(np.float32(thr) == np.float32(want), "Youden threshold %.9g vs scikit-learn %.9g" % (
        thr, want))
    check(abs(c["sensitivity"] - np.mean(p[y == 1] >= np.float32(thr))) < 1e-12 and
          abs(c["specificity"] - np.mean(p[y == 0] < np.float32(thr))) < 1e-12,
          "calibrate: sensitivity/specificity at the threshold")
    bins = np.minimum(np.floor(p.astype(np.float64) * 15).astype(int), 14)
    ece = sum(abs(p[bins == b].astype(np.float64).sum() - y[bins == b].sum()) / len(p)
              for b in range(15) if np.any(bins == b))
    check(abs(c["ece_after"] - ece) < 1e-12, "ECE after %.12g vs numpy %.12g" % (
        c["ece_after"], ece))
    # the probabilities are sigmoid(logit / T)
    pt = 1 / (1 + np.exp(-z / T))
    check(np.max(np.abs(p - pt)) < 2e-5, "predict applies the temperature (max |d| %.3g)" %
          np.max(np.abs(p - pt)))

    # the positive flag in all three formats
    check(all(rr["positive"] == {"Pneumonia": bool(np.float32(rr["probabilities"]["Pneumonia"])
                                                   >= np.float32(thr))} for rr in recs) and
          all(line.endswith('"positive": {"Pneumonia": %s}}' % (
              "true" if rr["positive"]["Pneumonia"] else "false"))
              for line, rr in zip(lines, recs)),
          "json: positive = probability >= threshold, the last member")
    csv = predict(out, files, "csv").splitlines()
    check(csv[0] == "image,Pneumonia,Pneumonia:positive", "csv header: %r" % csv[0])
    check(all(row.split(",")[2] == ("1" if rr["positive"]["Pneumonia"] else "0")
              for row, rr in zip(csv[1:], recs)) and len(csv) == 41, "csv: the positive column")
    # evaluate --pred reads such a CSV: the flag columns are not classes
    pred_csv = os.path.join(WORK, "flags.csv")
    with open(pred_csv, "w") as f:
        f.write("\n".join(csv) + "\n")
    ev_json = os.path.join(WORK, "flags-eval.json")
    run(["evaluate", "--pred", pred_csv, "--labels", manifest, "--bootstrap", "0",
         "--json", ev_json])
    ev = json.load(open(ev_json))
    check(list(ev["auroc"]) == ["Pneumonia"] and
          abs(ev["auroc"]["Pneumonia"]["value"] - roc_auc_score(y, p)) < 1e-9,
          "evaluate --pred leaves the :positive column out (AUROC %r)" % ev["auroc"])
    table = predict(out, files, "table").splitlines()
    npos = sum(rr["positive"]["Pneumonia"] for rr in recs)
    check(sum("positive" in t for t in table[1:]) == npos and npos > 0,
          "table: %d rows say positive" % npos)

    # --threshold overrides the model's for every class
    j = [json.loads(line) for line in predict(out, files, "json", ["--threshold", "0.5"]).splitlines()]
    check(all(rr["positive"]["Pneumonia"] == (rr["probabilities"]["Pneumonia"] >= 0.5) for rr in j),
          "--threshold 0.5 overrides the model's threshold")

    # a model without thresholds: no flag, output as before; with thresholds only
    # (no temperature) the same bytes plus the flags
    base_json = predict(model, files[:6], "json").splitlines()
    base_csv = predict(model, files[:6], "csv").splitlines()
    base_table = predict(model, files[:6], "table")
    pat = re.compile(r'^\{"image": "[^"]+", "probabilities": \{"Pneumonia": [0-9.e-]+\}, '
                     r'"warnings": \[\]\}$')
    check(all(pat.match(line) for line in base_json) and base_csv[0] == "image,Pneumonia" and
          "positive" not in base_table, "no thresholds: json, csv and table without flags")
    thr_only = os.path.join(WORK, "thresholds-only.safetensors")
    run(["calibrate", "--model", model, "--labels", manifest, "-o", thr_only, "--no-temperature",
         "--no-cam-range", "--threshold", "sensitivity=0.9"])
    _, m2 = cxtest.load_safetensors(thr_only)
    check("temperature" not in m2 and "cam_range" not in m2 and "thresholds" in m2,
          "--no-temperature --no-cam-range: only thresholds written")
    t2 = np.float32(json.loads(m2["thresholds"])[0])
    j2 = predict(thr_only, files[:6], "json").splitlines()
    c2 = predict(thr_only, files[:6], "csv").splitlines()
    same = True
    for a, b in zip(base_json, j2):
        pp = np.float32(json.loads(a)["probabilities"]["Pneumonia"])
        same &= b == a[:-1] + ', "positive": {"Pneumonia": %s}}' % ("true" if pp >= t2 else "false")
    for a, b in zip(base_csv[1:], c2[1:]):
        same &= b.startswith(a + ",") and b[len(a) + 1:] in ("0", "1")
    check(same and len(j2) == 6, "thresholds only: the old bytes, then the flags")
    # out == model: replaced atomically, loads
    inplace = os.path.join(WORK, "inplace.safetensors")
    shutil.copy(thr_only, inplace)
    run(["calibrate", "--model", inplace, "--labels", manifest, "-o", inplace, "--threshold",
         "fixed=0.3", "--no-cam-range"])
    _, m3 = cxtest.load_safetensors(inplace)
    check(json.loads(m3["thresholds"]) == [0.3] and "temperature" in m3,
          "--out = --model: rewritten (%r)" % m3.get("thresholds"))
    # usage errors
    r = run(["calibrate", "--model", model, "--labels", manifest], ok=False)
    check(r.returncode == 2 and "--out" in r.stderr, "calibrate without --out: usage error")
    r = run(["calibrate", "--model", model, "--labels", manifest, "-o", out + "x",
             "--threshold", "sensitivity=2"], ok=False)
    check(r.returncode == 2 and "--threshold" in r.stderr, "bad --threshold: usage error")
    r = run(["calibrate", "--help"])
    check("youden" in r.stdout and "--split-dir" in r.stdout, "calibrate --help")
    return "ran"


def main():
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    if test_end_to_end() == "skipped":
        cxtest.skip("../shared/data/kermany-224 or the shipped model absent")
    if failures:
        print("%d failure(s)" % len(failures))
        sys.exit(1)
    shutil.rmtree(WORK, ignore_errors=True)
    print("OK")


if __name__ == "__main__":
    main()
