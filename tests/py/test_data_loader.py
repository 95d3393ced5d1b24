"""The training loader against PIL + torchvision on real X-rays.

Oracle: Image.open(p).convert("RGB").resize((224, 224), BILINEAR) ->
ToTensor -> Normalize(ImageNet) (flip off), and torch.flip of that tensor
for the images the loader flips (flip on). Real NIH PNGs (grey 1024 and 512,
RGBA) and kermany-224 JPEGs (resize is the identity). The same images from a
pack made by 'chexnet prepare' give the same tensors; 1-channel output
equals PIL convert("L") -> resize -> Normalize(mean[0], std[0]).
"""
import csv
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from cxtest import CHEXNET, MEAN, STD, TMP, need_torch, shared, tool  # noqa: E402

torch = need_torch()
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from torchvision import transforms  # noqa: E402

OUT = os.path.join(TMP, "py_data_loader")
os.makedirs(OUT, exist_ok=True)
DT = tool("data_tool")
if not os.path.exists(DT):
    raise SystemExit("data_tool not built: %s" % DT)


def batch(source, idx, size=224, channels=3, augment=0, seed=0, epoch=0, threads=2):
    out = os.path.join(OUT, "x.f32")
    args = [DT, "batch", *source, "--idx", ",".join(map(str, idx)), "--size", str(size),
            "--channels", str(channels), "--augment", str(augment), "--seed", str(seed),
            "--epoch", str(epoch), "--threads", str(threads), "--out", out]
    p = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    info = {}
    for line in p.stdout.splitlines():
        k, _, v = line.partition(" ")
        info[k] = v.split()
    n = int(info["n"][0])
    x = np.fromfile(out, dtype=np.float32).reshape(n, channels, size, size)
    return x, info


def oracle(path, size=224, grey=False):
    im = Image.open(path).convert("L" if grey else "RGB")
    if im.size != (size, size):
        im = im.resize((size, size), Image.BILINEAR)
    t = transforms.ToTensor()(im)
    norm = transforms.Normalize(MEAN[:1], STD[:1]) if grey else transforms.Normalize(MEAN, STD)
    return norm(t).numpy()


def compare(x, info, flips_expected=None, grey=False):
    """x rows follow info['ids']; names/paths are in --idx order."""
    ids = [int(v) for v in info["ids"]]
    flips = [int(v) for v in info["flips"]]
    where = {}
    for j, (i, p) in enumerate(zip(info_idx(info), info["paths"])):
        where[i] = p
    worst = 0.0
    nflip = 0
    for r, i in enumerate(ids):
        want = oracle(where[i], x.shape[2], grey)
        if flips[r]:
            want = want[:, :, ::-1]
            nflip += 1
        d = float(np.abs(x[r] - want).max())
        worst = max(worst, d)
        # bit-exact: the same float32 operations as torchvision
        assert np.array_equal(x[r], want), (where[i], flips[r], d)
    return worst, nflip


_IDX = {}


def info_idx(info):
    return _IDX[id(info)]


def run_case(name, source, idx, **kw):
    x, info = batch(source, idx, **kw)
    _IDX[id(info)] = idx
    worst, nflip = compare(x, info, grey=kw.get("channels", 3) == 1)
    print("%-34s %2d images, %d flipped, max |diff| %g" % (name, x.shape[0], nflip, worst))
    return x, info


nih_labels = shared("nih", "labels.csv")
nih_dir = shared("nih", "images")
with open(nih_labels, newline="") as f:
    names = [r["Image Index"] for r in csv.DictReader(f)]
# grey 1024, RGBA (00000100_000, 00002578_000, 00005224_000): all rows of labels.csv
want = ["00000100_000.png", "00002578_000.png", "00005224_000.png"]
idx = [names.index(w) for w in want if w in names] + [0, 5, 11]
src = ["--labels", nih_labels, "--image-dir", nih_dir]
x0, _ = run_case("NIH PNGs, flip off", src, idx)
# flips on: deterministic, and some flipped
xa, ia = run_case("NIH PNGs, flip on (seed 3)", src, idx, augment=1, seed=3, threads=1)
xb, ib = run_case("NIH PNGs, flip on (seed 3, 4 threads)", src, idx, augment=1, seed=3,
                  threads=4)
assert np.array_equal(xa, xb) and ia["flips"] == ib["flips"]
_, ic = run_case("NIH PNGs, flip on (seed 3, epoch 1)", src, idx, augment=1, seed=3, epoch=1)
run_case("NIH PNGs, 1 channel", src, idx, channels=1)

# the 512x512 NIH images are not in labels.csv: a manifest for them
man = os.path.join(OUT, "nih512.csv")
with open(man, "w") as f:
    f.write("path,pneumonia,patient\n")
    for n in ("00000001_000.png", "00027426_000.png"):
        f.write("%s,0,%s\n" % (os.path.join(nih_dir, n), n[:8]))
run_case("NIH 512 PNGs", ["--labels", man], [0, 1])

# kermany-224 JPEGs (224x224: the resize is the identity)
kman = shared("kermany-224", "manifest.csv")
kidx = [0, 1, 2, 1500, 3000, 5215]
run_case("kermany JPEGs, flip off", ["--labels", kman], kidx)
run_case("kermany JPEGs, flip on", ["--labels", kman], kidx, augment=1, seed=7)

# packs: the same tensors as the files
pk = os.path.join(OUT, "nih.cxpack")
p = subprocess.run([CHEXNET, "prepare", *src, "-o", pk], capture_output=True, text=True,
                   timeout=300)
assert p.returncode == 0, p.stderr
print(p.stdout.strip())
xp, ip = batch(["--pack", pk], idx)
assert np.array_equal(xp, x0), "pack differs from files"
xpa, ipa = batch(["--pack", pk], idx, augment=1, seed=3, threads=3)
assert np.array_equal(xpa, xa) and ipa["flips"] == ia["flips"]
kpk = os.path.join(OUT, "kermany.cxpack")
only = os.path.join(OUT, "kermany_only.txt")
with open(kman, newline="") as f:
    krows = list(csv.DictReader(f))
with open(only, "w") as f:
    for i in kidx:
        f.write(krows[i]["path"] + "\n")
p = subprocess.run([CHEXNET, "prepare", "--manifest", kman, "--only", only, "-o", kpk],
                   capture_output=True, text=True, timeout=300)
assert p.returncode == 0, p.stderr
xk, ik = batch(["--pack", kpk], list(range(len(kidx))))
xf, _ = batch(["--labels", kman], kidx)
assert np.array_equal(xk, xf), "kermany pack differs from files"
print("packs: identical tensors to the files (NIH and kermany)")
# a corrupt pack is refused with a clear message
bad = os.path.join(OUT, "bad.cxpack")
data = open(pk, "rb").read()
open(bad, "wb").write(data[: len(data) // 2])
p = subprocess.run([DT, "batch", "--pack", bad, "--idx", "0"], capture_output=True, text=True)
assert p.returncode != 0 and "bad.cxpack" in p.stderr, p.stderr
# missing images: one error before any work, with the count and the first names
miss = os.path.join(OUT, "missing.csv")
with open(miss, "w") as f:
    f.write("path,pneumonia,patient\n")
    f.write("%s,0,a\n" % os.path.join(nih_dir, "00000001_000.png"))
    for k in range(7):
        f.write("nowhere/%08d_000.png,1,p%d\n" % (k, k))
p = subprocess.run([CHEXNET, "prepare", "--manifest", miss, "-o", os.path.join(OUT, "m.cxpack")],
                   capture_output=True, text=True, timeout=60)
assert p.returncode == 1 and "7 of 8 images have no file" in p.stderr \
    and "nowhere/00000000_000.png" in p.stderr, p.stderr
assert not os.path.exists(os.path.join(OUT, "m.cxpack"))
print("missing images:", p.stderr.strip())
print("OK")
