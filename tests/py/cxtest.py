"""Shared helpers for chexnet's oracle tests (PyTorch / torchvision / PIL).

Not a test itself (CTest runs tests/py/test_*.py). Provides:
  skip(msg)                 exit 77 (CTest 'skipped') with a message
  need_torch()              import torch + torchvision or skip
  shared(path)              a file under ../shared/data or skip
  save_safetensors(path, tensors, metadata)   hand-written safetensors writer
  realistic_densenet(...)   torchvision DenseNet with realistic BN statistics
  xray_batch(paths, size)   real X-rays -> normalised NCHW tensor (PIL + torchvision)
  cx_forward(model, x, tmp) chexnet's logits and feature maps (tests/tools/cx_forward)
"""
import json
import os
import struct
import subprocess
import sys

SHARED = os.environ.get("CX_SHARED") or os.path.join(
    os.path.dirname(__file__), "..", "..", "..", "shared")
DATA = os.path.join(SHARED, "data")
TMP = os.environ.get("CX_TMP") or "/tmp/cx-tests"
BUILD = os.environ.get("CX_BUILD") or os.path.join(os.path.dirname(__file__), "..", "..", "build")
CHEXNET = os.environ.get("CHEXNET") or os.path.join(BUILD, "chexnet")
# a command the test tools run under, e.g. "qemu-x86_64 -cpu Nehalem"
WRAP = os.environ.get("CX_WRAP", "").split()
os.makedirs(TMP, exist_ok=True)

CLASSES14 = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule",
             "Pneumonia", "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis",
             "Pleural_Thickening", "Hernia"]
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def skip(msg):
    print("SKIP: " + msg)
    sys.exit(77)


def need_torch():
    try:
        import torch  # noqa: F401
        import torchvision  # noqa: F401
    except ImportError as e:
        skip("PyTorch/torchvision not available (%s)" % e)
    import torch
    torch.set_num_threads(2)
    return torch


def shared(*parts):
    p = os.path.join(DATA, *parts)
    if not os.path.exists(p):
        skip("shared data not found: %s" % p)
    return p


def tool(name):
    return os.path.join(BUILD, "tests", name)


_DT = {"float32": ("F32", 4), "float16": ("F16", 2), "bfloat16": ("BF16", 2),
       "int64": ("I64", 8), "float64": ("F64", 8)}


def save_safetensors(path, tensors, metadata=None):
    """tensors: dict name -> torch tensor (contiguous CPU)."""
    import torch
    header = {}
    blobs = []
    off = 0
    for name, t in tensors.items():
        t = t.detach().contiguous().cpu()
        dt, size = _DT[str(t.dtype).replace("torch.", "")]
        if t.dtype == torch.bfloat16:
            raw = t.view(torch.int16).numpy().tobytes()
        else:
            raw = t.numpy().tobytes()
        header[name] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def load_safetensors(path):
    import numpy as np
    import torch
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    np_dt = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "F64": np.float64}
    out = {}
    for name, e in header.items():
        b, en = e["data_offsets"]
        raw = data[base + b: base + en]
        if e["dtype"] == "BF16":
            a = np.frombuffer(raw, dtype=np.int16).copy()
            t = torch.from_numpy(a).view(torch.bfloat16).float()
        else:
            t = torch.from_numpy(np.frombuffer(raw, dtype=np_dt[e["dtype"]]).copy())
        out[name] = t.reshape(e["shape"])
    return out, meta


CALIBRATION_KEYS = ("thresholds", "temperature", "threshold_method", "cam_range")


def strip_metadata(src, dst, keys=CALIBRATION_KEYS):
    """Copies the safetensors file src to dst without the given metadata keys
    (default: what chexnet calibrate writes), the tensors' bytes untouched:
    the same model in its uncalibrated state."""
    with open(src, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    meta = header.get("__metadata__", {})
    for k in keys:
        meta.pop(k, None)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(dst, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        f.write(data[8 + n:])
    return dst


def nih_images(n=None):
    d = shared("nih", "images")
    files = sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".png"))
    return files[:n] if n else files


def xray_batch(paths, size=224, channels=3):
    """Real X-rays through PIL (convert RGB, BILINEAR resize) and torchvision's
    ToTensor + Normalize: the usual CheXNet preprocessing. NCHW float32."""
    import torch
    from PIL import Image
    from torchvision import transforms
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    out = []
    for p in paths:
        im = Image.open(p).convert("RGB").resize((size, size), Image.BILINEAR)
        t = tf(im)
        if channels == 1:
            t = t[:1]
        out.append(t)
    return torch.stack(out)


def realistic_densenet(arch="densenet121", num_classes=14, in_channels=3, seed=0,
                       images=None):
    """A torchvision DenseNet with random weights whose BatchNorm layers carry
    realistic statistics: running mean/var accumulated over train-mode passes
    on real X-rays, and affine parameters perturbed away from 1/0."""
    import torch
    import torchvision
    torch.manual_seed(seed)
    m = getattr(torchvision.models, arch)(num_classes=num_classes)
    if in_channels != 3:
        m.features.conv0 = torch.nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        torch.nn.init.kaiming_normal_(m.features.conv0.weight)
    if images is None:
        images = xray_batch(nih_images(12), channels=in_channels)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.momentum = None  # cumulative average over the passes
    m.train()
    with torch.no_grad():
        for i in range(0, len(images), 4):
            m(images[i:i + 4])
        g = torch.Generator().manual_seed(seed + 1)
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.weight.copy_(1.0 + 0.3 * torch.randn(mod.weight.shape, generator=g))
                mod.bias.copy_(0.1 * torch.randn(mod.bias.shape, generator=g))
        m.classifier.bias.copy_(0.1 * torch.randn(m.classifier.bias.shape, generator=g))
    m.eval()
    return m


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def cx_forward(model_path, x, tmp, backend="cpu", extra=(), env=None):
    """Runs the cx_forward tool on the NCHW tensor x; returns its output as
    float32 (N x classes logits, then each image's final feature maps)."""
    import numpy as np
    inp = os.path.join(tmp, "input.f32")
    out = os.path.join(tmp, "out.f32")
    x.numpy().astype(np.float32).tofile(inp)
    n, c, h, w = x.shape
    r = run(WRAP + [tool("cx_forward"), model_path, inp, str(n), str(h), str(w), backend, out]
            + list(extra), env=env)
    if r.returncode != 0:
        raise SystemExit("cx_forward failed: " + r.stderr)
    return np.fromfile(out, dtype=np.float32)
