"""Training augmentation (cx_augment, chexnet train --crop-scale ... --gamma)
against independent implementations, on real X-rays (kermany-224 JPEGs, and
NIH PNGs of 1024 px where present).

The parameters chexnet draws for an image (tests/tools/aug_tool draw) are
applied by chexnet (aug_tool apply: cx_augment_apply, with mean 0 and std 1,
so the output is the pixel values in [0, 1]) and by the oracle:

  * crop + resize: PIL Image.crop(box).resize((S, S), BILINEAR) and
    torchvision.transforms.functional.resized_crop(pil, ..., BILINEAR):
    bit-identical (the project's resize is PIL's, exactly);
  * rotation: torchvision.transforms.functional.rotate(tensor, angle,
    BILINEAR) (grid_sample, zeros padding): within 4 units in the last place
    of the image size in float32 (4 * 2^-16 = 6.1e-5 at 224 px). Why:
    torchvision builds its sampling grid in float32 (pixel coordinates up to
    about S, normalised by S / 2 and back), so its sampling positions carry
    rounding errors of about one unit in the last place of S; chexnet's are
    computed in double. A value moves by at most the position error times
    the largest step between neighbouring pixels (<= 1 in [0, 1] units).
    PIL's Image.rotate is not the oracle: it cuts the edge hard (no blending
    with the fill) and truncates to 8 bits;
  * brightness, contrast, gamma: torchvision's functional adjust_brightness,
    adjust_contrast, adjust_gamma on the float tensor (ToTensor): within
    4 units in the last place of 1.0 in float32 (4.8e-7). Why: contrast's
    mean grey level is summed in another order (chexnet in double, torch in
    float32 blocks), and pow may differ by an ulp between libm and torch's
    vectorised pow; an FMA where the compiler contracts adds one rounding.
  * the whole chain (crop, resize, flip, brightness, contrast, gamma,
    rotate) against torchvision's functional ops composed in that order:
    the rotation's bound plus the pointwise steps' bound (the rotation
    blends values with weights summing to at most 1).

Then the loader: with the flags off its batches are bit-identical to PIL +
torchvision (as today); with them on, each image of a batch is
bit-identical to cx_augment_apply with the parameters aug_tool draws for
it (from files, where the crop box is cut from the decoded rows, and from a
pack); batches are the same across runs, thread counts and shards, and
differ between epochs. Ranges: many draws stay within the options' ranges
and fill them. Skips (77) without ../shared/data.
"""
import csv
import math
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
import cxtest  # noqa: E402

torch = cxtest.need_torch()
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
import torchvision.transforms.functional as F  # noqa: E402
from torchvision.transforms import InterpolationMode  # noqa: E402

OUT = os.path.join(cxtest.TMP, "py_augment")
os.makedirs(OUT, exist_ok=True)
AT = cxtest.tool("aug_tool")
DT = cxtest.tool("data_tool")
for t in (AT, DT):
    if not os.path.exists(t):
        raise SystemExit("test tool not built: %s" % t)
BIL = InterpolationMode.BILINEAR
ROT_TOL_224 = 4 * 2.0 ** -16     # 4 ulp of 224 in float32
PIX_TOL = 4 * 2.0 ** -23         # 4 ulp of 1.0 in float32

passes, failures = [], []


def check(name, ok, detail=""):
    print(("PASS " if ok else "FAIL ") + name + (": " + detail if detail else ""), flush=True)
    (passes if ok else failures).append(name)


def rot_tol(size):
    return 4 * 2.0 ** (math.floor(math.log2(size)) - 23)


def draw(width, height, first=0, count=1, seed=0, epoch=0, aug=(), augment=1):
    r = subprocess.run([AT, "draw", "--seed", str(seed), "--epoch", str(epoch), "--first",
                        str(first), "--count", str(count), "--width", str(width), "--height",
                        str(height), "--augment", str(augment), *map(str, aug)],
                       capture_output=True, text=True, check=True)
    out = []
    for line in r.stdout.splitlines():
        v = line.split()
        out.append({"image": int(v[0]), "flip": int(v[1]), "crop": int(v[2]),
                    "box": tuple(int(x) for x in v[3:7]), "angle": float(v[7]),
                    "brightness": float(v[8]), "contrast": float(v[9]), "gamma": float(v[10])})
    return out


def apply(path, p, size=224, channels=3, raw=1):
    out = os.path.join(OUT, "apply.f32")
    args = [AT, "apply", path, "--out", out, "--size", str(size), "--channels", str(channels),
            "--raw", str(raw), "--flip", str(p.get("flip", 0)), "--angle", repr(p.get("angle", 0.0)),
            "--bright", repr(p.get("brightness", 1.0)), "--contr", repr(p.get("contrast", 1.0)),
            "--gam", repr(p.get("gamma", 1.0))]
    if p.get("crop"):
        args += ["--crop", "%d,%d,%d,%d" % p["box"]]
    subprocess.run(args, check=True, capture_output=True)
    return np.fromfile(out, np.float32).reshape(channels, size, size)


def pil_rgb(path):
    return Image.open(path).convert("RGB")


def oracle(path, p, size=224):
    """torchvision's functional ops in chexnet's order, on [0, 1] floats."""
    im = pil_rgb(path)
    if p.get("crop"):
        x, y, w, h = p["box"]
        im = F.resized_crop(im, y, x, h, w, [size, size], BIL)
    elif im.size != (size, size):
        im = im.resize((size, size), Image.BILINEAR)
    t = F.to_tensor(im)
    if p.get("flip"):
        t = F.hflip(t)
    if p.get("brightness", 1.0) != 1.0:
        t = F.adjust_brightness(t, p["brightness"])
    if p.get("contrast", 1.0) != 1.0:
        t = F.adjust_contrast(t, p["contrast"])
    if p.get("gamma", 1.0) != 1.0:
        t = F.adjust_gamma(t, p["gamma"])
    if p.get("angle", 0.0) != 0.0:
        t = F.rotate(t, p["angle"], BIL)
    return t.numpy()


def batch(source, idx, size=224, seed=0, epoch=0, threads=2, aug=(), augment=1, raw=1,
          batch_size=None, shuffle=0):
    out = os.path.join(OUT, "batch.f32")
    args = [DT, "batch", *source, "--idx", ",".join(map(str, idx)), "--size", str(size),
            "--augment", str(augment), "--seed", str(seed), "--epoch", str(epoch), "--threads",
            str(threads), "--raw", str(raw), "--shuffle", str(shuffle), "--out", out,
            *map(str, aug)]
    if batch_size:
        args += ["--batch", str(batch_size)]
    r = subprocess.run(args, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise SystemExit("data_tool failed: %s\n%s" % (" ".join(args), r.stderr))
    info = {}
    for line in r.stdout.splitlines():
        k, _, v = line.partition(" ")
        info[k] = v.split()
    n = int(info["n"][0])
    return np.fromfile(out, np.float32).reshape(n, 3, size, size), info


def main():
    kman = cxtest.shared("kermany-224", "manifest.csv")
    kdir = os.path.dirname(kman)
    with open(kman, newline="") as f:
        rows = list(csv.DictReader(f))
    kidx = [0, 7, 1400, 2600, 4100, 5215]
    kpaths = [os.path.join(kdir, rows[i]["path"]) for i in kidx]
    nih = []
    nih_dir = os.path.join(cxtest.DATA, "nih", "images")
    if os.path.isdir(nih_dir):  # 1024 px PNGs (grey and RGBA): crops from large images
        nih = [os.path.join(nih_dir, n) for n in ("00000820_000.png", "00002578_000.png")
               if os.path.exists(os.path.join(nih_dir, n))]

    # ---- 1. crop + resize: bit-identical to PIL and torchvision
    worst, n = 0.0, 0
    for k, path in enumerate(kpaths + nih):
        W, H = Image.open(path).size
        for size in (224, 160):
            for p in draw(W, H, first=k * 10, count=3, seed=5, aug=["--crop-scale", "0.3,1",
                                                                     "--crop-ratio", "0.75,1.3333"]):
                p = dict(p, flip=0)
                got = apply(path, p, size)
                x, y, w, h = p["box"]
                want_pil = np.asarray(pil_rgb(path).crop((x, y, x + w, y + h))
                                      .resize((size, size), Image.BILINEAR), np.float32)
                want_pil = (want_pil / np.float32(255)).transpose(2, 0, 1)
                want_tv = oracle(path, p, size)
                same = np.array_equal(got, want_tv) and np.array_equal(got, want_pil)
                worst = max(worst, float(np.abs(got - want_tv).max()))
                n += 1
                if not same:
                    check("crop+resize %s box %s size %d" % (os.path.basename(path), p["box"], size),
                          False, "max diff %g" % worst)
    check("crop + resize == PIL crop().resize(BILINEAR) == torchvision resized_crop, bit for bit",
          worst == 0.0, "%d crops of %d images (kermany 224 px%s), sizes 224 and 160"
          % (n, len(kpaths) + len(nih), ", NIH 1024 px" if nih else ""))

    # ---- 2. rotation vs torchvision rotate (tensor, bilinear)
    worst, n = 0.0, 0
    for k, path in enumerate(kpaths):
        angles = [p["angle"] for p in draw(224, 224, first=k * 10, count=3, seed=1,
                                           aug=["--rotate", "15"])] + [90.0, -37.5]
        for a in angles:
            got = apply(path, {"angle": a})
            want = oracle(path, {"angle": a})
            worst = max(worst, float(np.abs(got - want).max()))
            n += 1
    got = apply(kpaths[0], {"angle": 9.0}, size=96)
    want = F.rotate(F.to_tensor(pil_rgb(kpaths[0]).resize((96, 96), Image.BILINEAR)), 9.0,
                    BIL).numpy()
    d96 = float(np.abs(got - want).max())
    check("rotation == torchvision rotate(tensor, BILINEAR) within 4 ulp of the size",
          worst <= ROT_TOL_224 and d96 <= rot_tol(96),
          "%d rotations at 224 px: max |diff| %.3g (bound %.3g); 96 px: %.3g (bound %.3g)"
          % (n, worst, ROT_TOL_224, d96, rot_tol(96)))
    # the sign: a counter-clockwise turn moves the image's top-right corner region left
    sq = os.path.join(OUT, "square.png")
    a = np.zeros((64, 64, 3), np.uint8)
    a[4:12, 40:60] = 255  # a bright bar near the top right
    Image.fromarray(a).save(sq)
    r = apply(sq, {"angle": 90.0}, size=64)[0]
    ys, xs = np.nonzero(r > 0.5)
    check("positive angles turn counter-clockwise (the top-right bar goes top-left)",
          len(xs) > 0 and xs.max() < 32 and ys.max() < 32,
          "bar now at x %s..%s, y %s..%s" % (xs.min(), xs.max(), ys.min(), ys.max()))

    # ---- 3. brightness, contrast, gamma vs torchvision adjust_* on float tensors
    res = {}
    for k, path in enumerate(kpaths):
        ps = draw(224, 224, first=k, count=1, seed=2,
                  aug=["--brightness", "0.4", "--contrast", "0.4", "--gamma", "0.4"])[0]
        for key, extra in (("brightness", [0.0, 1.7]), ("contrast", [0.0, 1.9]),
                           ("gamma", [0.5, 1.5])):
            for v in [ps[key]] + extra:
                got = apply(path, {key: v})
                want = oracle(path, {key: v})
                res[key] = max(res.get(key, 0.0), float(np.abs(got - want).max()))
    for key in ("brightness", "contrast", "gamma"):
        check("%s == torchvision adjust_%s within 4 ulp of 1.0" % (key, key),
              res[key] <= PIX_TOL, "max |diff| %.3g (bound %.3g), %d images x 3 factors"
              % (res[key], PIX_TOL, len(kpaths)))
    # and the formulas themselves, on one image
    t = F.to_tensor(pil_rgb(kpaths[1])).numpy()
    m = float((np.float32(0.2989) * t[0] + np.float32(0.587) * t[1] +
               np.float32(0.114) * t[2]).mean())
    got = apply(kpaths[1], {"contrast": 0.6})
    want = np.clip(0.6 * t + 0.4 * m, 0, 1)
    check("contrast is clamp(f x + (1 - f) m, 0, 1), m the mean grey level",
          float(np.abs(got - want).max()) < 1e-6)

    # ---- 4. the whole chain
    worst, n = 0.0, 0
    for k, path in enumerate(kpaths + nih):
        W, H = Image.open(path).size
        p = draw(W, H, first=k, count=1, seed=9, aug=["--crop-scale", "0.5,1", "--rotate", "10",
                                                      "--brightness", "0.2", "--contrast", "0.2"])[0]
        for gamma in (0.85, 1.15):
            p = dict(p, flip=1, gamma=gamma)
            got = apply(path, p)
            want = oracle(path, p)
            worst = max(worst, float(np.abs(got - want).max()))
            n += 1
    check("crop, resize, flip, brightness, contrast, gamma, rotate == torchvision composed",
          worst <= ROT_TOL_224 + PIX_TOL, "%d images x 2 gammas: max |diff| %.3g (bound %.3g)"
          % (len(kpaths + nih), worst, ROT_TOL_224 + PIX_TOL))

    # ---- 5. the loader: flags off as today, flags on == cx_augment_apply
    src = ["--labels", kman]
    x0, info0 = batch(src, kidx, seed=3, raw=0)
    worst = 0
    for r, i in enumerate(int(v) for v in info0["ids"]):
        t = F.normalize(F.to_tensor(pil_rgb(os.path.join(kdir, rows[i]["path"]))), cxtest.MEAN,
                        cxtest.STD)
        if int(info0["flips"][r]):
            t = F.hflip(t)
        worst += not np.array_equal(x0[r], t.numpy())
    check("flags off: batches bit-identical to PIL + torchvision (resize, flip, Normalize)",
          worst == 0, "%d images, %d flipped" % (len(kidx), sum(map(int, info0["flips"]))))
    ident = ["--crop-scale", "1,1", "--crop-ratio", "1,1"]  # the whole (square) image
    x1, _ = batch(src, kidx, seed=3, raw=0, aug=ident)
    check("the augmented path with identity parameters gives the same batch bit for bit",
          np.array_equal(x0, x1))

    aug = ["--crop-scale", "0.6,1", "--crop-ratio", "0.8,1.25", "--rotate", "10",
           "--brightness", "0.3", "--contrast", "0.3", "--gamma", "0.3"]
    xa, ia = batch(src, kidx, seed=4, epoch=2, threads=1, aug=aug)
    bad = 0
    for r, i in enumerate(int(v) for v in ia["ids"]):
        path = os.path.join(kdir, rows[i]["path"])
        W, H = Image.open(path).size
        p = draw(W, H, first=i, count=1, seed=4, epoch=2, aug=aug)[0]
        bad += not np.array_equal(xa[r], apply(path, p))
    check("loader (files, every augmentation) == cx_augment_apply with the drawn parameters",
          bad == 0, "%d of %d images differ" % (bad, len(kidx)))
    if nih:
        man = os.path.join(OUT, "nih.csv")
        with open(man, "w") as f:
            f.write("path,pneumonia,patient\n")
            for k, pth in enumerate(nih):
                f.write("%s,0,p%d\n" % (pth, k))
        xn, inn = batch(["--labels", man], list(range(len(nih))), seed=4, aug=aug)
        bad = 0
        for r, i in enumerate(int(v) for v in inn["ids"]):
            W, H = Image.open(nih[i]).size
            p = draw(W, H, first=i, count=1, seed=4, aug=aug)[0]
            bad += not np.array_equal(xn[r], apply(nih[i], p))
        check("loader on 1024 px PNGs: the box cut from the decoded rows == crop in memory",
              bad == 0, "%d images" % len(nih))
    xb, ib = batch(src, kidx, seed=4, epoch=2, threads=4, aug=aug)
    xc, _ = batch(src, kidx, seed=4, epoch=2, threads=2, aug=aug, batch_size=2)
    check("same (seed, epoch, image): the same batch on 1 and 4 threads and in batches of 2",
          np.array_equal(xa, xb) and np.array_equal(xa, xc) and ia["ids"] == ib["ids"])
    xd, _ = batch(src, kidx, seed=4, epoch=3, threads=2, aug=aug)
    xe, _ = batch(src, kidx, seed=5, epoch=2, threads=2, aug=aug)
    check("another epoch or seed: other augmentations",
          all(not np.array_equal(xa[r], xd[r]) and not np.array_equal(xa[r], xe[r])
              for r in range(len(kidx))))
    # shards (data-parallel ranks): each makes its part of every batch, identically
    parts = []
    for s in range(3):
        xs, _ = batch(src, kidx, seed=4, epoch=2, aug=aug + ["--shard", s, "--shards", 3],
                      batch_size=len(kidx))
        parts.append(xs)
    check("3 shards of a batch concatenated == the whole batch",
          np.array_equal(np.concatenate(parts), xa))
    # packs: the same pixels as the files, so the same augmented tensors
    pk = os.path.join(OUT, "kermany.cxpack")
    only = os.path.join(OUT, "only.txt")
    with open(only, "w") as f:
        for i in kidx:
            f.write(rows[i]["path"] + "\n")
    r = subprocess.run([cxtest.CHEXNET, "prepare", "--manifest", kman, "--only", only, "-o", pk],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    # pack entries are numbered 0..n-1: draw with those numbers
    xp, ip = batch(["--pack", pk], list(range(len(kidx))), seed=4, epoch=2, aug=aug)
    bad = 0
    for r_, i in enumerate(int(v) for v in ip["ids"]):
        path = kpaths[i]
        p = draw(224, 224, first=i, count=1, seed=4, epoch=2, aug=aug)[0]
        bad += not np.array_equal(xp[r_], apply(path, p))
    check("loader from a pack (grey, 224 px) == cx_augment_apply on the file's pixels",
          bad == 0, "%d of %d differ" % (bad, len(kidx)))

    # ---- 6. ranges over many draws
    N = 20000
    ps = draw(1000, 800, count=N, seed=11, aug=["--crop-scale", "0.25,0.9", "--crop-ratio",
                                                   "0.8,1.25", "--rotate", "7", "--brightness",
                                                   "0.3", "--contrast", "1.5", "--gamma", "0.2"])
    area = np.array([p["box"][2] * p["box"][3] / 800000.0 for p in ps])
    asp = np.array([p["box"][2] / p["box"][3] for p in ps])
    inside = all(p["box"][0] >= 0 and p["box"][1] >= 0 and p["box"][0] + p["box"][2] <= 1000 and
                 p["box"][1] + p["box"][3] <= 800 for p in ps)
    # w and h are rounded: allow half a pixel on each side
    amin = min((p["box"][2] + .5) * (p["box"][3] + .5) / 800000.0 for p in ps)
    amax = max((p["box"][2] - .5) * (p["box"][3] - .5) / 800000.0 for p in ps)
    rmin = min((p["box"][2] + .5) / (p["box"][3] - .5) for p in ps)
    rmax = max((p["box"][2] - .5) / (p["box"][3] + .5) for p in ps)
    check("crop boxes inside the image, area in [0.25, 0.9], aspect in [0.8, 1.25]",
          inside and amin >= 0.25 and amax <= 0.9 and rmin >= 0.8 and rmax <= 1.25 and
          area.min() < 0.26 and area.max() > 0.89 and asp.min() < 0.81 and asp.max() > 1.24,
          "area %.4f..%.4f, aspect %.4f..%.4f over %d draws" % (area.min(), area.max(),
                                                                 asp.min(), asp.max(), N))
    # where every first draw fits (square image, s r <= 1), no draw is rejected: the area
    # fraction is uniform and the aspect log-uniform (w and h rounded to pixels)
    sq = draw(1000, 1000, count=N, seed=12, aug=["--crop-scale", "0.25,0.5", "--crop-ratio",
                                                    "0.8,1.25"])
    qa = np.quantile([p["box"][2] * p["box"][3] / 1e6 for p in sq], [0.25, 0.5, 0.75])
    ql = np.quantile([math.log(p["box"][2] / p["box"][3]) for p in sq], [0.25, 0.5, 0.75])
    la, lr = math.log(0.8), math.log(1.25)
    check("area fraction uniform, aspect log-uniform (quartiles, 1000 x 1000 image)",
          all(abs(a - b) < 0.005 for a, b in zip(qa, (0.3125, 0.375, 0.4375))) and
          all(abs(a - b) < 0.01 for a, b in zip(ql, (la + (lr - la) * f for f in
                                                     (0.25, 0.5, 0.75)))),
          "area quartiles %s, log aspect quartiles %s" % (np.round(qa, 4), np.round(ql, 4)))
    for key, lo, hi in (("angle", -7, 7), ("brightness", 0.7, 1.3), ("contrast", 0.0, 2.5),
                        ("gamma", 0.8, 1.2)):
        v = np.array([p[key] for p in ps])
        q = np.quantile(v, [0.25, 0.5, 0.75])
        want = [lo + (hi - lo) * f for f in (0.25, 0.5, 0.75)]
        check("%s in [%g, %g), uniform" % (key, lo, hi),
              v.min() >= lo and v.max() < hi and v.min() < lo + 0.01 * (hi - lo) and
              v.max() > hi - 0.01 * (hi - lo) and
              all(abs(a - b) < 0.01 * (hi - lo) for a, b in zip(q, want)),
              "min %.4f max %.4f quartiles %s" % (v.min(), v.max(), np.round(q, 4)))
    flips = np.array([p["flip"] for p in ps])
    check("flip p = 0.5", abs(flips.mean() - 0.5) < 0.015, "%.4f" % flips.mean())
    # one stream per operation: turning rotation off leaves the crops as they were
    ps2 = draw(1000, 800, count=200, seed=11, aug=["--crop-scale", "0.25,0.9", "--crop-ratio",
                                                    "0.8,1.25"])
    check("each operation draws from its own stream (crops do not depend on --rotate)",
          [p["box"] for p in ps2] == [p["box"] for p in ps[:200]] and
          all(p["angle"] == 0 and p["gamma"] == 1 for p in ps2))
    # an impossible aspect for the image: torchvision's fallback, the centre box
    fb = draw(1000, 100, count=50, seed=1, aug=["--crop-scale", "1,1", "--crop-ratio", "1,1"])
    check("no box fits: the centre box of the nearest allowed aspect (torchvision's fallback)",
          all(p["box"] == (450, 0, 100, 100) for p in fb), str(fb[0]["box"]))

    # ---- 7. the library refuses bad values
    for aug_bad, words in ((["--crop-scale", "0,1"], "crop scale"),
                           (["--crop-scale", "0.9,0.5"], "crop scale"),
                           (["--crop-scale", "0.5,1.5"], "crop scale"),
                           (["--crop-ratio", "0.9,1.1"], "needs a crop scale"),
                           (["--crop-scale", "0.5,1", "--crop-ratio", "1.2,1.1"], "crop ratio"),
                           (["--rotate", "-1"], "rotation"), (["--rotate", "nan"], "rotation"),
                           (["--rotate", "181"], "rotation"), (["--brightness", "-0.5"], "brightness"),
                           (["--contrast", "inf"], "contrast"), (["--gamma", "1"], "gamma"),
                           (["--gamma", "-0.1"], "gamma")):
        r = subprocess.run([AT, "check", *aug_bad], capture_output=True, text=True)
        check("cx_augment_check refuses %s" % " ".join(aug_bad),
              r.returncode == 1 and words in r.stdout, r.stdout.strip())
    r = subprocess.run([DT, "batch", "--labels", kman, "--idx", "0", "--rotate", "200"],
                       capture_output=True, text=True)
    check("the loader refuses them too", r.returncode == 1 and "rotation 200" in r.stderr,
          r.stderr.strip())

    print("%d passed, %d failed" % (len(passes), len(failures)))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
