"""Small CLI commands: --help of every command, init / info / export
(dtype, metadata, class names; the result loads in torchvision strict);
predict from a pack made by chexnet prepare (same probabilities as from the
image files, fp32 and bf16; misuse refused)."""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
import cxtest  # noqa: E402

passes, failures = [], []


def check(name, ok, detail=""):
    print(("PASS " if ok else "FAIL ") + name + (": " + detail if detail else ""), flush=True)
    (passes if ok else failures).append(name)


def run(*args):
    return subprocess.run([cxtest.CHEXNET] + list(args), capture_output=True, text=True)


def main():
    r = run("--help")
    cmds = [line.split()[0] for line in r.stdout.splitlines() if line.startswith("  ")]
    check("chexnet --help lists the commands", r.returncode == 0 and "predict" in cmds,
          " ".join(cmds))
    bad = [c for c in cmds if run(c, "--help").returncode != 0 or
           "usage" not in run(c, "--help").stdout]
    check("every command has --help", not bad, "failing: %s" % bad if bad else "")
    check("unknown command fails", run("frobnicate").returncode == 2)

    tmp = os.path.join(cxtest.TMP, "cli_misc")
    os.makedirs(tmp, exist_ok=True)
    a = os.path.join(tmp, "init.safetensors")
    r = run("init", "--classes", "2", "--class-names", "Effusion,Mass", "--seed", "3", "-o", a)
    check("init", r.returncode == 0, r.stderr.strip())
    b = os.path.join(tmp, "export.safetensors")
    r = run("export", a, "-o", b, "--dtype", "f16", "--meta", "licence=CC BY 4.0",
            "--classes", "Nodule,Hernia")
    check("export", r.returncode == 0, r.stderr.strip())
    info = json.loads(run("info", "--json", b).stdout)
    check("export: dtype, metadata and classes", info["dtype"] == "F16" and
          info["metadata"].get("licence") == "CC BY 4.0" and info["classes"] == ["Nodule", "Hernia"]
          and info["parameters"] == 6955906, json.dumps({k: info[k] for k in ("dtype", "classes",
                                                                               "parameters")}))
    check("export: half the size", os.path.getsize(b) < 0.55 * os.path.getsize(a),
          "%d -> %d bytes" % (os.path.getsize(a), os.path.getsize(b)))
    r = run("export", a, "-o", b, "--meta", "novalue")
    check("export: bad --meta refused", r.returncode == 2, r.stderr.strip())
    torch = cxtest.need_torch()
    import torchvision
    sd, meta = cxtest.load_safetensors(b)
    m = torchvision.models.densenet121(num_classes=2)
    m.load_state_dict({k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()},
                      strict=True)
    check("exported f16 file loads in torchvision (strict)", True)
    predict_from_pack(tmp, a)
    print("%d passed, %d failed" % (len(passes), len(failures)))
    sys.exit(1 if failures else 0)


def predict_from_pack(tmp, model):
    kdir = os.path.join(cxtest.DATA, "kermany-224")
    if not os.path.isdir(kdir):
        print("SKIP predict from a pack: no %s" % kdir)
        return
    manifest = os.path.join(kdir, "manifest.csv")
    with open(manifest) as f:
        rows = [line.split(",")[0] for line in f.read().splitlines()[1:]]
    pick = rows[::400][:12]  # normal and pneumonia images
    only = os.path.join(tmp, "only.txt")
    with open(only, "w") as f:
        f.write("\n".join(pick) + "\n")
    pack = os.path.join(tmp, "some.cxpack")
    r = run("prepare", "--manifest", manifest, "--only", only, "-o", pack)
    check("prepare a pack of %d images" % len(pick), r.returncode == 0, r.stderr.strip()[-200:])
    for prec in ("fp32", "bf16"):
        rp = run("predict", "--model", model, "--precision", prec, "--format", "csv",
                 "--batch", "5", pack)
        rf = run("predict", "--model", model, "--precision", prec, "--format", "csv",
                 "--batch", "5", *[os.path.join(kdir, p) for p in pick])
        def table(out, strip):
            t = {}
            for line in out.splitlines()[1:]:
                name, *vals = line.split(",")
                t[name[len(strip):] if strip and name.startswith(strip) else name] = vals
            return t
        tp, tf = table(rp.stdout, ""), table(rf.stdout, kdir + "/")
        check("predict %s from the pack equals predict from the files" % prec,
              rp.returncode == 0 and rf.returncode == 0 and len(tp) == len(pick) and tp == tf,
              "%d rows vs %d; %s" % (len(tp), len(tf), rp.stderr.strip()[-200:]))
    r = run("predict", "--model", model, pack, os.path.join(kdir, pick[0]))
    check("a pack mixed with image files is refused", r.returncode == 2, r.stderr.strip())
    r = run("predict", "--model", model, "--cam", os.path.join(tmp, "cam"), pack)
    check("a pack with --cam is refused", r.returncode == 2, r.stderr.strip())


if __name__ == "__main__":
    main()
