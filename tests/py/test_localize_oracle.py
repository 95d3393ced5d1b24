#!/usr/bin/env python3
"""Localisation arithmetic (cx_localize) against an independent numpy
computation, on maps and boxes built here:

  - maps at the image's own size (no interpolation), integer-valued: unique
    peaks inside and outside boxes, peaks on a box's edges (integer and
    fractional), tied peaks, several boxes, a constant map, boxes partly
    outside the image;
  - 7x7 maps upsampled to other sizes (non-square), including a maximum in a
    corner cell, which upsampling turns into a plateau of tied peaks;
  - several classes on one image, a class with no boxes (no figures), and
    the percentile-bootstrap CIs over images (the resampling reimplemented
    from cx_bootstrap_indices's documentation), at thresholds 0, 0.2, 0.5, 1.

The tool (tests/tools/loc_tool) also returns its upsampled maps: they are
checked against a float64 bilinear upsampling (half-pixel centres), and the
oracle computes the pointing game and the IoU on them, so the figures must
agree exactly (the bootstrap's means to 1e-12: sums in another order).
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
import cxtest  # noqa: E402
import numpy as np  # noqa: E402
from test_eval_sklearn import resample  # noqa: E402

TMP = os.path.join(cxtest.TMP, "localize_oracle")
failures = []


def check(name, ok, detail=""):
    print(("PASS " if ok else "FAIL ") + name + (": " + detail if detail else ""), flush=True)
    if not ok:
        failures.append(name)


def upsample64(m, H, W):
    """bilinear, half-pixel centres, edges clamped (cx_cam_upsample)"""
    h, w = m.shape

    def axis(n_out, n_in):
        s = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
        s = np.maximum(s, 0.0)
        a = np.minimum(np.floor(s).astype(np.int64), n_in - 1)
        b = np.minimum(a + 1, n_in - 1)
        return a, b, s - a

    ya, yb, ly = axis(H, h)
    xa, xb, lx = axis(W, w)
    m = m.astype(np.float64)
    t0 = m[ya][:, xa] + lx[None, :] * (m[ya][:, xb] - m[ya][:, xa])
    t1 = m[yb][:, xa] + lx[None, :] * (m[yb][:, xb] - m[yb][:, xa])
    return t0 + ly[:, None] * (t1 - t0)


def box_mask(boxes, W, H):
    cx = np.arange(W) + 0.5
    cy = np.arange(H) + 0.5
    B = np.zeros((H, W), dtype=bool)
    for x, y, w, h in boxes:
        B |= ((cy >= y) & (cy < y + h))[:, None] & ((cx >= x) & (cx < x + w))[None, :]
    return B


def item_figures(U, boxes, thr):
    U = U.astype(np.float64)
    H, W = U.shape
    B = box_mask(boxes, W, H)
    peaks = U == U.max()
    hit = peaks[B].sum() / peaks.sum()
    lo, hi = U.min(), U.max()
    M = (U - lo) >= thr * (hi - lo)
    iou = (M & B).sum() / (M | B).sum()
    return hit, iou


def group_figures(items, fig, sel, nboot, seed):
    idx = [i for i in range(len(items)) if sel(items[i])]
    if not idx:
        return [0, 0] + [None] * 6
    hits = np.array([fig[i][0] for i in idx])
    ious = np.array([fig[i][1] for i in idx])
    imgs = sorted(set(items[i]["image"] for i in idx))
    out = [len(idx), len(imgs), hits.mean(), None, None, ious.mean(), None, None]
    if nboot:
        pos = {g: k for k, g in enumerate(imgs)}
        sh = np.zeros(len(imgs))
        si = np.zeros(len(imgs))
        cnt = np.zeros(len(imgs))
        for i in idx:
            k = pos[items[i]["image"]]
            sh[k] += fig[i][0]
            si[k] += fig[i][1]
            cnt[k] += 1
        bh, bi = [], []
        for b in range(nboot):
            r = resample(seed, b, len(imgs))
            bh.append(sh[r].sum() / cnt[r].sum())
            bi.append(si[r].sum() / cnt[r].sum())
        out[3], out[4] = np.percentile(bh, [2.5, 97.5])
        out[6], out[7] = np.percentile(bi, [2.5, 97.5])
    return out


def run_tool(items, ncls, thr, nboot, seed, tag):
    os.makedirs(TMP, exist_ok=True)  # also when imported by another test
    inp = os.path.join(TMP, tag + ".txt")
    with open(inp, "w") as f:
        f.write("%d %d %.17g %d %d\n" % (len(items), ncls, thr, nboot, seed))
        for it in items:
            m = it["map"]
            f.write("%d %d %d %d %d %d %d\n" % (it["image"], it["cls"], m.shape[0], m.shape[1],
                                                it["W"], it["H"], len(it["boxes"])))
            f.write(" ".join("%.9g" % v for v in m.ravel()) + "\n")
            f.write(" ".join("%.17g" % v for b in it["boxes"] for v in b) + "\n")
    maps = os.path.join(TMP, tag + ".f32")
    r = subprocess.run([cxtest.tool("loc_tool"), inp, maps], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit("loc_tool failed: " + r.stderr)
    raw = np.fromfile(maps, dtype=np.float32)
    ups, off = [], 0
    for it in items:
        n = it["W"] * it["H"]
        ups.append(raw[off:off + n].reshape(it["H"], it["W"]))
        off += n
    return json.loads(r.stdout), ups


def same(a, b, tol=0.0):
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= tol


def compare(tag, items, ncls, thr, nboot, seed, expect=None):
    got, ups = run_tool(items, ncls, thr, nboot, seed, tag)
    # the upsampled maps: float32 rounding of the float64 bilinear values
    worst = 0.0
    for it, U in zip(items, ups):
        ref = upsample64(it["map"].astype(np.float32), it["H"], it["W"])
        scale = max(1.0, float(np.abs(it["map"]).max()))
        worst = max(worst, float(np.abs(U - ref).max()) / scale)
    check("%s: upsampled maps = float64 bilinear (max rel. diff %.1e)" % (tag, worst),
          worst < 1e-6)
    fig = [item_figures(U, it["boxes"], thr) for it, U in zip(items, ups)]
    bad = [i for i, (f, g) in enumerate(zip(fig, got["items"]))
           if f[0] != g[0] or f[1] != g[1]]
    check("%s: pointing game and IoU of %d items, exactly" % (tag, len(items)), not bad,
          "; ".join("item %d: %s vs %s" % (i, fig[i], got["items"][i]) for i in bad[:5]))
    if expect:
        ok = all(abs(fig[i][0] - e[0]) < 1e-15 and abs(fig[i][1] - e[1]) < 1e-15
                 for i, e in expect.items())
        check("%s: the hand-computed cases" % tag, ok,
              str({i: (fig[i], e) for i, e in expect.items()}))
    groups = [(str(k), lambda it, k=k: it["cls"] == k, got["classes"][k]) for k in range(ncls)]
    groups.append(("overall", lambda it: True, got["overall"]))
    for name, sel, g in groups:
        want = group_figures(items, fig, sel, nboot, seed)
        ok = g[0] == want[0] and g[1] == want[1] and \
            all(same(a, b, 1e-12) for a, b in zip(g[2:], want[2:]))
        check("%s: class %s: n, pointing, IoU and their 95%% CIs" % (tag, name), ok,
              "%s vs %s" % (g, want))
    return got


def main():
    os.makedirs(TMP, exist_ok=True)
    rng = np.random.default_rng(2017)

    # -- maps at the image's size: hand-checkable cases
    n = 12
    items, expect = [], {}

    def add(m, boxes, cls=0, image=None, want=None):
        items.append({"image": len(items) if image is None else image, "cls": cls,
                      "map": np.asarray(m, dtype=np.float32), "W": m.shape[1], "H": m.shape[0],
                      "boxes": boxes})
        if want:
            expect[len(items) - 1] = want

    m = np.zeros((n, n))
    m[3, 8] = 5                                   # peak at x 8, y 3
    add(m, [(6, 1, 4, 4)], want=(1, 1 / 16))      # inside
    add(m, [(0, 0, 4, 4)], want=(0, 0))           # outside
    add(m, [(8, 3, 1, 1)], want=(1, 1))           # the box is that pixel
    add(m, [(6, 1, 2, 4)], want=(0, 0))           # right edge x 8 is exclusive
    add(m, [(8.5, 3.5, 0.1, 0.1)], want=(1, 1))   # centre 8.5 on the left edge: inside
    add(m, [(8.51, 3, 2, 2)], want=(0, 0))        # just right of the centre
    m2 = m.copy()
    m2[10, 1] = 5                                 # a tie, outside
    add(m2, [(6, 1, 4, 4)], want=(0.5, 1 / 17))
    m3 = m2.copy()
    m3[0, 0] = 5                                  # three tied peaks
    add(m3, [(6, 1, 4, 4), (0, 9, 3, 3)], want=(2 / 3, 2 / (3 + 25 - 2)))
    add(np.full((n, n), 2.0), [(0, 0, 6, 12)], want=(0.5, 0.5))        # constant map
    add(np.full((n, n), 2.0), [(9, 9, 10, 10)], want=(9 / 144, 9 / 144))  # clipped box
    ramp = np.tile(np.arange(n, dtype=np.float64), (n, 1))
    add(ramp, [(10, 0, 2, 12)], want=(1, 1 / 3))  # the map: x >= 6, 6 columns; box: 2
    add(ramp, [(0, 0, 12, 12), (3, 3, 2, 2)])    # overlapping boxes
    for thr in (0.5, 0.0, 0.2, 1.0):
        compare("exact maps, threshold %g" % thr, items, 1, thr, 0, 0,
                expect if thr == 0.5 else None)

    # -- 7x7 maps upsampled; several classes per image; a class with no boxes
    items = []
    ncls = 5
    for img in range(23):
        W, H = [(64, 48), (33, 80), (100, 100), (7, 7), (5, 9)][img % 5]
        for cls in sorted(rng.choice(4, size=1 + img % 3, replace=False)):
            m = rng.normal(size=(7, 7)).astype(np.float32)
            if img % 4 == 0:
                m[0, 6] = m.max() + 1.0                  # a corner: a plateau of peaks
            boxes = []
            for _ in range(1 + int(rng.integers(0, 3))):
                x, y = rng.uniform(-5, W - 2), rng.uniform(-5, H - 2)
                boxes.append((x, y, rng.uniform(1, W / 2), rng.uniform(1, H / 2)))
            items.append({"image": img, "cls": int(cls), "map": m, "W": W, "H": H,
                          "boxes": boxes})
    plateau = [i for i, it in enumerate(items) if it["image"] % 4 == 0]
    got = None
    for thr in (0.5, 0.2):
        got = compare("upsampled maps, threshold %g" % thr, items, ncls, thr, 500, 7)
    check("a class without boxes has no figures (null)",
          got["classes"][4][0] == 0 and all(v is None for v in got["classes"][4][2:]),
          str(got["classes"][4]))
    ties = [i for i in plateau
            if (lambda U: (U == U.max()).sum())(upsample64(items[i]["map"], items[i]["H"],
                                                           items[i]["W"])) > 1]
    check("the corner maxima make tied peaks (%d items)" % len(ties), len(ties) >= 3)
    fractional = [g for g in got["items"] if 0 < g[0] < 1]
    check("some items have a fractional pointing score (ties split by boxes)",
          len(fractional) >= 1, str(len(fractional)))

    if failures:
        print("%d failure(s): %s" % (len(failures), ", ".join(failures)))
        sys.exit(1)
    print("all localisation oracle checks passed")


if __name__ == "__main__":
    main()
