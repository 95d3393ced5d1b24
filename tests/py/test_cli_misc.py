"""Small CLI commands: --help and --version of every command, --opt=value
in every command (the same result as --opt value), init / info / export
(dtype, metadata, class names; the result loads in torchvision strict);
paths and counts in messages (no double slashes, "1 class"); predict from a
pack made by chexnet prepare (same probabilities as from the image files,
fp32 and bf16; misuse refused)."""
import json
import os
import shutil
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
    top = run("--version")
    bad = [c for c in cmds if run(c, "--version").stdout != top.stdout
           or run(c, "--version").returncode != 0]
    check("every command has --version (as chexnet --version)", not bad and top.returncode == 0
          and top.stdout.startswith("chexnet 0.1.0\n"), "failing: %s" % bad if bad else "")
    r = run("predict", "--bogus")
    check("an unknown option is a usage error naming it", r.returncode == 2 and "'--bogus'" in
          r.stderr, r.stderr.strip())
    r = run("evaluate", "--pred")
    check("a missing value is a usage error", r.returncode == 2 and "--pred needs a value" in
          r.stderr, r.stderr.strip())

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
    equals_forms(tmp, a)
    paths_and_counts(tmp)
    predict_from_pack(tmp, a)
    print("%d passed, %d failed" % (len(passes), len(failures)))
    sys.exit(1 if failures else 0)


def same(args_space, args_eq, name, compare="stdout"):
    """Runs a command with --opt value and with --opt=value."""
    r1, r2 = run(*args_space), run(*args_eq)
    def text(r):  # timings differ from run to run
        return [x for x in getattr(r, compare).splitlines() if " s on " not in x]
    ok = r1.returncode == 0 and r2.returncode == 0 and (compare is None or text(r1) == text(r2))
    check("%s: --opt=value as --opt value" % name, ok,
          "%d/%d %s" % (r1.returncode, r2.returncode, (r1.stderr + r2.stderr).strip()[-200:]))
    return r1, r2


def equals_forms(tmp, model):
    samples = os.path.join(os.environ.get("CX_SOURCE", os.path.join(os.path.dirname(__file__),
                                                                     "..", "..")), "samples")
    imgs = sorted(os.path.join(samples, f) for f in os.listdir(samples)
                  if f.endswith((".png", ".jpeg", ".jpg")))[:2]
    same(["predict", "--model", model, "--format", "csv", "--batch", "2", "--threads", "2"] + imgs,
         ["predict", "--model=" + model, "--format=csv", "--batch=2", "--threads=2"] + imgs,
         "predict")
    pred, lab = os.path.join(tmp, "p.csv"), os.path.join(tmp, "l.csv")
    with open(pred, "w") as f:
        f.write("image,Pneumonia\n" + "".join("i%d.png,%.3f\n" % (i, (i * 7 % 20) / 20)
                                              for i in range(20)))
    with open(lab, "w") as f:
        f.write("image,Pneumonia\n" + "".join("i%d.png,%d\n" % (i, i % 3 == 0)
                                              for i in range(20)))
    same(["evaluate", "--pred", pred, "--labels", lab, "--bootstrap", "50", "--seed", "4",
          "--threshold", "0.4"],
         ["evaluate", "--pred=" + pred, "--labels=" + lab, "--bootstrap=50", "--seed=4",
          "--threshold=0.4"], "evaluate")
    rd = []
    for k, name in enumerate(("r1", "r2", "m1")):
        p = os.path.join(tmp, name + ".csv")
        with open(p, "w") as f:
            f.write("Study,Effusion\n" + "".join("s%d,%d\n" % (i, (i * (k + 3)) % 5 < 2)
                                                  for i in range(30)))
        rd.append(p)
    same(["readers", "--class", "Effusion", "--reader", "r1=" + rd[0], "--reader", "r2=" + rd[1],
          "--model", "m1=" + rd[2], "--bootstrap", "20"],
         ["readers", "--class=Effusion", "--reader=r1=" + rd[0], "--reader=r2=" + rd[1],
          "--model=m1=" + rd[2], "--bootstrap=20"], "readers")
    man = os.path.join(tmp, "manifest.csv")
    with open(man, "w") as f:
        f.write("path,pneumonia,patient\n" + "".join("%s,%d,p%d\n" % (os.path.basename(im), k, k)
                                                     for k, im in enumerate(imgs)))
    shutil.copy(imgs[0], tmp)
    shutil.copy(imgs[1], tmp)
    same(["split", "--manifest", man, "--fractions", "0.5,0.5,0", "--seed", "1", "--json"],
         ["split", "--manifest=" + man, "--fractions=0.5,0.5,0", "--seed=1", "--json"], "split")
    pk1, pk2 = os.path.join(tmp, "a.cxpack"), os.path.join(tmp, "b.cxpack")
    same(["prepare", "--manifest", man, "--size", "32", "--channels", "3", "-o", pk1],
         ["prepare", "--manifest=" + man, "--size=32", "--channels=3", "--out=" + pk2],
         "prepare", compare=None)
    with open(pk1, "rb") as f1, open(pk2, "rb") as f2:
        check("prepare: the same pack either way", f1.read() == f2.read())
    i1, i2 = os.path.join(tmp, "i1.safetensors"), os.path.join(tmp, "i2.safetensors")
    same(["init", "--classes", "2", "--seed", "5", "--output", i1],
         ["init", "--classes=2", "--seed=5", "--output=" + i2], "init", compare=None)
    with open(i1, "rb") as f1, open(i2, "rb") as f2:
        check("init: the same file either way", f1.read() == f2.read())
    same(["info", "--json", i1], ["info", "--json", "--", i1], "info (and -- before operands)",
         compare=None)
    e1, e2 = os.path.join(tmp, "e1.safetensors"), os.path.join(tmp, "e2.safetensors")
    same(["export", i1, "--dtype", "bf16", "-o", e1], ["export", "--dtype=bf16", "--output=" + e2,
                                                        i1], "export", compare=None)
    with open(e1, "rb") as f1, open(e2, "rb") as f2:
        check("export: the same file either way", f1.read() == f2.read())
    same(["bench", "--batch", "1", "--repeat", "1", "--warmup", "0", "--size", "64"],
         ["bench", "--batch=1", "--repeat=1", "--warmup=0", "--size=64"], "bench", compare=None)


def paths_and_counts(tmp):
    pred, lab = os.path.join(tmp, "p.csv"), os.path.join(tmp, "l.csv")
    rep = os.path.join(tmp, "rep") + "/"
    r = run("evaluate", "--pred", pred, "--labels", lab, "--bootstrap", "0", "--report", rep)
    html = open(os.path.join(rep, "report.html")).read() if r.returncode == 0 else ""
    check("evaluate --report DIR/: no double slash in the path printed",
          r.returncode == 0 and "rep/report.html" in r.stderr and "//" not in r.stderr,
          r.stderr.strip())
    check("one class is '1 class' (table and report)",
          "1 class," in r.stdout and "1 classes" not in r.stdout + html and "1 class." in html,
          r.stdout.splitlines()[0] if r.stdout else "")
    rd = [os.path.join(tmp, n + ".csv") for n in ("r1", "r2", "m1")]
    r = run("readers", "--class", "Effusion", "--reader", "r1=" + rd[0], "--reader",
            "r2=" + rd[1], "--model", "m1=" + rd[2], "--bootstrap", "0", "--report", rep + "/")
    html = open(os.path.join(rep, "report.html")).read() if r.returncode == 0 else ""
    check("readers --report DIR//: one slash; 'other 1 reader'", r.returncode == 0 and
          "rep/report.html" in r.stderr and "//" not in r.stderr and "other 1 reader " in html
          and "1 model\n" in r.stdout, r.stderr.strip())
    r = run("init", "--classes", "1", "-o", os.path.join(tmp, "one.safetensors"))
    check("init: '1 class'", r.returncode == 0 and "1 class," in r.stderr, r.stderr.strip())


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
