"""safetensors interoperability between PyTorch and the C reader/writer.

Debian has no python3-safetensors, so the format is written and read here by
hand (struct + json + numpy/torch), independently of the C code and of
tools/convert.py.

1. Python -> C: a file with every dtype the C side knows (F32, F16, BF16, F64,
   I64, I32, I16, I8, U8, BOOL), scalars, empty tensors, special values, non-
   ASCII names and metadata, data laid out in an order different from the
   header's, is dumped by st_dump; names, shapes, offsets and metadata must
   match and every value must equal torch's own conversion to float32.
2. C -> Python: st_dump --copy rewrites a file with the C writer as F32, F16
   and BF16; the Python reader checks the layout (8-byte aligned header padded
   with spaces, contiguous data) and that the bytes equal torch's .half() /
   .bfloat16() rounding of the same values (ties, subnormals, overflow, NaN).
3. Files the reference implementation rejects are rejected by C with a
   message naming the file.
"""
import json
import os
import shutil
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cxtest  # noqa: E402

torch = cxtest.need_torch()
import numpy as np  # noqa: E402

ST_DUMP = cxtest.tool("st_dump")
WORK = os.path.join(cxtest.TMP, "test_safetensors_torch.%d" % os.getpid())

NAMES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
         torch.float64: "F64", torch.int64: "I64", torch.int32: "I32", torch.int16: "I16",
         torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}

failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)
        print("FAIL: " + msg)


def raw_bytes(t):
    t = t.contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().astype("<i2").tobytes()
    a = t.numpy()
    return a.astype(a.dtype.newbyteorder("<")).tobytes()


def write_st(path, tensors, metadata=None, order=None, pad=b" "):
    """tensors: list of (name, tensor). order: data layout order (indices)."""
    order = order or list(range(len(tensors)))
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    blobs = []
    off = 0
    for i in order:
        name, t = tensors[i]
        b = raw_bytes(t)
        header[name] = {"dtype": NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    # header order = tensors order (not the data order)
    ordered = {}
    if metadata is not None:
        ordered["__metadata__"] = metadata
    for name, _ in tensors:
        ordered[name] = header[name]
    h = json.dumps(ordered, ensure_ascii=False).encode("utf-8")
    h += pad * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def read_st(path):
    """Independent reader: returns (header dict, header bytes, data bytes)."""
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    hdr = buf[8:8 + n]
    return json.loads(hdr.decode("utf-8")), hdr, buf[8 + n:]


def st_dump(*args):
    r = subprocess.run([ST_DUMP] + list(args), capture_output=True, text=True)
    return r


def special_floats():
    v = [0.0, -0.0, 1.0, -1.5, 65504.0, 65519.0, 65520.0, 1e6, -1e6, 3.0e38,
         2.0 ** -24, 2.0 ** -25, 3 * 2.0 ** -26, 2.0 ** -14, 1 + 2.0 ** -11, 1 + 3 * 2.0 ** -11,
         1 + 2.0 ** -8, 1 + 3 * 2.0 ** -8, 1e-40, float("inf"), float("-inf"), float("nan"),
         0.1, 1.0 / 3.0]
    return torch.tensor(v, dtype=torch.float64)


def part1():
    g = torch.Generator().manual_seed(0)
    spec = special_floats()
    tensors = [
        ("f32", torch.randn(3, 4, 5, generator=g)),
        ("f32.special", spec.float()),
        ("f16", (torch.randn(7, 3, generator=g) * 100).half()),
        ("f16.special", spec.half()),
        ("f16.all", torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16)
         .view(torch.float16)),
        ("bf16", torch.randn(2, 3, 4, 5, generator=g).bfloat16()),
        ("bf16.special", spec.bfloat16()),
        ("f64", torch.randn(11, generator=g, dtype=torch.float64) * 1e20),
        ("f64.special", torch.cat([spec, torch.tensor([1e300, -1e300, 3.4028235e38,
                                                       3.4028235677973366e38, 1e-50])])),
        ("i64", torch.tensor([0, -1, 2 ** 62, -(2 ** 63), 2 ** 63 - 1], dtype=torch.int64)),
        ("i32", torch.tensor([[7, -2 ** 31], [2 ** 31 - 1, 0]], dtype=torch.int32)),
        ("i16", torch.tensor([-32768, 32767, 5], dtype=torch.int16)),
        ("i8", torch.tensor([-128, 127], dtype=torch.int8)),
        ("u8", torch.tensor([0, 255, 17], dtype=torch.uint8)),
        ("bool", torch.tensor([True, False, True])),
        ("scalar", torch.tensor(2.5)),
        ("num_batches_tracked", torch.tensor(12345, dtype=torch.int64)),
        ("empty", torch.zeros(0, 3)),
        ("empty2", torch.zeros(4, 0, dtype=torch.float16)),
        ("features.denseblock1.denselayer1.norm1.weight", torch.rand(64, generator=g)),
        ("naïve ✓ \"quoted\" \\ tab\t", torch.ones(2)),
    ]
    meta = {"arch": "densenet121", "classes": json.dumps(cxtest.CLASSES14),
            "note": "ünïcödé ✓ \"q\" \\ \n newline", "empty": ""}
    order = list(range(len(tensors)))[::-1]
    order = order[1::2] + order[0::2]  # data order unlike the header order
    path = os.path.join(WORK, "py.safetensors")
    write_st(path, tensors, meta, order)
    r = st_dump("--values", path)
    check(r.returncode == 0, "st_dump failed on the Python file: %s" % r.stderr)
    if r.returncode:
        return
    # "-0" must stay a negative zero (json makes it the integer 0).
    d = json.loads(r.stdout, parse_int=lambda s: float(s) if s == "-0" else int(s))
    check(d["metadata"] == meta, "metadata differs: %r" % d["metadata"])
    header, _, data = read_st(path)
    check(d["data_size"] == len(data), "data_size")
    got = {t["name"]: t for t in d["tensors"]}
    check([t["name"] for t in d["tensors"]] == [n for n, _ in tensors],
          "C does not keep the header order")
    for name, t in tensors:
        c = got.get(name)
        if c is None:
            check(False, "tensor %r missing" % name)
            continue
        check(c["dtype"] == NAMES[t.dtype], "%r dtype %s" % (name, c["dtype"]))
        check(c["shape"] == list(t.shape), "%r shape %s" % (name, c["shape"]))
        check(c["data_offsets"] == header[name]["data_offsets"], "%r offsets" % name)
        check(c["numel"] == t.numel(), "%r numel" % name)
        vals = np.array(c["values"], dtype=np.float64 if not t.is_floating_point() else np.float32)
        if t.is_floating_point():
            want = t.float().reshape(-1).numpy()
            same = np.array_equal(vals, want, equal_nan=True)
            # incl. the sign of zero (a NaN's sign cannot travel through JSON)
            num = ~np.isnan(want)
            same = same and np.array_equal(np.signbit(vals[num]), np.signbit(want[num]))
            check(same, "%r values differ from torch's float(): first %s vs %s" % (
                name, vals[:6], want[:6]))
        else:
            want = t.reshape(-1).to(torch.int64).numpy()
            check(np.array_equal(np.array(c["values"], dtype=np.int64), want),
                  "%r integer values differ" % name)


def part2():
    g = torch.Generator().manual_seed(1)
    base = torch.cat([special_floats().float(),
                      torch.randn(5000, generator=g) * torch.logspace(-10, 10, 5000)])
    # Random bit patterns hit every rounding case, incl. exact ties.
    bits = torch.randint(-2 ** 31, 2 ** 31 - 1, (20000,), generator=g, dtype=torch.int64)
    pat = torch.from_numpy(bits.numpy().astype(np.int64).astype(np.uint32).view(np.float32).copy())
    ties16 = (torch.arange(0, 2000, dtype=torch.int32) * 8192 + 4096 + 0x38800000).view(
        torch.float32)
    tiesb = (torch.arange(0, 2000, dtype=torch.int32) * 65536 + 32768 + 0x3f800000).view(
        torch.float32)
    src = [("base", base.reshape(5024 // 8, 8)), ("pattern", pat), ("ties16", ties16),
           ("tiesbf16", tiesb), ("scalar", torch.tensor(-0.0)), ("empty", torch.zeros(2, 0)),
           ("counter", torch.tensor(99, dtype=torch.int64)),
           ("ints", torch.tensor([[1, -2], [3, -(2 ** 63)]], dtype=torch.int64))]
    meta = {"arch": "densenet121", "mean": "0.485,0.456,0.406", "k\u00e9y": "v\u00e4l \"x\""}
    inp = os.path.join(WORK, "src.safetensors")
    write_st(inp, src, meta)
    for dt, tdt in (("f32", torch.float32), ("f16", torch.float16), ("bf16", torch.bfloat16)):
        out = os.path.join(WORK, "c-%s.safetensors" % dt)
        r = st_dump("--copy", out, "--dtype", dt, inp)
        check(r.returncode == 0, "C writer failed (%s): %s" % (dt, r.stderr))
        if r.returncode:
            continue
        with open(out, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
        header, hbytes, data = read_st(out)
        check(n % 8 == 0, "%s: header length %d not a multiple of 8" % (dt, n))
        check(hbytes.rstrip(b" ").endswith(b"}") and hbytes.startswith(b"{"),
              "%s: header padding is not spaces" % dt)
        check(header.get("__metadata__") == meta, "%s: metadata %r" % (dt, header.get("__metadata__")))
        spans = sorted(tuple(e["data_offsets"]) for k, e in header.items() if k != "__metadata__")
        pos = 0
        for b, e in spans:
            check(b == pos, "%s: data not contiguous at %d" % (dt, b))
            pos = e
        check(pos == len(data), "%s: trailing data" % dt)
        for name, t in src:
            e = header.get(name)
            if e is None:
                check(False, "%s: %r missing" % (dt, name))
                continue
            b0, b1 = e["data_offsets"]
            raw = data[b0:b1]
            check(e["shape"] == list(t.shape), "%s: %r shape" % (dt, name))
            if t.is_floating_point():
                want_t = t.to(tdt)
                check(e["dtype"] == NAMES[tdt], "%s: %r dtype %s" % (dt, name, e["dtype"]))
                want = raw_bytes(want_t)
                if raw != want:
                    # NaN payloads may differ; everything else must be identical.
                    w = np.frombuffer(want, dtype="<u2" if tdt != torch.float32 else "<u4")
                    gt = np.frombuffer(raw, dtype=w.dtype)
                    nan = torch.isnan(want_t.float()).reshape(-1).numpy()
                    gnan = torch.isnan(
                        (torch.from_numpy(gt.astype(np.int32).astype(np.int16) if w.dtype == "<u2"
                                          else gt.astype(np.int64).astype(np.int32))
                         .view(tdt)).float()).numpy()
                    bad = (gt != w) & ~(nan & gnan)
                    check(not bad.any() and np.array_equal(nan, gnan),
                          "%s: %r: %d values differ from torch's rounding, e.g. %s vs %s" % (
                              dt, name, int(bad.sum()), gt[bad][:4], w[bad][:4]))
            else:
                check(e["dtype"] == "I64", "%s: %r dtype" % (dt, name))
                check(raw == raw_bytes(t), "%s: %r integer bytes" % (dt, name))


def part3():
    ok = [("t", torch.ones(2))]
    cases = []

    def add(name, header_obj=None, data=b"", hlen=None, raw_header=None):
        path = os.path.join(WORK, name + ".safetensors")
        h = raw_header if raw_header is not None else json.dumps(header_obj).encode()
        n = len(h) if hlen is None else hlen
        with open(path, "wb") as f:
            f.write(struct.pack("<Q", n) + h + data)
        cases.append(path)

    e = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
    add("overlap", {"a": e, "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8)
    add("hole", {"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8)
    add("trailing", {"a": e}, b"\0" * 12)
    add("mismatch", {"a": {"dtype": "F64", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8)
    add("badtype", {"a": {"dtype": "float32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8)
    add("meta", {"__metadata__": {"n": 1}, "a": e}, b"\0" * 8)
    add("hugelen", {"a": e}, b"\0" * 8, hlen=2 ** 40)
    add("beyond", {"a": e}, b"\0" * 8, hlen=4096)
    add("notjson", raw_header=b"{'a': 1}")
    add("array", raw_header=b"[]")
    add("bigshape", {"a": {"dtype": "F32", "shape": [2 ** 62, 2 ** 62], "data_offsets": [0, 8]}},
        b"\0" * 8)
    for p in cases:
        r = st_dump(p)
        check(r.returncode == 1 and p in r.stderr and "Traceback" not in r.stderr
              and r.returncode >= 0, "bad file %s: rc %d, %r" % (os.path.basename(p),
                                                                 r.returncode, r.stderr))
    # ... while the same layout done right is accepted.
    good = os.path.join(WORK, "good.safetensors")
    write_st(good, ok)
    check(st_dump(good).returncode == 0, "good file rejected")


def main():
    if not os.path.exists(ST_DUMP):
        raise AssertionError("st_dump not built: %s" % ST_DUMP)
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    part1()
    part2()
    part3()
    if failures:
        print("%d failure(s)" % len(failures))
        sys.exit(1)
    shutil.rmtree(WORK, ignore_errors=True)
    print("OK")


if __name__ == "__main__":
    main()
