#!/usr/bin/env python3
"""Convert a PyTorch CheXNet/DenseNet checkpoint to a chexnet safetensors file
and back.

  convert.py model.pth.tar model.safetensors            PyTorch -> safetensors
  convert.py --to-pth model.safetensors model.pth       safetensors -> PyTorch

The input checkpoint may be a state dict, a dict holding one under
"state_dict" (or "model_state_dict" / "model"), or a pickled whole model
(an nn.Module; its class must be importable, e.g. torchvision's DenseNet).
Loading a pickle runs code from the file: convert only checkpoints you trust.

Tensor names are normalised to torchvision's modern DenseNet names unless
--keep-names is given: the DataParallel prefix "module." and a wrapper's
"densenet121." are stripped, legacy "norm.1"/"relu.1"/"conv.1"/"norm.2"/
"relu.2"/"conv.2" become "norm1"/.../"conv2" and "classifier.0." becomes
"classifier." (the chexnet loader accepts the raw variants too).

The safetensors file gets "__metadata__" keys used by chexnet: arch, classes
(a JSON array of class names), input_size, mean, std, format. Needs only
torch (and numpy, which torch uses); not the safetensors package.

A torchxrayvision-style checkpoint carries "op_threshs": a per-class
probability threshold in the model's output order. It becomes the
"thresholds" metadata of the classes kept (--keep selects outputs; an output
without a usable threshold, e.g. NaN, must be left out or the thresholds
dropped with --no-thresholds). Any other tensor chexnet would not load is
refused unless --drop names it, so the file written is one chexnet loads.
mean and std (--meta) are three comma-separated numbers, or one for a
1-channel model (torchxrayvision's scaling to [-1024, 1024] is
--meta mean=0.5 --meta std=0.00048828125).
"""

import argparse
import collections
import json
import math
import os
import re
import struct
import sys
import tempfile

CHESTXRAY14 = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass",
               "Nodule", "Pneumonia", "Pneumothorax", "Consolidation", "Edema",
               "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia"]

ARCH_BY_BLOCKS = {
    (6, 12, 24, 16): "densenet121",
    (6, 12, 32, 32): "densenet169",
    (6, 12, 48, 32): "densenet201",
    (6, 12, 36, 24): "densenet161",
}

MAX_HEADER = 100 * 1000 * 1000  # as the reference implementation


class ConvertError(Exception):
    pass


def _torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover
        raise ConvertError("PyTorch is required: %s" % e)
    return torch


def _dtype_tables():
    import numpy as np
    torch = _torch()
    # safetensors name -> (torch dtype, numpy little-endian dtype used for the bytes)
    return {
        "F64": (torch.float64, np.dtype("<f8")),
        "F32": (torch.float32, np.dtype("<f4")),
        "F16": (torch.float16, np.dtype("<f2")),
        "BF16": (torch.bfloat16, np.dtype("<i2")),  # numpy has no bfloat16
        "I64": (torch.int64, np.dtype("<i8")),
        "I32": (torch.int32, np.dtype("<i4")),
        "I16": (torch.int16, np.dtype("<i2")),
        "I8": (torch.int8, np.dtype("i1")),
        "U8": (torch.uint8, np.dtype("u1")),
        "BOOL": (torch.bool, np.dtype("?")),
    }


def _st_name(dtype):
    for name, (td, _) in _dtype_tables().items():
        if td == dtype:
            return name
    raise ConvertError("tensor dtype %s cannot be stored in safetensors by this tool" % dtype)


# ------------------------------------------------------------ atomic write

def atomic_write(path, chunks):
    """Writes an iterable of bytes-like chunks to path atomically (temporary
    file in the same folder, fsync, rename, fsync of the folder)."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            for c in chunks:
                f.write(c)
            f.flush()
            os.fsync(f.fileno())
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


# -------------------------------------------------------------- safetensors

def tensor_bytes(t):
    """Little-endian bytes of a CPU tensor and its safetensors dtype name."""
    torch = _torch()
    t = t.detach().cpu().contiguous()
    name = _st_name(t.dtype)
    np_dtype = _dtype_tables()[name][1]
    if t.dtype == torch.bfloat16:
        arr = t.view(torch.int16).numpy()
    else:
        arr = t.numpy()
    return name, arr.astype(np_dtype, copy=False).tobytes()


def write_safetensors(path, tensors, metadata=None):
    """tensors: ordered (name, tensor) pairs; metadata: str -> str."""
    header = collections.OrderedDict()
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise ConvertError("metadata keys and values must be strings (%r: %r)" % (k, v))
        header["__metadata__"] = collections.OrderedDict(metadata)
    blobs = []
    offset = 0
    for name, t in tensors:
        if name == "__metadata__" or name in header:
            raise ConvertError("duplicate or reserved tensor name %r" % name)
        dt, data = tensor_bytes(t)
        header[name] = {"dtype": dt, "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    if len(text) > MAX_HEADER:
        raise ConvertError("header too large (%d bytes)" % len(text))
    atomic_write(path, [struct.pack("<Q", len(text)), text] + blobs)


def read_safetensors(path):
    """Returns (OrderedDict name -> tensor in header order, metadata dict).
    Validates like the reference implementation."""
    import numpy as np
    torch = _torch()
    with open(path, "rb") as f:
        buf = f.read()
    if len(buf) < 8:
        raise ConvertError("%s: too short for a safetensors file" % path)
    (n,) = struct.unpack("<Q", buf[:8])
    if n > MAX_HEADER:
        raise ConvertError("%s: header length %d exceeds the limit" % (path, n))
    if 8 + n > len(buf):
        raise ConvertError("%s: header length %d goes beyond the end of the file" % (path, n))
    try:
        header = json.loads(buf[8:8 + n].decode("utf-8"),
                            object_pairs_hook=collections.OrderedDict)
    except (UnicodeDecodeError, ValueError) as e:
        raise ConvertError("%s: bad header: %s" % (path, e))
    if not isinstance(header, dict):
        raise ConvertError("%s: header is not a JSON object" % path)
    data = memoryview(buf)[8 + n:]
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ConvertError("%s: __metadata__ must map strings to strings" % path)
    tables = _dtype_tables()
    spans = []
    out = collections.OrderedDict()
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise ConvertError("%s: tensor %r: entry needs exactly dtype, shape, data_offsets"
                               % (path, name))
        dt, shape, offs = info["dtype"], info["shape"], info["data_offsets"]
        if dt not in tables:
            raise ConvertError("%s: tensor %r: unsupported dtype %r" % (path, name, dt))
        if (not isinstance(shape, list) or
                not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
            raise ConvertError("%s: tensor %r: bad shape %r" % (path, name, shape))
        if (not isinstance(offs, list) or len(offs) != 2 or
                not all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offs)):
            raise ConvertError("%s: tensor %r: bad data_offsets %r" % (path, name, offs))
        torch_dt, np_dt = tables[dt]
        numel = 1
        for d in shape:
            numel *= d
        b, e = offs
        if e < b or e - b != numel * np_dt.itemsize or e > len(data):
            raise ConvertError("%s: tensor %r: data_offsets %r do not match shape %r x %s "
                               "or the data section (%d bytes)"
                               % (path, name, offs, shape, dt, len(data)))
        spans.append((b, e, name))
        if numel:
            arr = np.frombuffer(data, dtype=np_dt, count=numel, offset=b).reshape(shape).copy()
        else:
            arr = np.empty(shape, dtype=np_dt)
        t = torch.from_numpy(arr)
        if dt == "BF16":
            t = t.view(torch.bfloat16)
        out[name] = t
    cursor = 0
    for b, e, name in sorted(spans):
        if b != cursor:
            raise ConvertError("%s: tensor %r: data_offsets %s (expected to begin at %d)"
                               % (path, name, "overlap" if b < cursor else "leave a hole", cursor))
        cursor = e
    if cursor != len(data):
        raise ConvertError("%s: %d trailing bytes after the last tensor"
                           % (path, len(data) - cursor))
    return out, dict(meta)


# ---------------------------------------------------------- checkpoints

def _load_torch(path):
    torch = _torch()
    import inspect
    kwargs = {"map_location": "cpu"}
    if "weights_only" in inspect.signature(torch.load).parameters:
        kwargs["weights_only"] = False  # whole pickled models need the full unpickler
    try:
        return torch.load(path, **kwargs)
    except FileNotFoundError:
        raise ConvertError("%s: no such file" % path)
    except Exception as e:  # torch raises many kinds for corrupt input
        hint = ""
        if _looks_like_safetensors(path):
            hint = " (it looks like a safetensors file: use --to-pth to convert it back)"
        raise ConvertError("%s: cannot load as a PyTorch checkpoint: %s: %s%s"
                           % (path, type(e).__name__, e, hint))


def _looks_like_safetensors(path):
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return (len(head) == 9 and head[8:9] == b"{" and
            struct.unpack("<Q", head[:8])[0] <= MAX_HEADER)


def extract_state_dict(obj, path="checkpoint"):
    """A name -> tensor OrderedDict from a state dict, a dict with one under
    'state_dict'/'model_state_dict'/'model', or an nn.Module."""
    torch = _torch()
    if isinstance(obj, torch.nn.Module):
        return collections.OrderedDict(obj.state_dict())
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj and isinstance(obj[key], (dict, torch.nn.Module)):
                return extract_state_dict(obj[key], path)
        tensors = collections.OrderedDict()
        for k, v in obj.items():
            if isinstance(v, torch.Tensor):
                tensors[k] = v
        if tensors and len(tensors) == len(obj):
            return tensors
        if tensors:
            others = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
            raise ConvertError("%s: mixes tensors with other entries (%s); not a state dict"
                               % (path, ", ".join(map(str, others[:5]))))
        raise ConvertError("%s: no state dict found (top-level keys: %s)"
                           % (path, ", ".join(map(str, list(obj)[:10])) or "none"))
    raise ConvertError("%s: contains a %s, expected a state dict or an nn.Module"
                       % (path, type(obj).__name__))


_LEGACY = re.compile(r"(^|\.)(norm|relu|conv)\.([12])\.")
_WRAPPER = re.compile(r"^densenet\d+\.")


def normalize_name(name):
    while name.startswith("module."):
        name = name[len("module."):]
    name = _WRAPPER.sub("", name)
    name = _LEGACY.sub(lambda m: "%s%s%s." % (m.group(1), m.group(2), m.group(3)), name)
    if name.startswith("classifier.0."):
        name = "classifier." + name[len("classifier.0."):]
    return name


def normalize_names(sd):
    out = collections.OrderedDict()
    for k, v in sd.items():
        n = normalize_name(k)
        if n in out:
            raise ConvertError("tensor names %r and another both normalise to %r "
                               "(use --keep-names)" % (k, n))
        out[n] = v
    return out


def add_num_batches_tracked(sd):
    """Adds the num_batches_tracked counters that legacy checkpoints lack (so
    that torchvision's load_state_dict(strict=True) accepts the result)."""
    torch = _torch()
    out = collections.OrderedDict()
    for k, v in sd.items():
        out[k] = v
        if k.endswith(".running_var"):
            nbt = k[:-len("running_var")] + "num_batches_tracked"
            if nbt not in sd:
                out[nbt] = torch.tensor(0, dtype=torch.int64)
    return out


def detect_arch(sd):
    names = [normalize_name(k) for k in sd]
    layers = collections.defaultdict(set)
    for n in names:
        m = re.match(r"features\.denseblock(\d+)\.denselayer(\d+)\.", n)
        if m:
            layers[int(m.group(1))].add(int(m.group(2)))
    if not layers:
        return None
    blocks = tuple(len(layers[b]) for b in sorted(layers))
    return ARCH_BY_BLOCKS.get(blocks, "densenet")


def num_outputs(sd):
    for k, v in sd.items():
        if normalize_name(k) == "classifier.weight" and v.dim() == 2:
            return int(v.shape[0])
    return None


def parse_classes(text):
    text = text.strip()
    if text.startswith("["):
        try:
            classes = json.loads(text)
        except ValueError as e:
            raise ConvertError("--classes: bad JSON array: %s" % e)
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise ConvertError("--classes: expected a JSON array of strings")
    else:
        classes = [c.strip() for c in text.split(",")]
    if not classes or any(not c for c in classes):
        raise ConvertError("--classes: empty class name")
    if len(set(classes)) != len(classes):
        raise ConvertError("--classes: duplicate class names")
    return classes


def in_channels(sd):
    for k, v in sd.items():
        if normalize_name(k) == "features.conv0.weight" and v.dim() == 4:
            return int(v.shape[1])
    return None


_LOADED = re.compile(r"^(features\.|classifier\.(weight|bias)$|optimizer\.)")
_LOADER_PREFIX = re.compile(r"^(densenet121|densenet169|densenet201|densenet161|densenet|model)"
                            r"\.(?=features\.|classifier\.)")


def loader_name(k):
    """The name chexnet's loader gives a tensor (its accepted variants)."""
    while k.startswith("module."):
        k = k[len("module."):]
    return normalize_name(_LOADER_PREFIX.sub("", k, count=1))


def check_tensors(sd, args):
    """Splits off op_threshs (returned, or None) and refuses any other tensor
    chexnet's loader would refuse ('unexpected tensor'), unless --drop names
    it. Returns (state dict without them, op_threshs tensor or None)."""
    drop = set(args.drop or [])
    out = collections.OrderedDict()
    op = None
    unexpected = []
    for k, v in sd.items():
        n = loader_name(k)
        if k in drop or n in drop:
            continue
        if n == "op_threshs" or n.endswith(".op_threshs"):
            if op is not None:
                raise ConvertError("two op_threshs tensors")
            op = v
            continue
        if n.endswith(".num_batches_tracked") or _LOADED.match(n):
            out[k] = v
        else:
            unexpected.append(k)
    if unexpected:
        raise ConvertError("unexpected tensor%s %s: chexnet loads a DenseNet's features.* and "
                           "classifier.* tensors only; leave %s out with --drop NAME"
                           % ("s" if len(unexpected) > 1 else "",
                              ", ".join(repr(u) for u in unexpected[:5]),
                              "them" if len(unexpected) > 1 else "it"))
    return out, op


def check_norm(meta, nch):
    """mean/std as chexnet checks them when it loads the model."""
    vals = {}
    for key in ("mean", "std"):
        parts = meta[key].split(",")
        if not (len(parts) == 3 or (len(parts) == 1 and nch == 1)):
            raise ConvertError("metadata %r = %r: give 3 comma-separated numbers%s"
                               % (key, meta[key], " (or one for this 1-channel model)"
                                  if nch == 1 else " (one is for 1-channel models only)"))
        try:
            v = [float(x) for x in parts]
        except ValueError:
            raise ConvertError("metadata %r = %r is not numbers" % (key, meta[key]))
        if not all(math.isfinite(x) for x in v) or (key == "std" and not all(x > 0 for x in v)):
            raise ConvertError("metadata %r = %r: %s" % (
                key, meta[key], "finite positive numbers wanted" if key == "std"
                else "finite numbers wanted"))
        vals[key] = v * (3 // len(v))
    for m, sdv in zip(vals["mean"], vals["std"]):
        if not (math.isfinite((0 - m) / sdv) and math.isfinite((1 - m) / sdv)
                and abs((1 - m) / sdv) < 3.4e38 and abs((0 - m) / sdv) < 3.4e38):
            raise ConvertError("metadata mean/std map pixels to infinity (mean %g, std %g)"
                               % (m, sdv))


def check_array_meta(meta, key, n, lo_open, hi_open):
    """'thresholds' / 'temperature' given with --meta: one number per class,
    as chexnet checks them."""
    if key not in meta:
        return
    try:
        v = json.loads(meta[key])
    except ValueError as e:
        raise ConvertError("metadata %r is not a JSON array: %s" % (key, e))
    if not isinstance(v, list) or len(v) != n or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        raise ConvertError("metadata %r must be a JSON array of %d numbers (one per class)"
                           % (key, n))
    for i, x in enumerate(v):
        if not (math.isfinite(x) and x > lo_open and (hi_open is None or x < hi_open)):
            raise ConvertError("metadata %r: value %d = %r is out of range" % (key, i + 1, x))


def build_metadata(sd, args):
    arch = args.arch or detect_arch(sd)
    if not arch:
        raise ConvertError("cannot tell the architecture from the tensor names; pass --arch")
    n = num_outputs(sd)
    if args.classes:
        classes = parse_classes(args.classes)
        if n is not None and len(classes) != n:
            raise ConvertError("--classes names %d classes but the classifier has %d outputs"
                               % (len(classes), n))
    elif n == 14:
        classes = CHESTXRAY14
    elif n == 1:
        classes = ["Pneumonia"]
    elif n is None:
        raise ConvertError("no classifier.weight found; pass --classes")
    else:
        raise ConvertError("the classifier has %d outputs; pass --classes with %d names" % (n, n))
    meta = collections.OrderedDict([
        ("arch", arch),
        ("classes", json.dumps(classes, separators=(",", ":"), ensure_ascii=False)),
        ("input_size", "224"),
        ("mean", "0.485,0.456,0.406"),
        ("std", "0.229,0.224,0.225"),
        ("format", "pt"),
    ])
    for kv in args.meta or []:
        if "=" not in kv:
            raise ConvertError("--meta expects KEY=VALUE, got %r" % kv)
        k, v = kv.split("=", 1)
        if not k:
            raise ConvertError("--meta: empty key")
        meta[k] = v
    return meta, classes


def keep_outputs(sd, classes, keep_arg, op):
    """--keep A,B: only these outputs (classifier rows, op_threshs entries)."""
    keep = parse_classes(keep_arg)
    idx = []
    for name in keep:
        if name not in classes:
            raise ConvertError("--keep: %r is not one of the classes (%s)"
                               % (name, ", ".join(classes)))
        idx.append(classes.index(name))
    torch = _torch()
    out = collections.OrderedDict()
    for k, v in sd.items():
        n = loader_name(k)
        if n in ("classifier.weight", "classifier.bias"):
            v = v[torch.tensor(idx)].clone()
        out[k] = v
    if op is not None:
        op = op.reshape(-1)[torch.tensor(idx)]
    return out, keep, op


def thresholds_meta(op, classes):
    """op_threshs of the kept classes as the "thresholds" metadata, or a
    clear refusal."""
    op = op.detach().double().reshape(-1)
    if op.numel() != len(classes):
        raise ConvertError("op_threshs has %d values but the model keeps %d classes"
                           % (op.numel(), len(classes)))
    vals = []
    bad = []
    for name, x in zip(classes, op.tolist()):
        f = struct.unpack("<f", struct.pack("<f", x))[0] if math.isfinite(x) else x
        if not (math.isfinite(x) and 0 < f < 1):
            bad.append("%s (%r)" % (name, x))
        vals.append(f)
    if bad:
        raise ConvertError("op_threshs holds no usable threshold (a number in (0, 1)) for %s: "
                           "keep only classes with one (--keep A,B,...) or leave the thresholds "
                           "out (--no-thresholds)" % ", ".join(bad))
    return "[" + ", ".join(repr(v) for v in vals) + "]"


def cast_floats(sd, dtype_name):
    torch = _torch()
    target = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[dtype_name]
    out = collections.OrderedDict()
    for k, v in sd.items():
        v = v.detach().cpu()
        if v.is_floating_point():
            v = v.to(target)
        out[k] = v.contiguous()
    return out


def to_safetensors(args):
    sd = extract_state_dict(_load_torch(args.input), args.input)
    if not sd:
        raise ConvertError("%s: the state dict is empty" % args.input)
    sd, op = check_tensors(sd, args)
    meta, classes = build_metadata(sd, args)
    if args.keep:
        sd, classes, op = keep_outputs(sd, classes, args.keep, op)
        meta["classes"] = json.dumps(classes, separators=(",", ":"), ensure_ascii=False)
    if op is not None and not args.no_thresholds:
        if "thresholds" in meta:
            raise ConvertError("the checkpoint's op_threshs and --meta thresholds=... both give "
                               "thresholds: pass --no-thresholds to use --meta's")
        meta["thresholds"] = thresholds_meta(op, classes)
    nch = in_channels(sd)
    check_norm(meta, nch)
    check_array_meta(meta, "thresholds", len(classes), 0, 1)
    check_array_meta(meta, "temperature", len(classes), 0, None)
    if not args.keep_names:
        sd = normalize_names(sd)
    sd = cast_floats(sd, args.dtype)
    write_safetensors(args.output, list(sd.items()), meta)
    return len(sd)


def to_pth(args):
    try:
        sd, _meta = read_safetensors(args.input)
    except FileNotFoundError:
        raise ConvertError("%s: no such file" % args.input)
    except ConvertError as e:
        if not _looks_like_safetensors(args.input):
            raise ConvertError("%s (not a safetensors file; without --to-pth the input is read "
                               "as a PyTorch checkpoint)" % e)
        raise
    if not args.keep_names:
        sd = add_num_batches_tracked(normalize_names(sd))
    sd = cast_floats(sd, args.dtype)
    atomic_write_torch(args.output, sd)
    return len(sd)


def atomic_write_torch(path, obj):
    torch = _torch()
    import io
    b = io.BytesIO()
    torch.save(obj, b)
    atomic_write(path, [b.getbuffer()])


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="convert.py",
        description="Convert a PyTorch (.pth/.pth.tar) CheXNet/DenseNet checkpoint to a chexnet "
                    "safetensors file, or back with --to-pth.",
        epilog="Loading a pickled checkpoint runs code from the file: convert only "
               "checkpoints you trust.")
    p.add_argument("input", help="input checkpoint (.pth/.pth.tar, or .safetensors with --to-pth)")
    p.add_argument("output", help="output file (written atomically)")
    p.add_argument("--to-pth", action="store_true",
                   help="convert a safetensors file to a PyTorch state dict (torch.save)")
    p.add_argument("--dtype", choices=["f32", "f16", "bf16"], default="f32",
                   help="storage type of floating-point tensors (default f32)")
    p.add_argument("--keep-names", action="store_true",
                   help="keep tensor names exactly as stored (no prefix stripping or legacy "
                        "renaming; with --to-pth no num_batches_tracked are added)")
    p.add_argument("--arch", help="architecture for the metadata (default: detected, e.g. "
                                  "densenet121)")
    p.add_argument("--classes", help="class names: a JSON array or a comma-separated list "
                                     "(default: the 14 ChestX-ray14 findings for 14 outputs, "
                                     "Pneumonia for 1)")
    p.add_argument("--meta", action="append", metavar="KEY=VALUE",
                   help="extra __metadata__ entry (repeatable; overrides the defaults). mean "
                        "and std: 3 comma-separated numbers, or 1 for a 1-channel model")
    p.add_argument("--keep", metavar="A,B,...",
                   help="keep only these outputs (class names, in this order): the "
                        "classifier's rows and op_threshs' entries")
    p.add_argument("--no-thresholds", action="store_true",
                   help="leave a checkpoint's op_threshs out instead of carrying them into "
                        "the \"thresholds\" metadata")
    p.add_argument("--drop", action="append", metavar="NAME",
                   help="leave this tensor out (repeatable); other tensors that chexnet "
                        "would not load are refused")
    args = p.parse_args(argv)
    try:
        n = to_pth(args) if args.to_pth else to_safetensors(args)
    except ConvertError as e:
        print("convert.py: error: %s" % e, file=sys.stderr)
        return 1
    except OSError as e:
        print("convert.py: error: %s" % e, file=sys.stderr)
        return 1
    print("convert.py: wrote %d tensors to %s" % (n, args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
