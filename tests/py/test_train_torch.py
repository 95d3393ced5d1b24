"""Parity of chexnet's training step with PyTorch autograd.

Full DenseNet-121 with realistic BatchNorm statistics, a batch of 4 real
X-rays with their real NIH labels, for both losses of the paper (the weighted
BCE of the pneumonia model, the unweighted sum of 14 BCEs):
  - loss within 1e-5 relative of PyTorch fp32;
  - running statistics after the step equal PyTorch's (1e-5);
  - the whole gradient within 1e-4 relative L2 and every parameter tensor's
    gradient within 1e-3 (the worst tensor is reported);
  - 5 Adam steps (lr 1e-3, batches alternating between two sets of 4
    images): every loss within 1e-4 relative, final weights within 1e-3
    relative L2.

The gradient and trajectory figures are measured against PyTorch in float64
(the exact oracle), and PyTorch's own fp32 error against that oracle is
measured in the same run. On a training-mode DenseNet-121 that fp32 error
is itself above the 1e-4/1e-3 targets (measured here: whole gradient
~1.5e-3, worst tensor ~9e-3, always a BatchNorm bias whose gradient is a
near-cancelling sum because the next BatchNorm removes per-channel shifts;
and Adam turns the sign noise of such near-zero gradients into lr-sized
steps). No fp32 implementation can meet a target that PyTorch fp32 misses
against exact arithmetic, so each of those checks passes when chexnet meets
the target OR is no less accurate than PyTorch fp32 (within a factor 2);
every figure is printed.
"""
import csv
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import cxtest  # noqa: E402

torch = cxtest.need_torch()
import numpy as np  # noqa: E402
import torch.nn.functional as F  # noqa: E402

TMP = os.path.join(cxtest.TMP, "train")
os.makedirs(TMP, exist_ok=True)
TOOL = cxtest.tool("cx_train_steps")
passes, failures = [], []


def check(name, ok, detail):
    print(("PASS " if ok else "FAIL ") + name + ": " + detail, flush=True)
    (passes if ok else failures).append(name)


def rel_l2(a, b):
    a = a.double().ravel()
    b = b.double().ravel()
    return float((a - b).norm() / (b.norm() + 1e-30))


def bce(logits, y, wpos, wneg):
    # L = sum_k mean_n [-wpos y log s(z) - wneg (1-y) log(1 - s(z))]
    per = -(wpos * y * F.logsigmoid(logits) + wneg * (1 - y) * F.logsigmoid(-logits))
    return per.mean(0).sum()


def nih_labels():
    path = cxtest.shared("nih", "labels.csv")
    with open(path, newline="") as f:
        rows = {r["Image Index"]: r for r in csv.DictReader(f)}
    return rows


def torch_run(model, x, y, wpos, wneg, steps, lr):
    """Runs `steps` Adam steps; returns losses, step-1 grads, step-1 running
    statistics and the final state dict."""
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8)
    losses = []
    n = x.shape[0]
    for s in range(steps):
        idx = [(s * 4 + i) % n for i in range(4)]
        opt.zero_grad()
        loss = bce(model(x[idx]), y[idx], wpos, wneg)
        loss.backward()
        losses.append(loss.item())
        if s == 0:
            grads = {k: p.grad.detach().double().clone() for k, p in model.named_parameters()}
            stats = {k: v.detach().double().clone() for k, v in model.state_dict().items()
                     if "running" in k}
        opt.step()
    final = {k: v.detach().double().clone() for k, v in model.state_dict().items()}
    return losses, grads, stats, final


def check_vs_oracle(name, target, ours_err, torch32_err):
    ok = ours_err <= target or ours_err <= 2 * torch32_err
    how = "meets target" if ours_err <= target else "target below fp32 precision here; " \
        "chexnet no less accurate than PyTorch fp32"
    check(name, ok, "chexnet %.2e, PyTorch fp32 %.2e (vs float64 oracle; target %.0e): %s"
          % (ours_err, torch32_err, target, how))


def run_case(name, num_classes, wpos, wneg, images, labels_all, steps=5, lr=1e-3):
    calib = cxtest.xray_batch(images[:12])
    model = cxtest.realistic_densenet("densenet121", num_classes, images=calib, seed=11)
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.momentum = 0.1
    sel = images[12:20]
    x = cxtest.xray_batch(sel)
    y = torch.tensor(labels_all, dtype=torch.float32)
    path = os.path.join(TMP, name + ".safetensors")
    cxtest.save_safetensors(path, model.state_dict())
    inp = os.path.join(TMP, name + "-x.f32")
    lab = os.path.join(TMP, name + "-y.f32")
    x.numpy().astype(np.float32).tofile(inp)
    y.numpy().astype(np.float32).tofile(lab)
    out = os.path.join(TMP, name)
    os.makedirs(out, exist_ok=True)
    r = cxtest.run([TOOL, path, inp, lab, str(len(sel)), "4", "224", "224", str(steps), str(lr),
                    str(wpos), str(wneg), out])
    if r.returncode != 0:
        raise SystemExit("cx_train_steps failed: " + r.stderr)

    # PyTorch, same steps: fp32 (the framework users run) and fp64 (oracle)
    import copy
    m64 = copy.deepcopy(model).double()
    l32, g32, st32, f32 = torch_run(model, x, y, wpos, wneg, steps, lr)
    l64, g64, st64, f64 = torch_run(m64, x.double(), y.double(), wpos, wneg, steps, lr)
    ours_losses = [float(v) for v in open(os.path.join(out, "losses.txt"))]

    e = abs(ours_losses[0] - l32[0]) / abs(l32[0])
    check(name + ": loss", e <= 1e-5, "chexnet %.8f PyTorch fp32 %.8f rel %.2e (<= 1e-5)" %
          (ours_losses[0], l32[0], e))
    s_ours, _ = cxtest.load_safetensors(os.path.join(out, "step1.safetensors"))
    worst = max((rel_l2(s_ours[k], v), k) for k, v in st32.items())
    check(name + ": running statistics after the step", worst[0] <= 1e-5,
          "worst %s rel L2 %.2e (<= 1e-5)" % (worst[1], worst[0]))

    g_ours, _ = cxtest.load_safetensors(os.path.join(out, "grads.safetensors"))
    names = list(g64)

    def whole(g):
        return rel_l2(torch.cat([g[k].double().ravel() for k in names]),
                      torch.cat([g64[k].ravel() for k in names]))

    def per_tensor(g):
        return sorted(((rel_l2(g[k], g64[k]), k) for k in names), reverse=True)

    check_vs_oracle(name + ": whole gradient", 1e-4, whole(g_ours), whole(g32))
    po, pt = per_tensor(g_ours), per_tensor(g32)
    print("    worst tensors: chexnet %s %.2e, PyTorch fp32 %s %.2e; median chexnet %.2e, "
          "PyTorch fp32 %.2e" % (po[0][1], po[0][0], pt[0][1], pt[0][0],
                                 po[len(po) // 2][0], pt[len(pt) // 2][0]))
    check_vs_oracle(name + ": every tensor's gradient", 1e-3, po[0][0], pt[0][0])

    le_ours = max(abs(a - b) / abs(b) for a, b in zip(ours_losses, l64))
    le_32 = max(abs(a - b) / abs(b) for a, b in zip(l32, l64))
    print("    losses: chexnet %s\n            fp32    %s\n            fp64    %s"
          % (["%.5f" % v for v in ours_losses], ["%.5f" % v for v in l32],
             ["%.5f" % v for v in l64]))
    check_vs_oracle(name + ": %d Adam steps, losses" % steps, 1e-4, le_ours, le_32)
    f_ours, _ = cxtest.load_safetensors(os.path.join(out, "final.safetensors"))
    params = [k for k, _ in model.named_parameters()]

    def wdist(f):
        return rel_l2(torch.cat([f[k].double().ravel() for k in params]),
                      torch.cat([f64[k].ravel() for k in params]))

    check_vs_oracle(name + ": final weights", 1e-3, wdist(f_ours), wdist(f32))


def main():
    if not os.path.exists(TOOL):
        cxtest.skip("test tool not built: " + TOOL)
    images = cxtest.nih_images()
    rows = nih_labels()
    sel = [os.path.basename(p) for p in images[12:20]]
    if any(s not in rows for s in sel):
        cxtest.skip("labels.csv lacks some starter images")
    y14 = [[float(rows[s][c]) for c in cxtest.CLASSES14] for s in sel]
    # Pneumonia: real labels are mostly 0 in 8 images; the weights are the
    # paper's formula on the NIH metadata's prevalence (1,431 / 112,120).
    ypn = [[max(r[6], r[8])] for r in y14]  # Pneumonia (or Consolidation) as the positive class
    P, N = 1431.0, 112120.0 - 1431.0
    run_case("pneumonia-weighted", 1, N / (P + N), P / (P + N), images, ypn)
    run_case("all14", 14, 1.0, 1.0, images, y14)
    print("%d passed, %d failed" % (len(passes), len(failures)))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
