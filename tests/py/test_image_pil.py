"""Image decoding and preprocessing parity with PIL and torchvision.

Oracles (computed at test time, nothing hard-coded):
  * decoding: PIL Image.open(p).convert("RGB") / convert("L") on every real
    NIH PNG (incl. the RGBA ones), every paediatric JPEG of kermany-224, and
    PNG/JPEG files of every colour type, bit depth and interlacing generated
    here (PIL for what it can write, a small hand-written PNG encoder for the
    rest: 2/4-bit grey, 16-bit RGB/RGBA/LA, Adam7);
  * resize: PIL Image.resize((w, h), Image.BILINEAR) on NIH 1024^2 and 512^2
    images (the issue's bar: max difference <= 1; the share of differing
    pixels is printed);
  * ten-crop: torchvision Resize(256) + TenCrop(224).

Uses $CX_BUILD/tests/img_dump. Skips (77) when ../shared/data is absent.
"""
import glob
import os
import struct
import subprocess
import sys
import tempfile
import zlib

import numpy as np
from PIL import Image

SHARED = os.environ.get("CX_SHARED", os.path.join(os.path.dirname(__file__), "../../../shared"))
BUILD = os.environ.get("CX_BUILD", "build")
TOOL = os.path.join(BUILD, "tests", "img_dump")
DATA = os.path.join(SHARED, "data")
TMP = os.environ.get("CX_TMP") or tempfile.gettempdir()
os.makedirs(TMP, exist_ok=True)

failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)
        print("FAIL:", msg)


def read_records(path):
    b = open(path, "rb").read()
    o, out = 0, []
    while o < len(b):
        st, w, h, c = struct.unpack_from("<4i", b, o)
        o += 16
        n = w * h * c
        a = np.frombuffer(b, np.uint8, n, o).reshape(h, w, c) if n else None
        o += n
        out.append((st, a))
    return out


def run_tool(args, expect_ok=True):
    out = os.path.join(TMP, "img_dump_%d.bin" % os.getpid())
    mode, rest = args[0], args[1:]
    # insert OUT at its place: decode CH OUT ...; resize CH W H OUT ...
    k = 2 if mode == "decode" else 4
    argv = [TOOL, mode] + rest[: k - 1] + [out] + rest[k - 1:]
    r = subprocess.run(argv, capture_output=True, text=True)
    if expect_ok and r.returncode != 0:
        raise SystemExit("img_dump failed: %s\n%s" % (" ".join(argv[:6]), r.stderr))
    recs = read_records(out)
    os.unlink(out)
    return recs, r


def as_hwc(img):
    a = np.asarray(img)
    return a[:, :, None] if a.ndim == 2 else a


# ------------------------------------------------------------ PNG encoder
def png_chunk(tag, data):
    c = struct.pack(">I", len(data)) + tag + data
    return c + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def pack_rows(samples, depth):
    """samples: 2-D array [rows][samples per row] -> packed bytes per row."""
    rows = []
    for r in samples:
        if depth == 16:
            rows.append(r.astype(">u2").tobytes())
        elif depth == 8:
            rows.append(r.astype(np.uint8).tobytes())
        else:
            per = 8 // depth
            n = len(r)
            pad = (-n) % per
            rr = np.concatenate([r, np.zeros(pad, r.dtype)]).astype(np.uint8).reshape(-1, per)
            v = np.zeros(len(rr), np.uint8)
            for i in range(per):
                v |= rr[:, i] << (8 - depth * (i + 1))
            rows.append(v.tobytes())
    return rows


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def write_png(path, arr, ctype, depth, plte=None, trns=None, interlace=False):
    """arr: [h][w][channels] of samples (indexes for palette)."""
    h, w, c = arr.shape
    raw = b""
    if interlace:
        for x0, y0, dx, dy in ADAM7:
            sub = arr[y0::dy, x0::dx]
            if sub.shape[0] == 0 or sub.shape[1] == 0:
                continue
            for row in pack_rows(sub.reshape(sub.shape[0], -1), depth):
                raw += b"\0" + row
    else:
        for row in pack_rows(arr.reshape(h, -1), depth):
            raw += b"\0" + row
    data = b"\x89PNG\r\n\x1a\n"
    data += png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 1 if interlace else 0))
    if plte is not None:
        data += png_chunk(b"PLTE", plte.astype(np.uint8).tobytes())
    if trns is not None:
        data += png_chunk(b"tRNS", trns)
    data += png_chunk(b"IDAT", zlib.compress(raw))
    data += png_chunk(b"IEND", b"")
    open(path, "wb").write(data)


def test_generated():
    rng = np.random.default_rng(1)
    h, w = 37, 29  # odd sizes: partial bytes at row ends, all Adam7 passes
    cases = []
    for depth in (1, 2, 4, 8, 16):
        cases.append(("grey%d" % depth, 0, depth, 1))
    for depth in (8, 16):
        cases += [("rgb%d" % depth, 2, depth, 3), ("ga%d" % depth, 4, depth, 2),
                  ("rgba%d" % depth, 6, depth, 4)]
    for depth in (1, 2, 4, 8):
        cases.append(("pal%d" % depth, 3, depth, 1))
    files, expect = [], []
    for name, ctype, depth, c in cases:
        for interlace in (False, True):
            maxv = (1 << depth) - 1
            plte = trns = None
            if ctype == 3:
                npal = min(1 << depth, 200)
                plte = rng.integers(0, 256, (npal, 3))
                arr = rng.integers(0, npal, (h, w, 1))
                trns = bytes(rng.integers(0, 256, min(npal, 5)).astype(np.uint8))
            else:
                arr = rng.integers(0, maxv + 1, (h, w, c))
                if ctype == 0 and depth == 8:
                    trns = struct.pack(">H", 17)
            p = os.path.join(TMP, "gen_%s_%s.png" % (name, "i" if interlace else "n"))
            write_png(p, arr, ctype, depth, plte, trns, interlace)
            im = Image.open(p)
            if ctype == 0 and depth == 16:
                # PIL opens 16-bit grey as mode "I" and clips it to 0..255
                # in convert("RGB"); chexnet documents the high byte instead.
                hi = (arr >> 8).astype(np.uint8)
                ref = np.repeat(hi, 3, axis=2)
                pil = as_hwc(im.convert("RGB"))
                check((pil == np.clip(arr, 0, 255).astype(np.uint8).repeat(3, 2)).all(),
                      "PIL's 16-bit grey behaviour changed (clip expected)")
            else:
                ref = as_hwc(im.convert("RGB"))
            files.append(p)
            expect.append((p, ref))
    # palette indexes beyond the PLTE entries (PIL shows its grey ramp there)
    p = os.path.join(TMP, "gen_pal_short.png")
    write_png(p, rng.integers(0, 16, (h, w, 1)), 3, 4, rng.integers(0, 256, (5, 3)))
    files.append(p)
    expect.append((p, as_hwc(Image.open(p).convert("RGB"))))
    # JPEGs written by PIL from a real X-ray: baseline/progressive, grey/RGB
    nih = sorted(glob.glob(os.path.join(DATA, "nih/images/*.png")))
    src = Image.open(nih[0]).convert("RGB").resize((203, 157), Image.BILINEAR)
    tint = Image.merge("RGB", [src.getchannel(0), src.getchannel(1).point(lambda v: v // 2),
                               src.getchannel(2).point(lambda v: 255 - v)])
    for mode_name, img in (("grey", src.convert("L")), ("rgb", tint)):
        for prog in (False, True):
            for sub in (0, 2):
                p = os.path.join(TMP, "gen_%s_%s_%d.jpg" % (mode_name, "prog" if prog else "base", sub))
                img.save(p, quality=90, progressive=prog, subsampling=sub)
                files.append(p)
                expect.append((p, as_hwc(Image.open(p).convert("RGB"))))
    recs, _ = run_tool(["decode", "3"] + files)
    for (p, ref), (st, a) in zip(expect, recs):
        check(st == 0 and a is not None and a.shape == ref.shape and (a == ref).all(),
              "generated %s: pixels differ from the oracle" % os.path.basename(p))
    # luma (channels 1) == PIL convert("L") (except 16-bit grey, see above)
    lfiles = [p for p, _ in expect if "grey16" not in p]
    recs, _ = run_tool(["decode", "1"] + lfiles)
    for p, (st, a) in zip(lfiles, recs):
        ref = as_hwc(Image.open(p).convert("L"))
        check(st == 0 and (a == ref).all(), "generated %s: luma differs from PIL convert('L')" % p)
    print("generated PNG/JPEG: %d files checked" % len(files))


def test_nih_decode():
    files = sorted(glob.glob(os.path.join(DATA, "nih/images/*.png")))
    check(len(files) >= 20, "expected the NIH images")
    modes = {}
    for ch in (3, 1, 0):
        recs, _ = run_tool(["decode", str(ch)] + files)
        for f, (st, a) in zip(files, recs):
            im = Image.open(f)
            modes[os.path.basename(f)] = im.mode
            if ch == 0:  # as stored: grey sources stay 1 channel
                conv = "L" if im.mode in ("L", "LA", "I", "1") else "RGB"
            else:
                conv = "RGB" if ch == 3 else "L"
            ref = as_hwc(im.convert(conv))
            check(st == 0 and a.shape == ref.shape and (a == ref).all(),
                  "%s: decode (channels %d) differs from PIL" % (f, ch))
    n_rgba = sum(1 for m in modes.values() if m == "RGBA")
    check(n_rgba >= 3, "expected RGBA NIH files, found %d" % n_rgba)
    print("NIH decode: %d PNGs (%d RGBA) equal PIL's" % (len(files), n_rgba))


def test_kermany_decode():
    files = sorted(glob.glob(os.path.join(DATA, "kermany-224/train/*/*.jpeg")))
    check(len(files) > 1000, "expected the kermany-224 JPEGs")
    bad = 0
    for i in range(0, len(files), 1000):
        chunk = files[i:i + 1000]
        recs, _ = run_tool(["decode", "3"] + chunk)
        for f, (st, a) in zip(chunk, recs):
            ref = as_hwc(Image.open(f).convert("RGB"))
            if not (st == 0 and a.shape == ref.shape and (a == ref).all()):
                bad += 1
                if bad < 5:
                    print("differs:", f)
    check(bad == 0, "%d kermany JPEGs differ from PIL" % bad)
    print("kermany-224 decode: %d JPEGs equal PIL's" % len(files))


def test_resize():
    files = sorted(glob.glob(os.path.join(DATA, "nih/images/*.png")))
    sizes = {Image.open(f).size for f in files}
    check((1024, 1024) in sizes and (512, 512) in sizes, "expected 1024^2 and 512^2 images")
    for (w, h) in ((224, 224), (256, 256), (300, 171), (97, 400), (1100, 1300)):
        fs = files if (w, h) in ((224, 224), (256, 256)) else files[:4]
        recs, _ = run_tool(["resize", "3", str(w), str(h)] + fs)
        by_size = {}
        for f, (st, a) in zip(fs, recs):
            im = Image.open(f).convert("RGB")
            ref = np.asarray(im.resize((w, h), Image.BILINEAR)).astype(int)
            d = np.abs(a.astype(int) - ref)
            s = by_size.setdefault(im.size[0], [0, 0, 0])
            s[0] = max(s[0], int(d.max()))
            s[1] += int((d > 0).sum())
            s[2] += d.size
        for src, (mx, ndiff, tot) in sorted(by_size.items()):
            print("resize %d^2 -> %dx%d: max diff %d, share of differing values %.6f%%"
                  % (src, w, h, mx, 100.0 * ndiff / tot))
            check(mx <= 1, "resize %d -> %dx%d: max diff %d > 1" % (src, w, h, mx))
    # grey path (channels 1 kept through the resize)
    recs, _ = run_tool(["resize", "1", "224", "224"] + files)
    for f, (st, a) in zip(files, recs):
        ref = as_hwc(Image.open(f).convert("L").resize((224, 224), Image.BILINEAR)).astype(int)
        check(np.abs(a.astype(int) - ref).max() <= 1, "%s: grey resize differs" % f)


def test_tencrop():
    import torchvision.transforms as T
    files = sorted(glob.glob(os.path.join(DATA, "nih/images/*.png")))[:6]
    kerm = sorted(glob.glob(os.path.join(DATA, "kermany-224/train/NORMAL/*.jpeg")))[:2]
    # a non-square image exercises the short-side rule and the centre rounding
    ns = os.path.join(TMP, "nonsquare.png")
    Image.open(files[0]).convert("RGB").crop((0, 0, 1001, 777)).save(ns)
    fs = files + kerm + [ns]
    tf = T.Compose([T.Resize(256), T.TenCrop(224)])
    recs, _ = run_tool(["tencrop", "3", "256", "224"] + fs)
    check(len(recs) == 10 * len(fs), "ten-crop: expected 10 records per image")
    for i, f in enumerate(fs):
        crops = tf(Image.open(f).convert("RGB"))
        for k in range(10):
            st, a = recs[10 * i + k]
            ref = as_hwc(crops[k])
            check(st == 0 and a.shape == ref.shape and (a == ref).all(),
                  "%s: ten-crop %d differs from torchvision" % (f, k))
    print("ten-crop: %d images x 10 crops match torchvision" % len(fs))


def test_bad_inputs():
    good = sorted(glob.glob(os.path.join(DATA, "nih/images/*.png")))[0]
    raw = open(good, "rb").read()
    jpg = sorted(glob.glob(os.path.join(DATA, "kermany-224/train/NORMAL/*.jpeg")))[0]
    jraw = open(jpg, "rb").read()
    bad = {}

    def mk(name, data):
        p = os.path.join(TMP, name)
        open(p, "wb").write(data)
        bad[p] = name
        return p

    mk("empty.png", b"")
    mk("text.png", b"hello, this is not an image\n" * 10)
    mk("trunc.png", raw[: len(raw) // 2])
    mk("trunc_end.png", raw[:-12])  # IEND missing
    mk("trunc.jpeg", jraw[: len(jraw) // 2])
    mk("trunc_tiny.jpeg", jraw[:300])
    ihdr = struct.pack(">IIBBBBB", 200000, 200000, 8, 0, 0, 0, 0)
    mk("huge.png", b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IEND", b""))
    ihdr0 = struct.pack(">IIBBBBB", 0, 0, 8, 0, 0, 0, 0)
    mk("zero.png", b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr0) + png_chunk(b"IEND", b""))
    # JPEG claiming 0 height: patch the SOF0 marker's height
    i = jraw.find(b"\xff\xc0")
    if i > 0:
        z = bytearray(jraw)
        z[i + 5:i + 7] = b"\0\0"
        mk("zero.jpeg", bytes(z))
    cmyk = os.path.join(TMP, "cmyk.jpg")
    Image.open(good).convert("CMYK").resize((64, 64)).save(cmyk)
    bad[cmyk] = "cmyk.jpg"
    missing = os.path.join(TMP, "does-not-exist.png")
    args = [good] + list(bad) + [missing, TMP, good]
    recs, r = run_tool(["decode", "0"] + args, expect_ok=False)
    check(r.returncode == 1, "bad inputs: img_dump should fail")
    check(len(recs) == len(args), "bad inputs: one record per input")
    check(recs[0][0] == 0 and recs[-1][0] == 0, "good files around bad ones still decode")
    lines = r.stderr.strip().splitlines()
    check(len(lines) == len(args) - 2, "one error line per bad input, got:\n" + r.stderr)
    for p, line in zip(list(bad) + [missing, TMP], lines):
        check(line.startswith(p), "error names the file: %r" % line)
    print("bad inputs:\n  " + "\n  ".join(lines))
    check(any("beyond the limit" in l for l in lines), "huge PNG gives the size-limit error")
    check(any("truncated" in l for l in lines if "trunc.jpeg" in l), "truncated JPEG reported as such")
    check(any("CMYK" in l for l in lines if "cmyk.jpg" in l), "CMYK JPEG refused with a clear message")


def main():
    if not os.path.isdir(os.path.join(DATA, "nih/images")):
        print("skipped: %s not found" % DATA)
        sys.exit(77)
    if not os.path.exists(TOOL):
        print("img_dump not built at %s" % TOOL)
        sys.exit(1)
    for t in (test_generated, test_nih_decode, test_kermany_decode, test_resize, test_tencrop,
              test_bad_inputs):
        print("==", t.__name__)
        t()
    if failures:
        print("%d failure(s)" % len(failures))
        sys.exit(1)
    print("all image parity checks passed")


if __name__ == "__main__":
    main()
