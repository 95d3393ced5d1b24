"""Calibration arithmetic: chexnet's temperature fit and operating thresholds
against independent computations, and the metadata's load errors.

  - the temperature (calib_tool fit) against scipy's bounded scalar
    minimisation of the same NLL in float64, and a fine grid;
  - Youden / sensitivity / specificity / F1 thresholds (calib_tool) against
    scikit-learn's roc_curve and precision_recall_curve on the same
    probabilities, ties included; ECE against numpy; percentiles against
    numpy.percentile;
  - malformed "thresholds" / "temperature" metadata (JSON, count, range):
    load errors naming the file and the key.
(`chexnet calibrate` and predict's positive flag end to end:
test_calibrate_e2e.py.)
"""
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cxtest  # noqa: E402

import numpy as np  # noqa: E402

SOURCE = os.environ.get("CX_SOURCE") or os.path.join(os.path.dirname(__file__), "..", "..")
WORK = os.path.join(cxtest.TMP, "test_calibrate.%d" % os.getpid())
TOOL = cxtest.tool("calib_tool")
failures = []


def check(cond, msg):
    print(("PASS " if cond else "FAIL ") + msg, flush=True)
    if not cond:
        failures.append(msg)


def tool(args, lines):
    r = subprocess.run([TOOL] + args, input="\n".join(lines) + "\n", capture_output=True,
                       text=True)
    if r.returncode != 0:
        raise SystemExit("calib_tool %s failed: %s" % (args, r.stderr))
    return json.loads(r.stdout)


def f32(a):
    return np.asarray(a, dtype=np.float32)


def nll(z, y, T):
    x = z.astype(np.float64) / T
    return float(np.mean(np.logaddexp(0, x) - y * x))


# ------------------------------------------------------------ arithmetic

def test_temperature():
    from scipy.optimize import minimize_scalar
    rng = np.random.default_rng(0)
    for case, (n, scale, true_T) in enumerate([(500, 3.0, 2.5), (300, 1.0, 0.4),
                                                (57, 6.0, 1.0)]):
        z = f32(rng.normal(0, scale, n))
        y = (rng.random(n) < 1 / (1 + np.exp(-z.astype(np.float64) / true_T))).astype(int)
        got = tool(["fit"], ["%.9g %d" % (a, b) for a, b in zip(z, y)])
        # scipy: bounded Brent on log T, to a tolerance far below ours
        res = minimize_scalar(lambda u: nll(z, y, np.exp(u)), bounds=(np.log(0.01), np.log(100)),
                              method="bounded", options={"xatol": 1e-12, "maxiter": 2000})
        T_ref = float(np.exp(res.x))
        grid = np.exp(np.linspace(np.log(0.01), np.log(100), 20001))
        vals = [nll(z, y, T) for T in grid]
        T_grid = float(grid[int(np.argmin(vals))])
        print("case %d: T chexnet %.12g, scipy %.12g, grid %.6g (n=%d)" % (
            case, got["T"], T_ref, T_grid, n))
        check(abs(got["T"] - T_ref) <= 1e-6 * T_ref,
              "temperature %d: chexnet %.12g vs scipy %.12g" % (case, got["T"], T_ref))
        check(got["nll_T"] <= nll(z, y, T_ref) + 1e-12 and got["nll_T"] <= min(vals) + 1e-12,
              "temperature %d: chexnet's NLL %.15g is the minimum (scipy %.15g, grid %.15g)" % (
                  case, got["nll_T"], nll(z, y, T_ref), min(vals)))
        check(abs(got["nll_1"] - nll(z, y, 1.0)) <= 1e-12,
              "NLL at T=1 %d: %.15g vs %.15g" % (case, got["nll_1"], nll(z, y, 1.0)))
        check(abs(got["T"] - T_grid) <= 0.001 * T_grid, "temperature %d: near the grid's" % case)
        check(not got["at_bound"], "temperature %d: not at a bound" % case)
    # separable: the NLL falls all the way to the bound
    z = f32([-3, -2, -1, 1, 2, 3])
    y = [0, 0, 0, 1, 1, 1]
    got = tool(["fit"], ["%.9g %d" % (a, b) for a, b in zip(z, y)])
    check(got["at_bound"] == 1 and abs(got["T"] - 0.01) < 1e-12,
          "separable classes: T at the lower bound (%r)" % got)


def sk_thresholds(p, y, rule, x=None):
    """The reference: scikit-learn's curves on the same probabilities. Ties
    between candidates go to the highest threshold."""
    from sklearn.metrics import precision_recall_curve, roc_curve
    P, N = int(np.sum(y)), int(len(y) - np.sum(y))
    fpr, tpr, thr = roc_curve(y, p.astype(np.float64), drop_intermediate=False)
    fpr, tpr, thr = fpr[1:], tpr[1:], thr[1:]  # the first point is "nothing positive"
    tps = np.rint(tpr * P).astype(np.int64)
    fps = np.rint(fpr * N).astype(np.int64)
    if rule == "youden":
        j = tps * N - fps * P  # (tpr - fpr) * P * N, exact
        return float(thr[int(np.argmax(j))])  # argmax: the first = the highest
    if rule == "sensitivity":
        return float(thr[int(np.nonzero(tpr >= x)[0][0])])
    if rule == "specificity":
        ok = np.nonzero(1 - fpr >= x)[0]
        return float(thr[int(ok[-1])]) if len(ok) else None
    if rule == "f1":
        prec, rec, t2 = precision_recall_curve(y, p.astype(np.float64))
        prec, rec = prec[:-1], rec[:-1]  # the last point has no threshold
        from fractions import Fraction
        best, bt = None, None
        for pr, rc, t in zip(prec, rec, t2):  # ascending thresholds
            tp = round(rc * P)
            fp = round(tp / pr) - tp if pr > 0 else 0
            f1 = Fraction(2 * tp, tp + fp + P)
            if best is None or f1 >= best:  # ties: the later = the higher threshold
                best, bt = f1, t
        return float(bt)
    raise ValueError(rule)


def test_thresholds():
    rng = np.random.default_rng(1)
    for case in range(6):
        n = [200, 37, 500, 64, 1000, 12][case]
        y = (rng.random(n) < [0.3, 0.5, 0.1, 0.6, 0.25, 0.5][case]).astype(int)
        y[0], y[1] = 0, 1
        p = 1 / (1 + np.exp(-(rng.normal(0, 1, n) + 1.2 * y)))
        if case % 2 == 0:
            p = np.round(p, 2)  # many ties
        p = f32(np.clip(p, 1e-4, 1 - 1e-4))
        lines = ["%.9g %d" % (a, b) for a, b in zip(p, y)]
        for rule, x in (("youden", None), ("f1", None), ("sensitivity", 0.9),
                        ("sensitivity", 0.5), ("specificity", 0.8), ("specificity", 0.95)):
            got = tool(["threshold", rule] + ([repr(x)] if x is not None else []), lines)
            want = sk_thresholds(p, y, rule, x)
            label = "%s%s case %d (n=%d)" % (rule, "=%g" % x if x is not None else "", case, n)
            if want is None:
                check("error" in got, "%s: no threshold reaches it: an error" % label)
                continue
            check("threshold" in got and np.float32(got["threshold"]) == np.float32(want),
                  "%s: chexnet %s, scikit-learn %.9g" % (label, got.get("threshold"), want))
            t = np.float32(got.get("threshold", 0.5))
            sens = np.mean(p[y == 1] >= t)
            spec = np.mean(p[y == 0] < t)
            check(abs(got.get("sens", -1) - sens) < 1e-15 and abs(got.get("spec", -1) - spec) < 1e-15,
                  "%s: sensitivity/specificity at the threshold" % label)
        # ECE: 15 equal-width bins
        bins = np.minimum(np.floor(p.astype(np.float64) * 15).astype(int), 14)
        ece = sum(abs(p[bins == b].astype(np.float64).sum() - y[bins == b].sum()) / n
                  for b in range(15) if np.any(bins == b))
        got = tool(["ece", "15"], lines)
        check(abs(got["ece"] - ece) < 1e-12, "ECE case %d: %.15g vs numpy %.15g" % (
            case, got["ece"], ece))
    v = f32(rng.normal(0, 5, 4901))
    for q in (1, 99, 50, 0, 100):
        got = tool(["percentile", str(q)], ["%.9g" % a for a in v])
        want = float(np.percentile(v.astype(np.float64), q))
        check(abs(got["value"] - want) <= 1e-12 * max(1, abs(want)),
              "percentile %g: %.12g vs numpy %.12g" % (q, got["value"], want))
    # a class without negatives: an error, not a number
    got = tool(["threshold", "youden"], ["0.5 1", "0.7 1"])
    check("error" in got, "youden without negatives: an error (%r)" % got)


def run(args, ok=True):
    r = cxtest.run([cxtest.CHEXNET] + args)
    if ok and r.returncode != 0:
        raise SystemExit("chexnet %s failed (%d): %s" % (" ".join(args), r.returncode, r.stderr))
    return r


def test_metadata_errors():
    """Malformed thresholds / temperature: load errors naming the file and key."""
    torch = cxtest.need_torch()
    import torchvision
    torch.manual_seed(0)
    m = torchvision.models.DenseNet(growth_rate=8, block_config=(2, 2), num_init_features=16,
                                    bn_size=2, num_classes=2)
    sd = m.state_dict()
    base = {"classes": '["A","B"]'}
    cases = [("thresholds", "[0.5, 0.5", "not a JSON array"),
             ("thresholds", "[0.5]", "2 classes"),
             ("thresholds", "[0.5, 1]", "(0, 1)"),
             ("thresholds", "[0.5, 0]", "(0, 1)"),
             ("thresholds", '[0.5, "0.3"]', "not a number"),
             ("thresholds", "0.5", "JSON array"),
             ("temperature", "[1, 0]", "positive"),
             ("temperature", "[1, -1]", "positive"),
             ("temperature", "[1, 1e39]", "positive"),
             ("temperature", "[1, 2, 3]", "2 classes")]
    for key, val, needle in cases:
        p = os.path.join(WORK, "bad-%s.safetensors" % key)
        cxtest.save_safetensors(p, sd, dict(base, **{key: val}))
        r = run(["info", p], ok=False)
        check(r.returncode == 1 and p in r.stderr and "'%s'" % key in r.stderr and
              needle in r.stderr and "Traceback" not in r.stderr,
              "%s = %s: %s" % (key, val, r.stderr.strip()))
        r = run(["predict", "--model", p, "--format", "json",
                 os.path.join(SOURCE, "samples", "nih-00000820_000.png")], ok=False)
        check(r.returncode != 0 and "'%s'" % key in r.stderr, "predict refuses %s = %s" % (key, val))
    p = os.path.join(WORK, "good.safetensors")
    cxtest.save_safetensors(p, sd, dict(base, thresholds="[0.25, 0.75]", temperature="[2, 0.5]"))
    r = run(["info", p])
    check("thresholds" in r.stdout, "valid thresholds and temperature load")


def main():
    if not os.path.exists(TOOL):
        raise SystemExit("calib_tool not built: %s" % TOOL)
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    test_temperature()
    test_thresholds()
    test_metadata_errors()
    if failures:
        print("%d failure(s)" % len(failures))
        sys.exit(1)
    shutil.rmtree(WORK, ignore_errors=True)
    print("OK")


if __name__ == "__main__":
    main()
