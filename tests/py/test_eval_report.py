#!/usr/bin/python3
"""Oracle test of the evaluation reports' calibration, ROC bands, provenance
and reader figure, against scikit-learn, numpy and hashlib, on the real label
files in ../shared/data (CheXpert test labels, Kermany paediatric labels).

- Reliability bins == sklearn.calibration.calibration_curve(strategy=
  "uniform") (scores exactly on the bin edges included), ECE == numpy, and the
  ECE's CI == numpy's percentiles over the same (dumped) resamples.
- ROC band: the full data's TPR on the grid and the band == an independent
  numpy computation over the same resamples; properties on 5,216 Kermany
  labels: within [0,1], nondecreasing, lo <= hi, the full-data curve inside.
- Provenance: the sha256 values == hashlib's on the inputs, the command line
  recorded, every key of the earlier JSON still present (evaluate and
  readers).
- Reader figure: the points drawn == the readers' operating points in the
  JSON == an independent computation; the mean point; the model's ROC ==
  sklearn's roc_curve and roc_auc_score.
"""
import csv
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_auc_score, roc_curve

CHEXNET = os.environ.get("CHEXNET")
SHARED = os.environ.get("CX_SHARED", "")
TMP = os.path.join(os.environ.get("CX_TMP", "/tmp"), "py_eval_report")
DATA = os.path.join(SHARED, "data")
CHEXPERT = os.path.join(DATA, "chexpert-test-labels")
KERMANY = os.path.join(DATA, "kermany-224", "manifest.csv")
GT = os.path.join(CHEXPERT, "groundtruth.csv")
PRED = os.path.join(CHEXPERT, "example_models/predictions/standard/%s_predictions.csv")
SVG = "{http://www.w3.org/2000/svg}"

FAILS = []


def check(cond, msg):
    if not cond:
        FAILS.append(msg)
        print("FAIL:", msg)


def run(args, expect=0):
    p = subprocess.run([CHEXNET] + args, capture_output=True, text=True, timeout=900)
    if expect is not None and p.returncode != expect:
        print(p.stdout[-3000:], p.stderr[-3000:])
        raise SystemExit("chexnet %s: exit %d, expected %d" % (" ".join(args[:2]), p.returncode, expect))
    return p


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read())
    return h.hexdigest()


def table(path):
    return {r["Study"]: r for r in csv.DictReader(open(path))}


def close(a, b, tol=1e-12):
    return (a is None and b is None) or (a is not None and b is not None and abs(a - b) <= tol)


# ------------------------------------------------------------ oracles
def ece_np(y, p, nb):
    """ECE from its definition, bins as sklearn's calibration_curve."""
    edges = np.linspace(0.0, 1.0, nb + 1)
    ids = np.searchsorted(edges[1:-1], p)
    e = 0.0
    for b in range(nb):
        m = ids == b
        if m.any():
            e += m.sum() / len(p) * abs(p[m].mean() - y[m].mean())
    return e


def ece_weighted(y, p, w, nb):
    edges = np.linspace(0.0, 1.0, nb + 1)
    ids = np.searchsorted(edges[1:-1], p)
    W = w.sum()
    e = 0.0
    for b in range(nb):
        m = ids == b
        if w[m].sum() > 0:
            nb_ = w[m].sum()
            e += nb_ / W * abs((w[m] * p[m]).sum() / nb_ - (w[m] * y[m]).sum() / nb_)
    return e


def tpr_grid(y, s, w, G):
    """TPR at FPR g/(G-1): the highest TPR of the ROC points at that FPR,
    else linear between the neighbouring points (points: sklearn's roc_curve
    without dropping, weighted by the resample's multiplicities)."""
    order = np.lexsort((np.arange(len(s)), -s))
    s, y, w = s[order], y[order], w[order]
    tp = np.cumsum(w * (y == 1))
    fp = np.cumsum(w * (y == 0))
    ends = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    fp = np.r_[0, fp[ends]].astype(np.int64)
    tp = np.r_[0, tp[ends]].astype(np.int64)
    N, P = fp[-1], tp[-1]
    if N == 0 or P == 0:
        return None
    out = np.empty(G)
    for g in range(G):
        eq = np.nonzero(fp * (G - 1) == g * N)[0]
        if len(eq):
            out[g] = tp[eq].max() / P
            continue
        a = np.nonzero(fp * (G - 1) < g * N)[0].max()
        b = np.nonzero(fp * (G - 1) > g * N)[0].min()
        f = g / (G - 1)
        xa, ya, xb, yb = fp[a] / N, tp[a] / P, fp[b] / N, tp[b] / P
        out[g] = ya + (yb - ya) * ((f - xa) / (xb - xa))
    return out


# ------------------------------------------------------------ tests
def test_calibration_chexpert():
    rows = table(GT)
    for model, nb in (("drnet", 10), ("jfaboy", 7)):
        p = PRED % model
        out = os.path.join(TMP, "cal_%s.json" % model)
        dump = os.path.join(TMP, "cal_%s_rs.txt" % model)
        B = 200
        run(["evaluate", "--pred", p, "--labels", GT, "--bootstrap", str(B), "--seed", "11",
             "--calibration-bins", str(nb), "--json", out, "--dump-resamples", dump,
             "--dump-count", str(B)])
        j = json.load(open(out))
        idx = np.loadtxt(dump, dtype=np.int64)
        preds = list(csv.DictReader(open(p)))
        check(j["calibration"]["n_bins"] == nb, "%s: n_bins" % model)
        for c, cal in j["calibration"]["classes"].items():
            y = np.array([int(rows[q["Study"]][c]) for q in preds])
            s = np.array([float(q[c]) for q in preds])
            check(cal["defined"], "%s %s calibration defined" % (model, c))
            pt, pp = calibration_curve(y, s, n_bins=nb, strategy="uniform")
            bins = [b for b in cal["bins"] if b["n"] > 0]
            check(len(bins) == len(pt), "%s %s: %d non-empty bins vs sklearn %d" % (model, c, len(bins), len(pt)))
            if len(bins) == len(pt):
                check(all(close(b["fraction_positive"], t) and close(b["mean_predicted"], q)
                          for b, t, q in zip(bins, pt, pp)), "%s %s: bins differ from sklearn" % (model, c))
            check(sum(b["n"] for b in cal["bins"]) == len(y), "%s %s: bin counts" % (model, c))
            check(all(abs(b["lo"] - k / nb) < 1e-15 and abs(b["hi"] - (k + 1) / nb) < 1e-15
                      for k, b in enumerate(cal["bins"])), "%s %s: bin edges" % (model, c))
            ref = ece_np(y, s, nb)
            check(close(cal["ece"]["value"], ref), "%s %s ECE %r vs numpy %r" % (model, c, cal["ece"]["value"], ref))
            eces = []
            for b in range(B):
                w = np.bincount(idx[b], minlength=len(y)).astype(float)
                eces.append(ece_weighted(y.astype(float), s, w, nb))
            lo, hi = np.percentile(eces, [2.5, 97.5])
            got = cal["ece"]["ci95"]
            check(close(got[0], lo, 1e-9) and close(got[1], hi, 1e-9),
                  "%s %s ECE CI %r vs numpy %r" % (model, c, got, (lo, hi)))
    # labels with uncertain (-1) and blank entries: only the labelled images
    # count, in the resamples too
    lab = os.path.join(CHEXPERT, "labeler/chexbert_labels.csv")
    lrows = table(lab)
    p = PRED % "drnet"
    preds = list(csv.DictReader(open(p)))
    out, dump, B = os.path.join(TMP, "cal_chexbert.json"), os.path.join(TMP, "cal_chexbert_rs.txt"), 100
    run(["evaluate", "--pred", p, "--labels", lab, "--bootstrap", str(B), "--seed", "4", "--json", out,
         "--dump-resamples", dump, "--dump-count", str(B)])
    j = json.load(open(out))
    idx = np.loadtxt(dump, dtype=np.int64)
    for c, cal in j["calibration"]["classes"].items():
        v = np.array([lrows[q["Study"]][c] in ("0.0", "1.0") for q in preds])
        y = np.array([float(lrows[q["Study"]][c]) if ok else -1 for q, ok in zip(preds, v)])
        s = np.array([float(q[c]) for q in preds])
        check(sum(b["n"] for b in cal["bins"]) == int(v.sum()), "chexbert %s: labelled images binned" % c)
        check(close(cal["ece"]["value"], ece_np(y[v], s[v], 10)), "chexbert %s ECE" % c)
        eces = [ece_weighted(y[v], s[v], np.bincount(idx[b], minlength=len(y))[v].astype(float), 10)
                for b in range(B)]
        lo, hi = np.percentile(eces, [2.5, 97.5])
        got = cal["ece"]["ci95"]
        check(close(got[0], lo, 1e-9) and close(got[1], hi, 1e-9), "chexbert %s ECE CI" % c)
    # scores > 1 (desmond's): no calibration, a warning, null ECE
    out = os.path.join(TMP, "cal_desmond.json")
    r = run(["evaluate", "--pred", PRED % "desmond", "--labels", GT, "--bootstrap", "20", "--json", out])
    j = json.load(open(out))
    und = [c for c, v in j["calibration"]["classes"].items() if not v["defined"]]
    check(und and all(j["calibration"]["classes"][c]["ece"]["value"] is None for c in und),
          "scores outside [0,1]: calibration undefined, ECE null")
    check("no calibration" in r.stderr, "scores outside [0,1]: warned")


def test_calibration_edges():
    """Scores exactly on the edges i/10 (and 0, 1): sklearn's convention,
    (e_i, e_i+1] with 0 in the first bin, on real CheXpert labels."""
    rows = table(GT)
    ids = list(rows)
    c = "Edema"
    y = np.array([int(rows[i][c]) for i in ids])
    rng = np.random.default_rng(3)
    s = rng.integers(0, 11, size=len(ids)) / 10.0  # 0.0, 0.1, ..., 1.0 exactly as printed
    s[::7] = np.round(rng.random(len(s[::7])), 3)
    p = os.path.join(TMP, "edges_pred.csv")
    with open(p, "w") as f:
        f.write("Study,%s\n" % c)
        for i, v in zip(ids, s):
            f.write("%s,%s\n" % (i, repr(float(v))))
    s = np.array([float(repr(float(v))) for v in s])
    for nb in (10, 5, 3):
        out = os.path.join(TMP, "edges_%d.json" % nb)
        run(["evaluate", "--pred", p, "--labels", GT, "--bootstrap", "0", "--calibration-bins", str(nb),
             "--json", out])
        cal = json.load(open(out))["calibration"]["classes"][c]
        pt, pp = calibration_curve(y, s, n_bins=nb, strategy="uniform")
        ids_ = np.searchsorted(np.linspace(0, 1, nb + 1)[1:-1], s)
        counts = np.bincount(ids_, minlength=nb)
        check([b["n"] for b in cal["bins"]] == counts.tolist(),
              "edges, %d bins: counts %r vs numpy %r" % (nb, [b["n"] for b in cal["bins"]], counts.tolist()))
        bins = [b for b in cal["bins"] if b["n"] > 0]
        check(len(bins) == len(pt) and all(close(b["fraction_positive"], t) and close(b["mean_predicted"], q)
                                           for b, t, q in zip(bins, pt, pp)),
              "edges, %d bins: reliability points differ from sklearn" % nb)
        check(close(cal["ece"]["value"], ece_np(y, s, nb)), "edges, %d bins: ECE" % nb)
        check(cal["ece"]["ci95"] == [None, None], "no bootstrap: ECE CI null")


def test_band_oracle():
    """The band == numpy over the same resamples (dumped by chexnet)."""
    rows = table(GT)
    p = PRED % "drnet"
    preds = list(csv.DictReader(open(p)))
    B, G = 150, 21
    out, dump = os.path.join(TMP, "band.json"), os.path.join(TMP, "band_rs.txt")
    run(["evaluate", "--pred", p, "--labels", GT, "--bootstrap", str(B), "--seed", "77",
         "--band-points", str(G), "--roc-bands", "--json", out, "--dump-resamples", dump,
         "--dump-count", str(B)])
    j = json.load(open(out))
    idx = np.loadtxt(dump, dtype=np.int64)
    check(j["roc_band"]["grid_points"] == G, "grid points")
    for c, band in j["roc_band"]["classes"].items():
        y = np.array([int(rows[q["Study"]][c]) for q in preds])
        s = np.array([float(q[c]) for q in preds])
        check(np.allclose(band["fpr"], np.arange(G) / (G - 1), rtol=0, atol=1e-15), "%s grid" % c)
        full = tpr_grid(y, s, np.ones(len(y), dtype=np.int64), G)
        check(np.allclose(band["tpr"], full, rtol=0, atol=1e-12), "%s full-data TPR on the grid" % c)
        # the grid TPR agrees with sklearn's ROC points where the grid hits one
        fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
        for g in range(G):
            at = np.isclose(fpr, g / (G - 1), rtol=0, atol=1e-15)
            if at.any():
                check(abs(band["tpr"][g] - tpr[at].max()) < 1e-12, "%s grid point %d vs roc_curve" % (c, g))
        curves = []
        for b in range(B):
            w = np.bincount(idx[b], minlength=len(y))
            t = tpr_grid(y, s, w, G)
            if t is not None:
                curves.append(t)
        curves = np.array(curves)
        lo, hi = np.percentile(curves, [2.5, 97.5], axis=0)
        check(np.allclose(band["lo"], lo, rtol=0, atol=1e-12) and np.allclose(band["hi"], hi, rtol=0, atol=1e-12),
              "%s band vs numpy (max diff %.3g)" % (c, max(np.max(np.abs(np.array(band["lo"]) - lo)),
                                                          np.max(np.abs(np.array(band["hi"]) - hi)))))
        check(band["bootstrap_skipped"] == B - len(curves), "%s skipped resamples" % c)
    # without --roc-bands the JSON has no band (on request only)
    out2 = os.path.join(TMP, "band_no.json")
    run(["evaluate", "--pred", p, "--labels", GT, "--bootstrap", "10", "--json", out2])
    check("roc_band" not in json.load(open(out2)), "roc_band only with --roc-bands")


def test_band_properties():
    """5,216 real Kermany labels, scores from a binormal model: the band
    lies in [0,1], is nondecreasing, lo <= TPR <= hi."""
    rows = list(csv.DictReader(open(KERMANY)))
    y = np.array([int(r["pneumonia"]) for r in rows])
    rng = np.random.default_rng(5)
    s = 1 / (1 + np.exp(-(rng.normal(size=len(y)) + 1.5 * y - 0.5)))
    p = os.path.join(TMP, "kermany_pred.csv")
    with open(p, "w") as f:
        f.write("path,Pneumonia\n")
        for r, v in zip(rows, s):
            f.write("%s,%.9f\n" % (r["path"], v))
    out, d = os.path.join(TMP, "kermany.json"), os.path.join(TMP, "kermany_report")
    run(["evaluate", "--pred", p, "--labels", KERMANY, "--classes", "Pneumonia", "--bootstrap", "500",
         "--roc-bands", "--json", out, "--report", d])
    band = json.load(open(out))["roc_band"]["classes"]["Pneumonia"]
    lo, hi, t = (np.array(band[k]) for k in ("lo", "hi", "tpr"))
    check(np.all((lo >= 0) & (hi <= 1)), "band within [0,1]")
    check(np.all(np.diff(lo) >= 0) and np.all(np.diff(hi) >= 0) and np.all(np.diff(t) >= 0),
          "band and curve nondecreasing")
    check(np.all(lo <= hi), "lo <= hi")
    check(np.all((lo <= t) & (t <= hi)), "the full-data curve inside its band (%d points outside)"
          % int(np.sum((t < lo) | (t > hi))))
    print("   Kermany: widest band (FPR 0.05..0.95) %.4f" % np.max(hi[5:-5] - lo[5:-5]))
    html = open(os.path.join(d, "report.html")).read()
    check('class="roc-band"' in html, "band drawn in the report")
    check("Wang et al." not in html, "no ChestX-ray14 paper columns beside a one-class evaluation")


EARLIER_EVAL_KEYS = {
    "": ["n_images", "classes", "auroc", "mean_auroc", "operating_points", "bootstrap", "roc", "warnings"],
    "auroc.*": ["value", "ci95", "defined", "n", "n_pos", "n_neg", "n_missing", "bootstrap_skipped"],
    "mean_auroc": ["value", "ci95", "n_classes", "bootstrap_skipped"],
    "operating_points.*": ["rule", "chosen_on", "threshold", "tp", "fp", "tn", "fn", "sensitivity",
                           "specificity", "ppv", "npv", "f1", "zero_division", "bootstrap_zero_division"],
    "bootstrap": ["resamples", "seed", "ci", "prng", "seconds", "threads"],
    "roc.*": ["fpr", "tpr", "thresholds"],
}
EARLIER_READER_KEYS = {
    "": ["class", "n_images", "protocol", "readers", "models", "reader_average",
         "reader_average_vs_truth", "difference", "threshold", "bootstrap", "warnings"],
    "readers.*": ["f1", "f1_vs", "n_positive", "f1_vs_truth"],
    "models.*": ["f1", "f1_vs", "n_positive", "f1_vs_truth"],
    "difference.*": ["value", "ci95", "significant"],
}


def keys_present(j, spec, what):
    for path, keys in spec.items():
        objs = [j]
        for part in filter(None, path.split(".")):
            objs = [v for o in objs for v in (o.values() if part == "*" else [o[part]])]
        for o in objs:
            missing = [k for k in keys if k not in o]
            check(not missing, "%s: keys %r missing at %r" % (what, missing, path or "top"))


def check_provenance(prov, args, inputs, what):
    check(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", prov["created"]) is not None,
          "%s: created is ISO 8601 UTC: %r" % (what, prov["created"]))
    check(prov["chexnet_version"] == run(["--version"]).stdout.split()[1], "%s: version" % what)
    cl = prov["command_line"]
    check(shlex.split(cl) == ["chexnet"] + args, "%s: command line %r" % (what, cl))
    got = {x["path"]: x for x in prov["inputs"]}
    for role, path in inputs:
        x = got.get(path)
        check(x is not None and x["role"] == role, "%s: input %s (%s) recorded" % (what, path, role))
        if x:
            check(x["sha256"] == sha256(path), "%s: sha256 of %s == hashlib" % (what, path))
            check(x["bytes"] == os.path.getsize(path) and x["name"] == os.path.basename(path),
                  "%s: size and name of %s" % (what, path))
    check(len(prov["inputs"]) == len(inputs), "%s: %d inputs recorded" % (what, len(prov["inputs"])))


def test_provenance_evaluate():
    p = PRED % "drnet"
    out, d = os.path.join(TMP, "prov.json"), os.path.join(TMP, "prov_report")
    args = ["evaluate", "--pred", p, "--labels", GT, "--bootstrap", "50", "--title", "it's a test",
            "--json", out, "--report", d]
    run(args)
    j = json.load(open(out))
    keys_present(j, EARLIER_EVAL_KEYS, "evaluate JSON")
    check_provenance(j["provenance"], args, [("predictions", p), ("labels", GT)], "evaluate")
    check("'it'\\''s a test'" in j["provenance"]["command_line"], "argument with a quote shell-quoted")
    html = open(os.path.join(d, "report.html")).read()
    check("Provenance" in html and sha256(p) in html and sha256(GT) in html, "report: inputs' sha256")
    check(j["provenance"]["created"] in html, "report: creation time")
    check("recalled" not in html and "no network" not in html, "no words about how chexnet was made")
    # the validation predictions, when used, are an input too
    out2 = os.path.join(TMP, "prov_val.json")
    run(["evaluate", "--pred", p, "--val-pred", PRED % "jfaboy", "--labels", GT, "--bootstrap", "0",
         "--json", out2])
    roles = {x["role"]: x["sha256"] for x in json.load(open(out2))["provenance"]["inputs"]}
    check(roles.get("validation predictions") == sha256(PRED % "jfaboy"), "validation predictions hashed")


def test_readers_figure():
    rad = os.path.join(CHEXPERT, "radiologists/benchmark_radiologists")
    readers = ["bc4", "bc6", "bc8"]
    rows = table(GT)
    for c, model in (("Pleural Effusion", "jfaboy"), ("Edema", "drnet")):
        mp = PRED % model
        out, d = os.path.join(TMP, "readers.json"), os.path.join(TMP, "readers_report")
        args = ["readers", "--class", c] + sum([["--reader", "%s=%s" % (r, os.path.join(rad, r + ".csv"))]
                                               for r in readers], []) + \
            ["--model", "%s=%s" % (model, mp), "--threshold", "0.5", "--truth", GT, "--bootstrap", "20",
             "--json", out, "--report", d]
        run(args)
        j = json.load(open(out))
        keys_present(j, EARLIER_READER_KEYS, "readers JSON")
        check_provenance(j["provenance"], args,
                         [("reader " + r, os.path.join(rad, r + ".csv")) for r in readers] +
                         [("model " + model, mp), ("truth", GT)], "readers")
        vt = j["vs_truth"]
        ids = list(table(os.path.join(rad, "bc4.csv")))
        T = np.array([int(float(rows[i][c])) for i in ids])
        for r in readers:
            R = table(os.path.join(rad, r + ".csv"))
            x = np.array([int(float(R[i][c])) for i in ids])
            sens = np.sum((x == 1) & (T == 1)) / np.sum(T == 1)
            spec = np.sum((x == 0) & (T == 0)) / np.sum(T == 0)
            check(close(vt["readers"][r]["sensitivity"], sens) and close(vt["readers"][r]["specificity"], spec),
                  "%s %s operating point vs numpy" % (c, r))
            check(close(vt["readers"][r]["fpr"], 1 - spec) and close(vt["readers"][r]["tpr"], sens),
                  "%s %s fpr/tpr" % (c, r))
        mean_fpr = np.mean([vt["readers"][r]["fpr"] for r in readers])
        mean_tpr = np.mean([vt["readers"][r]["tpr"] for r in readers])
        check(close(vt["reader_mean"]["fpr"], mean_fpr) and close(vt["reader_mean"]["tpr"], mean_tpr),
              "%s readers' mean point" % c)
        M = table(mp)
        s = np.array([float(M[i][c]) for i in ids])
        check(close(vt["models"][model]["auroc"], roc_auc_score(T, s), 1e-9), "%s model AUROC vs sklearn" % c)
        fpr, tpr, _ = roc_curve(T, s)
        roc = vt["models"][model]["roc"]
        check(len(roc["fpr"]) == len(fpr) and np.allclose(roc["fpr"], fpr, rtol=0, atol=1e-12) and
              np.allclose(roc["tpr"], tpr, rtol=0, atol=1e-12), "%s model ROC vs sklearn roc_curve" % c)
        # the figure: points drawn where the JSON says, on the plot's axes
        for src in ("roc_readers.svg", "report.html"):
            text = open(os.path.join(d, src)).read()
            if src == "report.html":
                text = text[text.index("<svg"):text.index("</svg>") + 6]
            root = ET.fromstring(text[text.index("<svg"):])
            area = root.find(".//%srect[@class='plotarea']" % SVG)
            x0, y0, w, h = (float(area.get(k)) for k in ("x", "y", "width", "height"))
            pts = {e.get("data-name"): e for e in root.iter(SVG + "circle") if e.get("class") == "reader"}
            check(sorted(pts) == sorted(readers), "%s %s: one point per reader" % (c, src))
            for r, e in pts.items():
                fx, ty = float(e.get("data-fpr")), float(e.get("data-tpr"))
                check(close(fx, vt["readers"][r]["fpr"]) and close(ty, vt["readers"][r]["tpr"]),
                      "%s %s: %s's point == JSON" % (c, src, r))
                check(abs(float(e.get("cx")) - (x0 + fx * w)) < 0.006 and
                      abs(float(e.get("cy")) - (y0 + h - ty * h)) < 0.006,
                      "%s %s: %s drawn at its (1-specificity, sensitivity)" % (c, src, r))
            mean = [e for e in root.iter(SVG + "g") if e.get("class") == "reader-mean"]
            check(len(mean) == 1 and close(float(mean[0].get("data-fpr")), mean_fpr) and
                  close(float(mean[0].get("data-tpr")), mean_tpr), "%s %s: the mean point" % (c, src))
            check(len([e for e in root.iter(SVG + "polyline") if e.get("class") == "model-roc"]) == 1,
                  "%s %s: the model's ROC drawn" % (c, src))
    # without a truth: no figure, no vs_truth, the report says why
    out, d = os.path.join(TMP, "readers_nt.json"), os.path.join(TMP, "readers_nt")
    run(["readers", "--class", "Edema", "--reader", "a=" + os.path.join(rad, "bc4.csv"),
         "--reader", "b=" + os.path.join(rad, "bc6.csv"), "--model", "m=" + PRED % "drnet",
         "--threshold", "0.5", "--bootstrap", "0", "--json", out, "--report", d])
    check("vs_truth" not in json.load(open(out)), "no vs_truth without --truth")
    check("needs one" in open(os.path.join(d, "report.html")).read(), "report: figure needs a truth")


def main():
    if not CHEXNET or not os.path.exists(CHEXNET):
        print("CHEXNET binary not found")
        return 77
    for p in (CHEXPERT, KERMANY):
        if not os.path.exists(p):
            print("SKIP: shared data not found: %s" % p)
            return 77
    os.makedirs(TMP, exist_ok=True)
    for t in (test_calibration_edges, test_calibration_chexpert, test_band_oracle, test_band_properties,
              test_provenance_evaluate, test_readers_figure):
        print("==", t.__name__, flush=True)
        t()
    if FAILS:
        print("%d failures" % len(FAILS))
        return 1
    print("all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
