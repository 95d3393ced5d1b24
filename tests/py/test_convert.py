"""tools/convert.py against PyTorch/torchvision and the C reader (st_dump).

A torchvision DenseNet-121 state dict is saved with torch.save as a plain
state dict, as {"state_dict": DataParallel-prefixed}, as a pickled whole
nn.Module and as a legacy CheXNet checkpoint (module.densenet121. prefix,
norm.1/conv.1 names, classifier.0., no num_batches_tracked). Each is
converted to safetensors, read by the C reader (every tensor present, values
bit-identical) and converted back with --to-pth, which must load into a fresh
torchvision densenet121 with load_state_dict(strict=True) and give back the
original tensors. F16/BF16 storage must match torch's own .half()/.bfloat16().
"""
import json
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cxtest  # noqa: E402

torch = cxtest.need_torch()
import numpy as np  # noqa: E402
import torchvision  # noqa: E402

SOURCE = os.environ.get("CX_SOURCE") or os.path.join(os.path.dirname(__file__), "..", "..")
CONVERT = os.path.join(SOURCE, "tools", "convert.py")
ST_DUMP = cxtest.tool("st_dump")
WORK = os.path.join(cxtest.TMP, "test_convert.%d" % os.getpid())

failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)
        print("FAIL: " + msg)


def convert(*args, ok=True):
    r = subprocess.run([sys.executable, CONVERT] + list(args), capture_output=True, text=True)
    if ok and r.returncode != 0:
        raise AssertionError("convert.py %s failed: %s%s" % (" ".join(args), r.stdout, r.stderr))
    return r


def st_dump(path, raw=None):
    cmd = [ST_DUMP] + (["--raw", raw] if raw else []) + [path]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError("st_dump %s failed: %s" % (path, r.stderr))
    return json.loads(r.stdout)


def legacy_name(k):
    k = re.sub(r"\.(norm|relu|conv)([12])\.", r".\1.\2.", k)
    k = k.replace("classifier.", "classifier.0.")
    return "module.densenet121." + k


def check_c_view(path, expected, dtype, label):
    """expected: name -> tensor (float or int64). The C reader must list exactly
    these names with the right shapes and dtype, and its fp32 values must equal
    the expected tensors converted by torch."""
    raw = path + ".raw"
    d = st_dump(path, raw)
    names = [t["name"] for t in d["tensors"]]
    check(sorted(names) == sorted(expected), "%s: C reader tensor names differ: %s" % (
        label, sorted(set(names) ^ set(expected))[:5]))
    floats = np.fromfile(raw, dtype="<f4")
    pos = 0
    for t in d["tensors"]:
        ref = expected.get(t["name"])
        if ref is None:
            continue
        check(t["shape"] == list(ref.shape), "%s: %s shape %s vs %s" % (
            label, t["name"], t["shape"], list(ref.shape)))
        if ref.is_floating_point():
            check(t["dtype"] == dtype, "%s: %s dtype %s, expected %s" % (
                label, t["name"], t["dtype"], dtype))
            n = t["numel"]
            got = floats[pos:pos + n]
            pos += n
            want = ref.to({"F32": torch.float32, "F16": torch.float16,
                           "BF16": torch.bfloat16}[dtype]).float().reshape(-1).numpy()
            check(np.array_equal(got, want), "%s: %s values differ (max |d| %g)" % (
                label, t["name"], float(np.max(np.abs(got - want))) if n else 0))
        else:
            check(t["dtype"] == "I64", "%s: %s dtype %s" % (label, t["name"], t["dtype"]))
    check(pos == floats.size, "%s: raw dump has %d floats, used %d" % (label, floats.size, pos))
    return d


def check_back(st_path, original, label, num_classes=14, dtype=None, skip_nbt=False):
    pth = st_path + ".pth"
    convert("--to-pth", st_path, pth)
    sd = torch.load(pth, map_location="cpu")
    m = torchvision.models.densenet121(num_classes=num_classes)
    try:
        m.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        check(False, "%s: load_state_dict(strict=True) failed: %s" % (label, str(e)[:300]))
        return
    msd = m.state_dict()
    for k, v in original.items():
        if skip_nbt and k.endswith("num_batches_tracked"):
            check(int(msd[k]) == 0, "%s: %s should be 0" % (label, k))
            continue
        want = v
        if dtype is not None and v.is_floating_point():
            want = v.to(dtype).float()
        check(msd[k].dtype == v.dtype, "%s: %s dtype %s after round trip" % (label, k, msd[k].dtype))
        check(torch.equal(msd[k], want), "%s: %s differs after round trip" % (label, k))


XRV_CLASSES = ["Atelectasis", "Consolidation", "Infiltration", "Pneumothorax", "Edema",
               "Emphysema", "Fibrosis", "Effusion", "Pneumonia", "Pleural_Thickening",
               "Cardiomegaly", "Nodule", "Mass", "Hernia", "Lung Lesion", "Fracture",
               "Lung Opacity", "Enlarged Cardiomediastinum"]


def chexnet_loads(path):
    r = subprocess.run([cxtest.CHEXNET, "info", path], capture_output=True, text=True)
    return r.returncode == 0, r.stdout + r.stderr


def test_xrv_style():
    """A torchxrayvision-style checkpoint: 1-channel conv0, 18 outputs and an
    op_threshs tensor (NaN for outputs without a threshold)."""
    torch.manual_seed(3)
    m = torchvision.models.densenet121(num_classes=18)
    m.features.conv0 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    sd = m.state_dict()
    op = torch.rand(18, generator=torch.Generator().manual_seed(4)) * 0.8 + 0.1
    op[[14, 15, 17]] = float("nan")  # no threshold for these outputs
    sdx = collections_od(sd)
    sdx["op_threshs"] = op
    px = os.path.join(WORK, "xrv.pth")
    torch.save(sdx, px)
    cls = ["--classes", ",".join(XRV_CLASSES)]
    norm1 = ["--meta", "mean=0.5", "--meta", "std=0.00048828125"]
    out = os.path.join(WORK, "xrv.safetensors")

    # NaN thresholds in the classes kept: refused, nothing written
    r = convert(px, out, *(cls + norm1), ok=False)
    check(r.returncode != 0 and "op_threshs" in r.stderr and "Lung Lesion" in r.stderr and
          "--keep" in r.stderr and "Traceback" not in r.stderr,
          "xrv: NaN op_threshs not refused clearly: %r" % r.stderr)
    check(not os.path.exists(out), "xrv: a file written despite the refusal")

    # --keep: the classifier's rows and the thresholds of those classes
    keep = ["Pneumonia", "Effusion", "Cardiomegaly"]
    r = convert(px, out, *(cls + norm1 + ["--keep", ",".join(keep)]))
    idx = [XRV_CLASSES.index(k) for k in keep]
    expected = collections_od(sd)
    expected["classifier.weight"] = sd["classifier.weight"][idx]
    expected["classifier.bias"] = sd["classifier.bias"][idx]
    d = check_c_view(out, expected, "F32", "xrv --keep")
    meta = d["metadata"]
    check(json.loads(meta["classes"]) == keep, "xrv --keep: classes %r" % meta.get("classes"))
    thr = json.loads(meta.get("thresholds", "null") or "null")
    want = op[idx].float().tolist()
    check(thr is not None and np.array_equal(np.float32(thr), np.float32(want)),
          "xrv --keep: thresholds %r, op_threshs %r" % (thr, want))
    check(meta.get("mean") == "0.5" and meta.get("std") == "0.00048828125",
          "xrv: single mean/std kept: %r %r" % (meta.get("mean"), meta.get("std")))
    ok, text = chexnet_loads(out)
    check(ok and "thresholds" in text, "xrv --keep: chexnet does not load it: %s" % text[-400:])

    # every output with a threshold: all carried
    op2 = op.clone()
    op2[[14, 15, 17]] = 0.5
    sdx["op_threshs"] = op2
    torch.save(sdx, px)
    r = convert(px, out, *(cls + norm1))
    d = st_dump(out)
    thr = json.loads(d["metadata"]["thresholds"])
    check(np.array_equal(np.float32(thr), op2.float().numpy()), "xrv: all 18 thresholds")
    check(chexnet_loads(out)[0], "xrv: 18 thresholds: chexnet does not load it")
    # --no-thresholds: left out
    r = convert(px, out, *(cls + norm1 + ["--no-thresholds"]))
    d = st_dump(out)
    check("thresholds" not in d["metadata"] and
          not any(t["name"] == "op_threshs" for t in d["tensors"]), "xrv: --no-thresholds")
    check(chexnet_loads(out)[0], "xrv --no-thresholds: chexnet does not load it")

    # any other unexpected tensor: refused unless --drop names it
    sdx["extra.buffer"] = torch.zeros(3)
    torch.save(sdx, px)
    os.unlink(out)
    r = convert(px, out, *(cls + norm1), ok=False)
    check(r.returncode != 0 and "extra.buffer" in r.stderr and "--drop" in r.stderr,
          "xrv: unexpected tensor not refused: %r" % r.stderr)
    check(not os.path.exists(out), "xrv: written despite an unexpected tensor")
    r = convert(px, out, *(cls + norm1 + ["--drop", "extra.buffer"]))
    check(chexnet_loads(out)[0], "xrv --drop: chexnet does not load it")

    # one mean/std value: only for a 1-channel model; bad values refused
    p3 = os.path.join(WORK, "plain3.pth")
    torch.save(torchvision.models.densenet121(num_classes=14).state_dict(), p3)
    bad = os.path.join(WORK, "never3.safetensors")
    for extra, what in ((["--meta", "mean=0.5"], "one mean for 3 channels"),
                        (["--meta", "std=0,1,1"], "std 0"),
                        (["--meta", "mean=a,b,c"], "mean not numbers"),
                        (["--meta", "thresholds=[0.5]"], "thresholds count"),
                        (["--meta", "temperature=[%s]" % ",".join(["-1"] * 14)],
                         "negative temperature")):
        r = convert(p3, bad, *extra, ok=False)
        check(r.returncode != 0 and "Traceback" not in r.stderr and not os.path.exists(bad),
              "convert: %s accepted or unclear: %r" % (what, r.stderr))


def collections_od(d):
    import collections
    return collections.OrderedDict(d)


def main():
    if not os.path.exists(ST_DUMP):
        raise AssertionError("st_dump not built: %s" % ST_DUMP)
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    torch.manual_seed(0)
    model = torchvision.models.densenet121(num_classes=14)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.copy_(torch.randn(mod.running_mean.shape, generator=g))
                mod.running_var.copy_(0.5 + torch.rand(mod.running_var.shape, generator=g))
                mod.weight.copy_(1 + 0.2 * torch.randn(mod.weight.shape, generator=g))
                mod.bias.copy_(0.1 * torch.randn(mod.bias.shape, generator=g))
                mod.num_batches_tracked.fill_(7)
        model.classifier.bias.copy_(torch.randn(14, generator=g))
    sd = model.state_dict()

    forms = {}
    p = os.path.join(WORK, "plain.pth")
    torch.save(sd, p)
    forms["plain"] = p
    p = os.path.join(WORK, "dataparallel.pth.tar")
    dp = torch.nn.DataParallel(model).state_dict()
    assert all(k.startswith("module.") for k in dp)
    torch.save({"epoch": 3, "best_loss": 0.25, "state_dict": dp}, p)
    forms["dataparallel"] = p
    p = os.path.join(WORK, "whole.pth")
    torch.save(model, p)
    forms["whole"] = p
    legacy = {legacy_name(k): v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    check("module.densenet121.features.denseblock1.denselayer1.norm.1.weight" in legacy,
          "legacy naming helper")
    check("module.densenet121.classifier.0.weight" in legacy, "legacy classifier name")
    p = os.path.join(WORK, "legacy.pth.tar")
    torch.save({"arch": "DenseNet121", "state_dict": legacy}, p)
    forms["legacy"] = p

    for label, path in forms.items():
        out = os.path.join(WORK, label + ".safetensors")
        r = convert(path, out)
        expected = {k: v for k, v in sd.items()
                    if not (label == "legacy" and k.endswith("num_batches_tracked"))}
        check("wrote %d tensors" % len(expected) in r.stdout,
              "%s: tensor count in %r" % (label, r.stdout))
        d = check_c_view(out, expected, "F32", label)
        meta = d["metadata"]
        check(meta.get("arch") == "densenet121", "%s: arch %r" % (label, meta.get("arch")))
        check(json.loads(meta.get("classes", "null")) == cxtest.CLASSES14,
              "%s: classes %r" % (label, meta.get("classes")))
        check(meta.get("input_size") == "224", "%s: input_size" % label)
        check(meta.get("mean") == "0.485,0.456,0.406", "%s: mean" % label)
        check(meta.get("std") == "0.229,0.224,0.225", "%s: std" % label)
        check(meta.get("format") == "pt", "%s: format" % label)
        with open(out, "rb") as f:
            hl = int.from_bytes(f.read(8), "little")
        check(hl % 8 == 0, "%s: header length %d not a multiple of 8" % (label, hl))
        check_back(out, sd, label, skip_nbt=(label == "legacy"))

    # Half precision storage: identical to torch's own rounding.
    for dt, tdt in (("f16", torch.float16), ("bf16", torch.bfloat16)):
        out = os.path.join(WORK, "plain-%s.safetensors" % dt)
        convert("--dtype", dt, forms["plain"], out)
        check_c_view(out, sd, dt.upper(), dt)
        check_back(out, sd, dt, dtype=tdt)
        check(os.path.getsize(out) < os.path.getsize(os.path.join(WORK, "plain.safetensors")) * 0.6,
              "%s: file not smaller" % dt)

    # --keep-names keeps the legacy names exactly.
    out = os.path.join(WORK, "legacy-keep.safetensors")
    convert("--keep-names", forms["legacy"], out)
    d = st_dump(out)
    check(sorted(t["name"] for t in d["tensors"]) == sorted(legacy),
          "--keep-names changed names")
    check(d["metadata"].get("arch") == "densenet121", "--keep-names: arch detection")

    # One output -> ["Pneumonia"]; --classes and --meta.
    sd1 = dict(sd)
    sd1["classifier.weight"] = sd["classifier.weight"][:1].clone()
    sd1["classifier.bias"] = sd["classifier.bias"][:1].clone()
    p1 = os.path.join(WORK, "one.pth")
    torch.save(sd1, p1)
    out = os.path.join(WORK, "one.safetensors")
    convert(p1, out)
    d = st_dump(out)
    check(json.loads(d["metadata"]["classes"]) == ["Pneumonia"], "1-class default classes")
    check_back(out, sd1, "one-class", num_classes=1)
    convert(p1, out, "--classes", "Pneumonia-like", "--meta", "source=unit test",
            "--meta", "format=pt")
    d = st_dump(out)
    check(json.loads(d["metadata"]["classes"]) == ["Pneumonia-like"], "--classes list")
    check(d["metadata"].get("source") == "unit test", "--meta pass-through")

    # Errors: clear messages, non-zero exit, nothing written.
    sd5 = dict(sd)
    sd5["classifier.weight"] = sd["classifier.weight"][:5].clone()
    sd5["classifier.bias"] = sd["classifier.bias"][:5].clone()
    p5 = os.path.join(WORK, "five.pth")
    torch.save(sd5, p5)
    bad_out = os.path.join(WORK, "never.safetensors")
    r = convert(p5, bad_out, ok=False)
    check(r.returncode != 0 and "--classes" in r.stderr, "5 outputs without --classes: %r" % r.stderr)
    r = convert(p5, bad_out, "--classes", "a,b,c", ok=False)
    check(r.returncode != 0 and "5 outputs" in r.stderr, "--classes count mismatch: %r" % r.stderr)
    r = convert(p5, bad_out, "--classes", '["a","b","c","d","e"]')
    check(r.returncode == 0, "--classes as a JSON array")
    os.unlink(bad_out)
    junk = os.path.join(WORK, "junk.pth")
    with open(junk, "wb") as f:
        f.write(b"this is not a checkpoint")
    r = convert(junk, bad_out, ok=False)
    check(r.returncode != 0 and "junk.pth" in r.stderr and "Traceback" not in r.stderr,
          "junk input: %r" % r.stderr)
    r = convert(os.path.join(WORK, "missing.pth"), bad_out, ok=False)
    check(r.returncode != 0 and "missing.pth" in r.stderr, "missing input: %r" % r.stderr)
    r = convert("--to-pth", junk, bad_out, ok=False)
    check(r.returncode != 0 and "Traceback" not in r.stderr, "--to-pth junk: %r" % r.stderr)
    check(not os.path.exists(bad_out), "output written despite errors")
    check(not [f for f in os.listdir(WORK) if ".tmp-" in f], "temporary files left behind")
    r = convert("--help")
    check(r.returncode == 0 and "--to-pth" in r.stdout, "--help")

    test_xrv_style()

    if failures:
        print("%d failure(s)" % len(failures))
        sys.exit(1)
    shutil.rmtree(WORK, ignore_errors=True)
    print("OK")


if __name__ == "__main__":
    main()
