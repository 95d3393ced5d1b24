"""Parity of chexnet's DenseNet forward pass with torchvision.

torchvision densenet121(num_classes=14) with random weights and realistic
BatchNorm statistics (train-mode passes over real NIH X-rays, affine
parameters perturbed away from 1/0), saved as safetensors; chexnet's logits
for a batch of real preprocessed X-rays must match PyTorch's:
relative L2 error <= 1e-5 and max |delta logit| <= 1e-4. Also: the final
feature maps (CAM input), the legacy/DataParallel-named file, F16 and BF16
files, the reference backend, a 1-channel conv0 model, DenseNet-169, and the
round trip chexnet writes -> torchvision loads (strict=True).

With CX_WRAP set (the tool run under an emulator, e.g. "qemu-x86_64 -cpu
Nehalem", to check the run-time choice of kernels on an older CPU) only the
first check runs, on 2 X-rays: emulation is some 500x slower.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import cxtest  # noqa: E402

torch = cxtest.need_torch()
import numpy as np  # noqa: E402
import torch.nn.functional as F  # noqa: E402

TMP = os.path.join(cxtest.TMP, "forward")
os.makedirs(TMP, exist_ok=True)
FWD = cxtest.tool("cx_forward")
failures = []
passes = []


def check(name, ok, detail):
    print(("PASS " if ok else "FAIL ") + name + ": " + detail, flush=True)
    (passes if ok else failures).append(name)


def chexnet_forward(model_path, x, backend="cpu", resave=None, dtype="f32"):
    return cxtest.cx_forward(model_path, x, TMP, backend, [resave, dtype] if resave else ())


def compare_logits(name, ours, ref):
    ref = ref.detach().numpy().astype(np.float64).ravel()
    ours = ours[:ref.size].astype(np.float64)
    rel = np.linalg.norm(ours - ref) / np.linalg.norm(ref)
    mx = np.abs(ours - ref).max()
    check(name, rel <= 1e-5 and mx <= 1e-4,
          "rel L2 %.2e (<= 1e-5), max |d logit| %.2e (<= 1e-4), logit range [%.2f, %.2f]"
          % (rel, mx, ref.min(), ref.max()))
    return ours


def state(model):
    return {k: v for k, v in model.state_dict().items()}


def legacy_names(sd):
    out = {}
    for k, v in sd.items():
        k2 = k
        for a, b in (("norm1", "norm.1"), ("relu1", "relu.1"), ("conv1", "conv.1"),
                     ("norm2", "norm.2"), ("conv2", "conv.2")):
            if ".denselayer" in k2:
                k2 = k2.replace("." + a + ".", "." + b + ".")
        k2 = k2.replace("classifier.", "classifier.0.")
        out["module.densenet121." + k2] = v
    return out


def main():
    if not os.path.exists(FWD):
        cxtest.skip("test tool cx_forward not built: " + FWD)
    images = cxtest.nih_images()
    calib = cxtest.xray_batch(images[:12])
    x = cxtest.xray_batch(images[12:16])  # 4 real X-rays not used for BN stats
    quick = bool(cxtest.WRAP)
    if quick:
        x = x[:2]

    # 1. DenseNet-121, 14 classes, modern names, F32
    model = cxtest.realistic_densenet("densenet121", 14, images=calib, seed=1)
    sd = state(model)
    path = os.path.join(TMP, "d121.safetensors")
    cxtest.save_safetensors(path, sd, {"classes": str(cxtest.CLASSES14).replace("'", '"')})
    with torch.no_grad():
        ref = model(x)
        feats = F.relu(model.features(x))
    out = chexnet_forward(path, x)
    compare_logits("densenet121 f32 batch %d (cpu backend%s)" % (
        len(x), ", under " + " ".join(cxtest.WRAP) if quick else ""), out, ref)
    n_log = ref.numel()
    ours_f = out[n_log:].astype(np.float64)
    rf = feats.numpy().astype(np.float64).ravel()
    rel = np.linalg.norm(ours_f - rf) / np.linalg.norm(rf)
    check("final feature maps (norm5+ReLU, 1024x7x7)", rel <= 1e-5, "rel L2 %.2e" % rel)
    if quick:
        print("%d passed, %d failed" % (len(passes), len(failures)))
        sys.exit(1 if failures else 0)

    # 2. reference backend, one image
    out = chexnet_forward(path, x[:1], backend="ref")
    compare_logits("densenet121 reference backend batch 1", out, ref[:1])

    # 3. legacy names with the arnoweng DataParallel prefix and classifier.0
    lpath = os.path.join(TMP, "d121-legacy.safetensors")
    cxtest.save_safetensors(lpath, legacy_names(sd))
    compare_logits("legacy names module.densenet121.*.norm.1 / classifier.0",
                   chexnet_forward(lpath, x), ref)
    mpath = os.path.join(TMP, "d121-module.safetensors")
    cxtest.save_safetensors(mpath, {"module." + k: v for k, v in sd.items()})
    compare_logits("DataParallel module. prefix", chexnet_forward(mpath, x[:2]), ref[:2])

    # 4. F16 and BF16 storage: reference is the same model with rounded weights
    for dt, tdt in (("F16", torch.float16), ("BF16", torch.bfloat16)):
        sdr = {k: (v.to(tdt) if v.is_floating_point() else v) for k, v in sd.items()}
        p = os.path.join(TMP, "d121-%s.safetensors" % dt.lower())
        cxtest.save_safetensors(p, sdr)
        m2 = cxtest.realistic_densenet("densenet121", 14, images=calib[:4], seed=1)
        m2.load_state_dict({k: v.float() if v.is_floating_point() else v
                            for k, v in sdr.items()})
        with torch.no_grad():
            r2 = m2(x[:2])
        compare_logits("%s weights" % dt, chexnet_forward(p, x[:2]), r2)

    # 5. round trip: chexnet writes, torchvision loads strict=True
    rpath = os.path.join(TMP, "d121-resaved.safetensors")
    chexnet_forward(path, x[:1], resave=rpath)
    sd2, meta = cxtest.load_safetensors(rpath)
    m3 = cxtest.realistic_densenet("densenet121", 14, images=calib[:4], seed=7)
    missing = m3.load_state_dict(sd2, strict=True)
    with torch.no_grad():
        r3 = m3(x)
    # num_batches_tracked is not used in eval mode; chexnet writes 0
    same = all(torch.equal(sd2[k].to(v.dtype), v) for k, v in sd.items()
               if not k.endswith("num_batches_tracked"))
    check("chexnet-written file loads in torchvision (strict) with identical tensors",
          same and torch.equal(r3, ref),
          "tensors identical: %s, outputs identical: %s, metadata arch=%s classes[13]=%s"
          % (same, torch.equal(r3, ref), meta.get("arch"),
             __import__("json").loads(meta.get("classes", "[]"))[13:14]))

    # 6. 1-channel conv0 (torchxrayvision style)
    calib1 = cxtest.xray_batch(images[:8], channels=1)
    x1 = cxtest.xray_batch(images[12:14], channels=1)
    m1 = cxtest.realistic_densenet("densenet121", 18, in_channels=1, images=calib1, seed=3)
    p1 = os.path.join(TMP, "d121-1ch.safetensors")
    cxtest.save_safetensors(p1, state(m1))
    with torch.no_grad():
        r1 = m1(x1)
    compare_logits("1-channel conv0, 18 classes", chexnet_forward(p1, x1), r1)

    # 7. DenseNet-169, 1 class
    m169 = cxtest.realistic_densenet("densenet169", 1, images=calib[:8], seed=4)
    p169 = os.path.join(TMP, "d169.safetensors")
    cxtest.save_safetensors(p169, state(m169))
    with torch.no_grad():
        r169 = m169(x[:2])
    compare_logits("densenet169, 1 class", chexnet_forward(p169, x[:2]), r169)

    print("%d passed, %d failed" % (len(passes), len(failures)))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
