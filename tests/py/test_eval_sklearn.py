#!/usr/bin/python3
"""Oracle test of `chexnet evaluate` and `chexnet readers` against scikit-learn
and independent numpy code, on the real label files in ../shared/data.

- AUROC == sklearn.metrics.roc_auc_score to 1e-9 (ChestX-ray14 metadata labels
  with synthetic and with heavily tied scores; the split list; CheXpert model
  scores > 1 vs the CheXpert ground truth); ROC points == sklearn roc_curve.
- sensitivity/specificity/PPV/NPV/F1 == sklearn at the operating point, and the
  max-F1 operating point chosen on validation predictions == an independent
  search.
- Bootstrap: same seed -> same CIs, any thread count; the resample indices
  reproduced by a Python implementation of the documented PRNG; the CIs equal
  an independent numpy computation fed the same resamples; coverage sanity on
  binormal data with a known AUROC.
- Reader study (CheXpert benchmark radiologists, whose files swap two columns
  relative to the ground truth) == an independent computation, CIs included.
- Bad input: clear errors or warnings, never a crash or NaN printed as number.
"""
import csv
import gzip
import json
import math
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import numpy as np
from sklearn.metrics import (f1_score, precision_score, recall_score,
                             roc_auc_score, roc_curve)

CHEXNET = os.environ.get("CHEXNET")
SHARED = os.environ.get("CX_SHARED", "")
TMP = os.path.join(os.environ.get("CX_TMP", "/tmp"), "py_eval")
DATA = os.path.join(SHARED, "data")
NIH_META = os.path.join(DATA, "nih/metadata/Data_Entry_2017_v2020.csv.gz")
SPLIT = os.path.join(DATA, "nih/split-70-10-20")
CHEXPERT = os.path.join(DATA, "chexpert-test-labels")
CLASSES = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass",
           "Nodule", "Pneumonia", "Pneumothorax", "Consolidation", "Edema",
           "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia"]

FAILS = []


def check(cond, msg):
    if not cond:
        FAILS.append(msg)
        print("FAIL:", msg)


def run(args, expect=0):
    p = subprocess.run([CHEXNET] + args, capture_output=True, text=True, timeout=600)
    if expect is not None and p.returncode != expect:
        print(p.stdout[-3000:], p.stderr[-3000:])
        raise SystemExit("chexnet %s: exit %d, expected %d" % (" ".join(args[:2]), p.returncode, expect))
    return p


def write_pred(path, ids, scores, classes, fmt="%.6f"):
    with open(path, "w") as f:
        f.write("image," + ",".join(classes) + "\n")
        for i, s in zip(ids, scores):
            f.write(i + "," + ",".join(fmt % v for v in s) + "\n")


# ------------------------------------------------------------ PRNG oracle
M64 = (1 << 64) - 1


def _rotl(x, k):
    return ((x << k) | (x >> (64 - k))) & M64


def resample(seed, b, n):
    """cx_bootstrap_indices reimplemented from its documentation."""
    x = seed ^ ((0x9E3779B97F4A7C15 * (b + 1)) & M64)
    s = []
    for _ in range(4):
        x = (x + 0x9E3779B97F4A7C15) & M64
        z = x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        s.append(z ^ (z >> 31))

    def nxt():
        r = (_rotl((s[1] * 5) & M64, 7) * 9) & M64
        t = (s[1] << 17) & M64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = _rotl(s[3], 45)
        return r

    out = np.empty(n, dtype=np.int64)
    thr = ((1 << 32) - n) % n
    for i in range(n):
        m = (nxt() >> 32) * n
        while (m & 0xFFFFFFFF) < thr:
            m = (nxt() >> 32) * n
        out[i] = m >> 32
    return out


# ------------------------------------------------------------ label oracles
def nih_meta_labels():
    lab = {}
    with gzip.open(NIH_META, "rt") as f:
        r = csv.reader(f)
        h = next(r)
        ii, fi = h.index("Image Index"), h.index("Finding Labels")
        for row in r:
            found = set(x.replace(" ", "_") for x in row[fi].split("|"))
            lab[row[ii]] = [1 if c in found else 0 for c in CLASSES]
    return lab


def split_labels(name):
    lab = {}
    with open(os.path.join(SPLIT, name)) as f:
        for line in f:
            t = line.split()
            if t:
                lab[t[0]] = [int(v) for v in t[1:]]
    return lab


def test_auroc_nih_metadata(rng):
    lab = nih_meta_labels()
    ids = sorted(lab)
    y = np.array([lab[i] for i in ids])
    # synthetic scores, then heavily tied scores (1 decimal)
    s = 1 / (1 + np.exp(-(rng.normal(size=y.shape) + 1.0 * y - 1.5)))
    for tag, sc, fmt in (("synthetic", s, "%.6f"), ("tied", np.round(s, 1), "%.1f")):
        pred = os.path.join(TMP, "nih_%s.csv" % tag)
        # full paths in the image column: matched by file name
        write_pred(pred, ["/data/nih/images/" + i for i in ids], sc, CLASSES, fmt)
        scr = np.array([[float(fmt % v) for v in row] for row in sc]) if tag == "tied" else \
            np.array([[float("%.6f" % v) for v in row] for row in sc])
        out = os.path.join(TMP, "nih_%s.json" % tag)
        run(["evaluate", "--pred", pred, "--labels", NIH_META, "--bootstrap", "0", "--json", out])
        j = json.load(open(out))
        check(j["n_images"] == len(ids), "n_images")
        for k, c in enumerate(CLASSES):
            ref = roc_auc_score(y[:, k], scr[:, k])
            got = j["auroc"][c]["value"]
            check(abs(ref - got) < 1e-9, "%s %s AUROC %r vs sklearn %r" % (tag, c, got, ref))
            fpr, tpr, thr = roc_curve(y[:, k], scr[:, k])
            roc = j["roc"][c]
            check(len(roc["fpr"]) == len(fpr), "%s %s ROC length %d vs %d" % (tag, c, len(roc["fpr"]), len(fpr)))
            if len(roc["fpr"]) == len(fpr):
                check(np.allclose(roc["fpr"], fpr, atol=1e-9, rtol=0) and
                      np.allclose(roc["tpr"], tpr, atol=1e-9, rtol=0) and
                      np.allclose(roc["thresholds"][1:], thr[1:], atol=1e-9, rtol=0) and
                      roc["thresholds"][0] is None,
                      "%s %s ROC points differ from sklearn roc_curve" % (tag, c))
        mean = np.mean([roc_auc_score(y[:, k], scr[:, k]) for k in range(14)])
        check(abs(j["mean_auroc"]["value"] - mean) < 1e-9, "%s mean AUROC" % tag)


def best_threshold(s, y):
    """Independent max-F1 search: every distinct score, positive when >= t,
    ties to the larger threshold."""
    best, bt = -1, None
    for t in sorted(set(s), reverse=True):
        p = s >= t
        tp = np.sum(p & (y == 1))
        fp = np.sum(p & (y == 0))
        fn = np.sum(~p & (y == 1))
        f = 2 * tp / (2 * tp + fp + fn)
        if f > best + 1e-15:
            best, bt = f, t
    return bt


def test_split_operating_points(rng):
    test = split_labels("test_list.txt")
    val = split_labels("val_list.txt")
    tid, vid = list(test), list(val)
    yt = np.array([test[i] for i in tid])
    yv = np.array([val[i] for i in vid])
    st = np.round(1 / (1 + np.exp(-(rng.normal(size=yt.shape) + 1.2 * yt - 1))), 3)
    sv = np.round(1 / (1 + np.exp(-(rng.normal(size=yv.shape) + 1.2 * yv - 1))), 3)
    pt, pv = os.path.join(TMP, "split_test.csv"), os.path.join(TMP, "split_val.csv")
    write_pred(pt, tid, st, CLASSES, "%.3f")
    write_pred(pv, vid, sv, CLASSES, "%.3f")
    # labels for both splits in one file (the split lists concatenated)
    lab = os.path.join(TMP, "split_labels.txt")
    with open(lab, "w") as f:
        for d in (test, val):
            for i, v in d.items():
                f.write(i + " " + " ".join(map(str, v)) + "\n")
    out = os.path.join(TMP, "split.json")
    run(["evaluate", "--pred", pt, "--labels", lab, "--val-pred", pv, "--bootstrap", "0",
         "--json", out])
    j = json.load(open(out))
    for k, c in enumerate(CLASSES[:6]):  # the search below is slow-ish in Python
        t = best_threshold(sv[:, k], yv[:, k])
        op = j["operating_points"][c]
        check(op["chosen_on"] == "validation" and op["rule"] == "maxf1", "%s rule" % c)
        check(abs(op["threshold"] - t) < 1e-12, "%s max-F1 threshold %r vs %r" % (c, op["threshold"], t))
        pred = (st[:, k] >= op["threshold"]).astype(int)
        ref = {"sensitivity": recall_score(yt[:, k], pred),
               "specificity": recall_score(1 - yt[:, k], 1 - pred),
               "ppv": precision_score(yt[:, k], pred, zero_division=0),
               "npv": precision_score(1 - yt[:, k], 1 - pred, zero_division=0),
               "f1": f1_score(yt[:, k], pred, zero_division=0)}
        for m, v in ref.items():
            check(abs(op[m]["value"] - v) < 1e-12, "%s %s %r vs sklearn %r" % (c, m, op[m]["value"], v))
        check(abs(j["auroc"][c]["value"] - roc_auc_score(yt[:, k], st[:, k])) < 1e-9, "split %s AUROC" % c)
    # fixed threshold, and zero-division (nothing called positive)
    out2 = os.path.join(TMP, "split_thr.json")
    run(["evaluate", "--pred", pt, "--labels", lab, "--threshold", "2", "--bootstrap", "0",
         "--classes", "Hernia,Mass", "--json", out2])
    j2 = json.load(open(out2))
    check(list(j2["auroc"]) == ["Hernia", "Mass"], "--classes order")
    op = j2["operating_points"]["Hernia"]
    check(op["ppv"]["value"] == 0 and "ppv" in op["zero_division"], "zero_division reported")


def test_chexpert_auroc():
    gt = os.path.join(CHEXPERT, "groundtruth.csv")
    rows = {r["Study"]: r for r in csv.DictReader(open(gt))}
    for model in ("desmond", "drnet"):
        p = os.path.join(CHEXPERT, "example_models/predictions/standard/%s_predictions.csv" % model)
        out = os.path.join(TMP, "chexpert_%s.json" % model)
        r = run(["evaluate", "--pred", p, "--labels", gt, "--bootstrap", "200", "--json", out])
        j = json.load(open(out))
        preds = list(csv.DictReader(open(p)))
        for c in j["auroc"]:
            y = np.array([int(rows[q["Study"]][c]) for q in preds])
            s = np.array([float(q[c]) for q in preds])
            ref = roc_auc_score(y, s)
            check(abs(j["auroc"][c]["value"] - ref) < 1e-9, "chexpert %s %s AUROC" % (model, c))
        if model == "desmond":
            check("outside [0,1]" in r.stderr, "scores > 1 noted")
    # labels with uncertain (-1) and blank entries (the CheXbert labeller's
    # output): those images are left out of that class, in the bootstrap too
    lab = os.path.join(CHEXPERT, "labeler/chexbert_labels.csv")
    lrows = {r["Study"]: r for r in csv.DictReader(open(lab))}
    p = os.path.join(CHEXPERT, "example_models/predictions/standard/drnet_predictions.csv")
    preds = list(csv.DictReader(open(p)))
    out, dump, B = os.path.join(TMP, "chexbert.json"), os.path.join(TMP, "chexbert_rs.txt"), 200
    r = run(["evaluate", "--pred", p, "--labels", lab, "--bootstrap", str(B), "--seed", "3",
             "--json", out, "--dump-resamples", dump, "--dump-count", str(B)])
    j = json.load(open(out))
    idx = np.loadtxt(dump, dtype=np.int64)
    check("missing/uncertain" in r.stderr, "missing labels noted")
    for c in j["auroc"]:
        v = np.array([lrows[q["Study"]][c] in ("0.0", "1.0") for q in preds])
        y = np.array([int(float(lrows[q["Study"]][c])) if ok else -1 for q, ok in zip(preds, v)])
        s = np.array([float(q[c]) for q in preds])
        check(j["auroc"][c]["n_missing"] == int((~v).sum()), "chexbert %s missing count" % c)
        check(abs(j["auroc"][c]["value"] - roc_auc_score(y[v], s[v])) < 1e-9, "chexbert %s AUROC" % c)
        aucs = []
        for b in range(B):
            vb = v[idx[b]]
            yb, sb = y[idx[b]][vb], s[idx[b]][vb]
            if yb.min() != yb.max():
                aucs.append(roc_auc_score(yb, sb))
        lo, hi = np.percentile(aucs, [2.5, 97.5])
        got = j["auroc"][c]["ci95"]
        check(abs(got[0] - lo) < 1e-9 and abs(got[1] - hi) < 1e-9, "chexbert %s CI with missing labels" % c)


def test_bootstrap_oracle(rng):
    """CIs vs numpy fed the same resamples (dumped, and re-generated from
    the documented PRNG)."""
    gt = os.path.join(CHEXPERT, "groundtruth.csv")
    p = os.path.join(CHEXPERT, "example_models/predictions/standard/drnet_predictions.csv")
    B = 300
    dump = os.path.join(TMP, "resamples.txt")
    outs = []
    for threads in ("1", "2"):
        out = os.path.join(TMP, "boot_%s.json" % threads)
        run(["evaluate", "--pred", p, "--labels", gt, "--bootstrap", str(B), "--seed", "1234",
             "--threads", threads, "--json", out, "--dump-resamples", dump, "--dump-count", str(B)])
        outs.append(json.load(open(out)))
    for c in outs[0]["auroc"]:
        check(outs[0]["auroc"][c] == outs[1]["auroc"][c], "CIs independent of the thread count (%s)" % c)
        check(outs[0]["operating_points"][c] == outs[1]["operating_points"][c], "op CIs vs threads (%s)" % c)
    j = outs[0]
    idx = np.loadtxt(dump, dtype=np.int64)
    check(idx.shape == (B, 500), "dump shape %r" % (idx.shape,))
    for b in (0, 1, 7, B - 1):
        check(np.array_equal(resample(1234, b, 500), idx[b]), "PRNG reproduced in Python (resample %d)" % b)
    rows = {r["Study"]: r for r in csv.DictReader(open(gt))}
    preds = list(csv.DictReader(open(p)))
    for c in j["auroc"]:
        y = np.array([int(rows[q["Study"]][c]) for q in preds])
        s = np.array([float(q[c]) for q in preds])
        aucs, f1s, sens = [], [], []
        for b in range(B):
            yb, sb = y[idx[b]], s[idx[b]]
            if yb.min() == yb.max():
                continue
            aucs.append(roc_auc_score(yb, sb))
            pb = (sb >= 0.5).astype(int)
            f1s.append(f1_score(yb, pb, zero_division=0))
            sens.append(recall_score(yb, pb))
        lo, hi = np.percentile(aucs, [2.5, 97.5])
        got = j["auroc"][c]["ci95"]
        check(abs(got[0] - lo) < 1e-9 and abs(got[1] - hi) < 1e-9,
              "%s AUROC CI %r vs numpy %r" % (c, got, (lo, hi)))
        for name, vals in (("f1", f1s), ("sensitivity", sens)):
            lo, hi = np.percentile(vals, [2.5, 97.5])
            got = j["operating_points"][c][name]["ci95"]
            check(abs(got[0] - lo) < 1e-9 and abs(got[1] - hi) < 1e-9, "%s %s CI" % (c, name))
    # mean AUROC CI
    ys = np.array([[int(rows[q["Study"]][c]) for c in j["auroc"]] for q in preds])
    ss = np.array([[float(q[c]) for c in j["auroc"]] for q in preds])
    means = []
    for b in range(B):
        yb, sb = ys[idx[b]], ss[idx[b]]
        if any(yb[:, k].min() == yb[:, k].max() for k in range(ys.shape[1])):
            continue
        means.append(np.mean([roc_auc_score(yb[:, k], sb[:, k]) for k in range(ys.shape[1])]))
    lo, hi = np.percentile(means, [2.5, 97.5])
    got = j["mean_auroc"]["ci95"]
    check(abs(got[0] - lo) < 1e-9 and abs(got[1] - hi) < 1e-9, "mean AUROC CI")


def test_coverage(rng):
    """200 independent binormal data sets (as 200 classes of one run), true
    AUROC Phi(d / sqrt 2); about 95% of the percentile CIs should cover it."""
    n, K, d = 200, 200, 1.0
    true_auc = 0.5 * (1 + math.erf(d / math.sqrt(2) / math.sqrt(2)))
    y = (rng.random((n, K)) < 0.5).astype(int)
    s = rng.normal(size=(n, K)) + d * y
    cls = ["c%03d" % k for k in range(K)]
    ids = ["i%04d.png" % i for i in range(n)]
    pred, lab = os.path.join(TMP, "cov_pred.csv"), os.path.join(TMP, "cov_labels.csv")
    write_pred(pred, ids, s, cls, "%.9f")
    write_pred(lab, ids, y, cls, "%d")
    out = os.path.join(TMP, "cov.json")
    run(["evaluate", "--pred", pred, "--labels", lab, "--bootstrap", "400", "--seed", "5",
         "--json", out])
    j = json.load(open(out))
    cover = np.mean([j["auroc"][c]["ci95"][0] <= true_auc <= j["auroc"][c]["ci95"][1] for c in cls])
    print("coverage of 95%% CIs: %.3f (true AUROC %.4f)" % (cover, true_auc))
    check(0.88 <= cover <= 0.99, "coverage %.3f outside [0.88, 0.99]" % cover)


def f1(a, b):
    return f1_score(b, a, zero_division=0)


def test_readers():
    rad = os.path.join(CHEXPERT, "radiologists/benchmark_radiologists")
    gt = os.path.join(CHEXPERT, "groundtruth.csv")
    readers = ["bc4", "bc6", "bc8"]
    model = os.path.join(CHEXPERT, "example_models/decisions/standard/jfaboy_decisions.csv")

    def col(path, c, ids=None):
        rows = {r["Study"]: r for r in csv.DictReader(open(path))}
        ids = ids or list(rows)
        return ids, np.array([int(float(rows[i][c])) for i in ids])

    for c, with_model in (("Lung Opacity", False), ("Pleural Effusion", True), ("Atelectasis", True)):
        B = 200
        ids, _ = col(os.path.join(rad, "bc4.csv"), c)
        R = [col(os.path.join(rad, r + ".csv"), c, ids)[1] for r in readers]
        if with_model:
            M = col(model, c, ids)[1]
            margs = ["--model", "jfaboy=" + model]
        else:
            M = col(gt, c, ids)[1]  # the majority vote as a "model": columns in another order
            margs = ["--model", "majority=" + gt]
        T = col(gt, c, ids)[1]
        out = os.path.join(TMP, "readers.json")
        args = ["readers", "--class", c] + sum([["--reader", "%s=%s" % (r, os.path.join(rad, r + ".csv"))]
                                               for r in readers], []) + margs + \
            ["--truth", gt, "--bootstrap", str(B), "--seed", "9", "--json", out]
        run(args)
        j = json.load(open(out))
        mname = list(j["models"])[0]

        def figures(idx):
            Rb = [r[idx] for r in R]
            rf = [np.mean([f1(Rb[a], Rb[g]) for g in range(3) if g != a]) for a in range(3)]
            mf = np.mean([f1(M[idx], Rb[g]) for g in range(3)])
            avg = np.mean(rf)
            return rf, mf, avg, mf - avg

        rf, mf, avg, diff = figures(np.arange(len(ids)))
        for a, r in enumerate(readers):
            check(abs(j["readers"][r]["f1"]["value"] - rf[a]) < 1e-12, "%s reader %s F1" % (c, r))
            check(abs(j["readers"][r]["f1_vs_truth"]["value"] - f1(R[a], T)) < 1e-12, "%s %s vs truth" % (c, r))
        check(abs(j["models"][mname]["f1"]["value"] - mf) < 1e-12, "%s model F1" % c)
        check(abs(j["reader_average"]["value"] - avg) < 1e-12, "%s reader average" % c)
        check(abs(j["difference"][mname]["value"] - diff) < 1e-12, "%s difference" % c)
        # CIs from the same resamples (PRNG reproduced in Python)
        boots = [figures(resample(9, b, len(ids))) for b in range(B)]
        lo, hi = np.percentile([x[3] for x in boots], [2.5, 97.5])
        got = j["difference"][mname]["ci95"]
        check(abs(got[0] - lo) < 1e-9 and abs(got[1] - hi) < 1e-9, "%s difference CI %r vs %r" % (c, got, (lo, hi)))
        check(j["difference"][mname]["significant"] == bool(lo > 0 or hi < 0), "%s conclusion" % c)
        lo, hi = np.percentile([x[0][1] for x in boots], [2.5, 97.5])
        got = j["readers"]["bc6"]["f1"]["ci95"]
        check(abs(got[0] - lo) < 1e-9 and abs(got[1] - hi) < 1e-9, "%s bc6 CI" % c)
    # a missing class column is an error naming it
    p = run(["readers", "--class", "Nodule", "--reader", "a=" + os.path.join(rad, "bc4.csv"),
             "--reader", "b=" + os.path.join(rad, "bc6.csv"), "--model", "m=" + model], expect=1)
    check("Nodule" in p.stderr, "readers: missing class named")


def test_bad_input():
    lab = os.path.join(TMP, "bad_labels.csv")
    with open(lab, "w") as f:
        f.write("image,Edema,Mass\na.png,0,1\nb.png,1,1\nc.png,0,1\n")

    def pred(text):
        p = os.path.join(TMP, "bad_pred.csv")
        with open(p, "w") as f:
            f.write(text)
        return p

    r = run(["evaluate", "--pred", pred("image,Edema\na.png,0.1\nz.png,0.5\n"), "--labels", lab], expect=1)
    check("z.png" in r.stderr and "no label" in r.stderr, "missing label names the image: " + r.stderr)
    out = os.path.join(TMP, "bad.json")
    r = run(["evaluate", "--pred", pred("image,Edema,Mass\na.png,0.1,0.2\nb.png,0.5,0.3\nc.png,0.2,0.9\n"),
             "--labels", lab, "--bootstrap", "50", "--json", out])
    j = json.load(open(out))
    check(j["auroc"]["Mass"]["value"] is None and "undefined" in r.stderr, "no negatives: null + warning")
    check("nan" not in r.stdout.lower(), "no NaN printed")
    check(j["mean_auroc"]["value"] == j["auroc"]["Edema"]["value"], "mean over defined classes only")
    r = run(["evaluate", "--pred", pred("image,Edema\na.png,0.1\na.png,0.3\n"), "--labels", lab], expect=1)
    check("twice" in r.stderr, "duplicate rows: " + r.stderr)
    r = run(["evaluate", "--pred", pred("image,Edema\na.png,0.1\nb.png,0.3\nb.png,0.3\nc.png,0.2\n"),
             "--labels", lab, "--bootstrap", "0"])
    check("duplicate" in r.stderr, "identical duplicate: warning")
    r = run(["evaluate", "--pred", pred("image,Edema\na.png,0.1\nb.png,abc\n"), "--labels", lab], expect=1)
    check("bad_pred.csv:3:" in r.stderr and "abc" in r.stderr, "non-numeric score with line: " + r.stderr)
    r = run(["evaluate", "--pred", pred("image,Edema\na.png,-4\nb.png,7\nc.png,1\n"), "--labels", lab,
             "--bootstrap", "0"])
    check("outside [0,1]" in r.stderr, "scores outside [0,1]: noted")
    r = run(["evaluate", "--pred", pred("image,Oedema\na.png,0.1\nb.png,0.3\n"), "--labels", lab], expect=1)
    check("Oedema" in r.stderr, "mismatched class name: " + r.stderr)
    r = run(["evaluate", "--pred", pred("image,Edema\na.png,0.1\n\"b.png,0.3\n"), "--labels", lab], expect=1)
    check("unterminated" in r.stderr, "unterminated quote: " + r.stderr)
    r = run(["evaluate", "--pred", pred("image,Edema\na.png,0.1\nb.png,0.3\n"), "--labels", lab,
             "--operating-point", "youden"], expect=2)
    check("--val-pred" in r.stderr, "youden without --val-pred")
    run(["evaluate", "--labels", lab], expect=2)


def test_report(rng):
    lab = os.path.join(SPLIT, "test_list.txt")
    ids = [l.split()[0] for l in open(lab) if l.strip()][:3000]
    labels = split_labels("test_list.txt")
    y = np.array([labels[i] for i in ids])
    s = 1 / (1 + np.exp(-(rng.normal(size=y.shape) + y)))
    p = os.path.join(TMP, "rep_pred.csv")
    write_pred(p, ids, s, CLASSES)
    d = os.path.join(TMP, "report")
    run(["evaluate", "--pred", p, "--labels", lab, "--bootstrap", "100", "--report", d])
    html = open(os.path.join(d, "report.html")).read()
    check("Wang et al. 2017" in html and "0.9371" in html, "paper's Table 2 beside ours")
    check(html.count("<svg") == 3, "three inline SVG plots (ROC panels, all ROC curves, reliability)")
    for f in ("roc.svg", "roc_panels.svg"):
        root = ET.parse(os.path.join(d, f)).getroot()
        check(root.tag.endswith("svg"), f + " is SVG")
        check(len(root.findall(".//{http://www.w3.org/2000/svg}polyline")) == 14, f + ": 14 curves")


def test_model_path():
    """--model predicts first: its saved predictions, evaluated with --pred,
    give the same figures."""
    model = os.path.join(TMP, "init14.safetensors")
    if run(["init", "-o", model], expect=None).returncode != 0:
        print("   (chexnet init failed: --model path not checked)")
        return
    images = os.path.join(DATA, "nih/images")
    saved, j1, j2 = (os.path.join(TMP, n) for n in ("model_pred.csv", "model1.json", "model2.json"))
    run(["evaluate", "--model", model, "--images", images, "--labels", NIH_META, "--save-pred", saved,
         "--bootstrap", "100", "--json", j1, "--batch", "8"])
    run(["evaluate", "--pred", saved, "--labels", NIH_META, "--bootstrap", "100", "--json", j2])
    a, b = json.load(open(j1)), json.load(open(j2))
    check(a["n_images"] == 22, "22 NIH images predicted")
    roles = [x["role"] for x in a["provenance"]["inputs"]]
    check(roles.count("image") == 22 and "model" in roles and "labels" in roles,
          "--model: the model, the labels and every image in the provenance")
    for c in a["auroc"]:
        check(abs((a["auroc"][c]["value"] or 0) - (b["auroc"][c]["value"] or 0)) < 1e-6,
              "--model vs --pred of the saved predictions (%s)" % c)


def main():
    if not CHEXNET or not os.path.exists(CHEXNET):
        print("CHEXNET binary not found")
        return 77
    for p in (NIH_META, SPLIT, CHEXPERT):
        if not os.path.exists(p):
            print("skipped: %s absent" % p)
            return 77
    os.makedirs(TMP, exist_ok=True)
    rng = np.random.default_rng(20171114)
    for t in (test_bad_input, test_readers, test_chexpert_auroc, test_bootstrap_oracle,
              test_coverage, test_split_operating_points, test_report, test_auroc_nih_metadata, test_model_path):
        print("==", t.__name__, flush=True)
        t0 = time.time()
        t(rng) if t.__code__.co_argcount else t()
        print("   %.1f s" % (time.time() - t0), flush=True)
    if FAILS:
        print("%d failures" % len(FAILS))
        return 1
    print("all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
