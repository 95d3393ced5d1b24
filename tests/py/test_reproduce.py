"""scripts/reproduce-chexnet.sh, the reproduction of CheXNet on ChestX-ray14.

- shellcheck finds nothing in the script (when shellcheck is installed);
- usage errors exit 2, --help exits 0;
- --dry-run on ../shared/data/nih/metadata (the real 112,120-row metadata,
  no images): exits 0; its split files hold every image once, 112,120 in
  all, and no patient in two parts; the printed counts, positives per class
  and part, and the pneumonia loss's weights equal a recount in plain Python
  from the metadata; the plan is exactly the expected commands; the time
  estimates use the README's measured figures; again with --split-dir on
  the shared 70/10/20 lists and --skip-pneumonia;
- a tiny real run on the 22 NIH images (one training step per model):
  split -> prepare -> train -> predict -> evaluate -> reader study, outputs
  checked (the packs with chexnet info; and a dry run with --official-lists
  on lists of those images); the disk estimate's bytes per image against the packs it wrote;
  a rerun skips every step; a training without its record (as after an
  interruption) continues with --resume, and only what depends on it runs
  again.
"""
import csv
import gzip
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from cxtest import CHEXNET, CLASSES14, DATA, TMP, skip  # noqa: E402

SOURCE = os.environ.get("CX_SOURCE") or os.path.join(os.path.dirname(__file__), "..", "..")
SCRIPT = os.path.join(SOURCE, "scripts", "reproduce-chexnet.sh")
# absolute and without '..', as the script writes paths in its commands
OUT = os.path.abspath(os.path.join(TMP, "py_reproduce"))
META = os.path.abspath(os.path.join(DATA, "nih", "metadata", "Data_Entry_2017_v2020.csv.gz"))
IMAGES = os.path.abspath(os.path.join(DATA, "nih", "images"))
SPLIT_DIR = os.path.abspath(os.path.join(DATA, "nih", "split-70-10-20"))
PARTS = ("train", "val", "test")


def script(*args, timeout=900):
    t0 = time.time()
    p = subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True, timeout=timeout)
    p.seconds = time.time() - t0
    return p


def check(p, what):
    if p.returncode != 0:
        raise AssertionError("%s: exit %d\nstdout:\n%s\nstderr:\n%s" %
                             (what, p.returncode, p.stdout[-4000:], p.stderr[-4000:]))


def read_metadata(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", newline="") as f:
        rows = list(csv.reader(f))
    h = rows[0]
    ii, fl, pi = h.index("Image Index"), h.index("Finding Labels"), h.index("Patient ID")
    return {r[ii]: (r[pi], set(r[fl].split("|"))) for r in rows[1:]}


def read_split(d):
    parts = {}
    for part in PARTS:
        with open(os.path.join(d, part + ".txt")) as f:
            parts[part] = [ln.split()[0] for ln in f.read().splitlines() if ln.strip()]
    return parts


def recount(meta, parts):
    """Independent counts: images, patients, positives per class and part,
    and the weighted loss's weights on train; asserts the split is a
    patient-level partition of the metadata."""
    seen, part_of = set(), {}
    out = {}
    for part, names in parts.items():
        pos = {c: 0 for c in CLASSES14}
        pats = set()
        for n in names:
            assert n in meta, ("image not in the metadata", n)
            assert n not in seen, ("image in two parts", n)
            seen.add(n)
            pat, labels = meta[n]
            assert part_of.setdefault(pat, part) == part, ("patient in two parts", pat)
            pats.add(pat)
            for c in CLASSES14:
                pos[c] += c in labels
        out[part] = {"images": len(names), "patients": len(pats), "positives": pos}
    assert seen == set(meta), ("images in no part", len(set(meta) - seen))
    P = out["train"]["positives"]["Pneumonia"]
    N = out["train"]["images"] - P
    out["w_pos"], out["w_neg"] = N / (P + N), P / (P + N)
    return out


def table_rows(stdout, title):
    """The rows 'NAME v1 v2 ...' of the table after the line starting with title."""
    lines = stdout.splitlines()
    i = next(k for k, ln in enumerate(lines) if ln.startswith(title))
    rows = {}
    for ln in lines[i + 2:]:
        if not ln.strip():
            break
        f = ln.split()
        if len(f) >= 4 and all(x.isdigit() for x in f[-4:]):
            rows[" ".join(f[:-4])] = [int(x) for x in f[-4:]]
    return rows


def check_counts(stdout, want):
    split = table_rows(stdout, "== split:")
    for what in ("patients", "images"):
        got = split[what]
        exp = [want[p][what] for p in PARTS]
        assert got == exp + [sum(exp)], (what, got, exp)
    assert "patients in two parts: 0" in stdout
    pos = table_rows(stdout, "== positive images per class")
    assert list(pos) == CLASSES14, list(pos)
    for c in CLASSES14:
        exp = [want[p]["positives"][c] for p in PARTS]
        assert pos[c] == exp + [sum(exp)], (c, pos[c], exp)


def weights(stdout):
    w = {}
    for ln in stdout.splitlines():
        for k in ("w+", "w-"):
            if ln.startswith(k + " = "):
                w[k] = float(ln.rsplit("=", 1)[1])
    return w


def plan(stdout):
    return [ln for ln in stdout.splitlines() if ln.startswith("[")]


def expected_plan(out, meta, data, split_args, epochs, models, threads, first):
    x = CHEXNET
    lines = ["[split] %s%s split --labels %s %s --seed 0 --out %s/split --tsv > %s/split/summary.tsv"
             % ("(run by this dry run) " if first else "(done) ", x, meta, split_args, out, out),
             "[prepare-trainval] %s prepare --labels %s --image-dir %s --only %s/split/train.txt "
             "--only %s/split/val.txt -o %s/pack/trainval.cxpack --threads %d"
             % (x, meta, data, out, out, out, threads),
             "[prepare-test] %s prepare --labels %s --image-dir %s --only %s/split/test.txt "
             "-o %s/pack/test.cxpack --threads %d" % (x, meta, data, out, out, threads)]
    for m in models:
        lines += [
            "[train-%s] %s train --labels %s/pack/trainval.cxpack --train-list %s/split/train.txt "
            "--val-list %s/split/val.txt --task %s --epochs %d --batch 16 --seed 0 --out %s/%s "
            "--threads %d" % (m, x, out, out, out, m, epochs, out, m, threads),
            "[predict-%s] %s predict --model %s/%s/best.safetensors --format csv "
            "%s/pack/test.cxpack --threads %d > %s/%s/test-pred.csv"
            % (m, x, out, m, out, threads, out, m),
            "[evaluate-%s] %s evaluate --pred %s/%s/test-pred.csv --labels %s/split/test.txt "
            "--bootstrap 10000 --seed 0 --json %s/%s/test-eval.json --report %s/%s/report "
            "--threads %d > %s/%s/test-eval.txt" % (m, x, out, m, out, out, m, out, m, threads,
                                                     out, m)]
    return lines


def test_lint_and_usage():
    sc = shutil.which("shellcheck")
    if sc:
        p = subprocess.run([sc, SCRIPT], capture_output=True, text=True)
        assert p.returncode == 0, p.stdout
        print("shellcheck: clean")
    else:
        print("shellcheck not installed: lint skipped")
    p = script("--help")
    assert p.returncode == 0 and "--dry-run" in p.stdout and "--official-lists" in p.stdout
    for args in ([], ["--bogus", "x"], ["a", "b"], ["x", "--epochs", "ten"],
                 ["x", "--official-lists", "--split-dir", "y"], ["x", "--bench"]):
        p = script(*args)
        assert p.returncode == 2, (args, p.returncode, p.stderr)
    p = script(os.path.join(TMP, "no-such-folder"), "--chexnet", CHEXNET, "--dry-run")
    assert p.returncode == 1 and "not a folder" in p.stderr, p.stderr
    if os.path.exists(META):  # metadata without images: only the dry run
        p = script(os.path.dirname(META), "--chexnet", CHEXNET, "--out",
                   os.path.join(OUT, "no-images"))
        assert p.returncode == 1 and "no images in" in p.stderr, p.stderr
    print("usage: ok")


def test_dry_run():
    if not os.path.exists(META):
        print("SKIP dry run: %s not found" % META)
        return False
    meta = read_metadata(META)
    assert len(meta) == 112120
    data = os.path.dirname(META)
    out = os.path.join(OUT, "dry")
    shutil.rmtree(out, ignore_errors=True)
    p = script(data, "--dry-run", "--out", out, "--threads", "2", "--chexnet", CHEXNET)
    check(p, "dry run")
    s = p.stdout
    print(s)
    parts = read_split(os.path.join(out, "split"))
    assert sum(len(v) for v in parts.values()) == 112120
    want = recount(meta, parts)
    check_counts(s, want)
    w = weights(s)
    assert abs(w["w+"] - want["w_pos"]) < 1e-15 and abs(w["w-"] - want["w_neg"]) < 1e-15, \
        (w, want["w_pos"], want["w_neg"])
    # chexnet split --json gives every class's weights the same way
    js = json.loads(subprocess.run([CHEXNET, "split", "--labels", META, "--json"], check=True,
                                   capture_output=True, text=True).stdout)
    for c in CLASSES14:
        P = want["train"]["positives"][c]
        N = want["train"]["images"] - P
        lw = js["loss_weights"][c]
        assert abs(lw["w_pos"] - N / (P + N)) < 1e-15 and abs(lw["w_neg"] - P / (P + N)) < 1e-15, \
            (c, lw)
    r = subprocess.run([CHEXNET, "split", "--labels", META, "--json", "--tsv"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "not both" in r.stderr, (r.returncode, r.stderr)
    exp = expected_plan(out, META, data, "--fractions 0.7,0.1,0.2", 10, ("all14", "pneumonia"),
                        2, True)
    assert plan(s) == exp, "\n".join(["got:"] + plan(s) + ["expected:"] + exp)
    # the estimates: the README's measured figures, each machine named
    with open(os.path.join(SOURCE, "README.md")) as f:
        readme = f.read()
    assert "| training step, batch 16 | 1.65 s |" in readme
    assert "| inference, batch 16 | 499.7 ms" in readme
    assert "training step 1.65 s, inference 0.4997 s per 16 images" in s
    assert "training step 1.72 s, inference 0.5245 s per 16 images" in s
    assert "GPU: no GPU backend yet" in s
    ntv, nte = want["train"]["images"] + want["val"]["images"], want["test"]["images"]
    assert "packs:  %.2f GB train+val (%d images) + %.2f GB test (%d images), 50251 bytes per image" \
        % (ntv * 50251 / 1e9, ntv, nte * 50251 / 1e9, nte) in s
    # the AVX-512 row: steps = ceil(train / 16) * 10 epochs
    steps = -(-want["train"]["images"] // 16) * 10
    assert "(%d steps;" % steps in s, steps
    # a second dry run: the split is recorded and not made again
    p = script(data, "--dry-run", "--out", out, "--threads", "2", "--chexnet", CHEXNET)
    check(p, "second dry run")
    assert plan(p.stdout)[0].startswith("[split] (done) ")

    # the public 70/10/20 lists, the 14-finding model only
    if os.path.isdir(SPLIT_DIR):
        out2 = os.path.join(OUT, "dry-lists")
        shutil.rmtree(out2, ignore_errors=True)
        p = script(data, "--dry-run", "--out", out2, "--threads", "2", "--chexnet", CHEXNET,
                   "--split-dir", SPLIT_DIR, "--skip-pneumonia", "--epochs", "3")
        check(p, "dry run with --split-dir")
        parts2 = read_split(os.path.join(out2, "split"))
        n = {"train": 78468, "val": 11219, "test": 22433}
        assert {k: len(v) for k, v in parts2.items()} == n
        want2 = recount(meta, parts2)
        check_counts(p.stdout, want2)
        assert "pneumonia loss" not in p.stdout
        sa = "--train %s/train_list.txt.gz --val %s/val_list.txt --test %s/test_list.txt" % (
            SPLIT_DIR, SPLIT_DIR, SPLIT_DIR)
        exp = expected_plan(out2, META, data, sa, 3, ("all14",), 2, True)
        assert plan(p.stdout) == exp, "\n".join(["got:"] + plan(p.stdout) + ["expected:"] + exp)
    print("dry run: ok")
    return True


def tiny_data(root):
    """A ChestX-ray14 folder as users have it, with the 22 NIH images:
    the metadata's rows of those images and images/."""
    names = sorted(f for f in os.listdir(IMAGES) if f.endswith(".png"))
    os.makedirs(os.path.join(root, "images"))
    for n in names:
        os.symlink(os.path.abspath(os.path.join(IMAGES, n)), os.path.join(root, "images", n))
    with gzip.open(META, "rt", newline="") as f:
        lines = f.read().splitlines()
    keep = [lines[0]] + [ln for ln in lines[1:] if ln.split(",", 1)[0] in set(names)]
    assert len(keep) == len(names) + 1
    with open(os.path.join(root, "Data_Entry_2017_v2020.csv"), "w") as f:
        f.write("\n".join(keep) + "\n")
    return names


def test_tiny_run():
    if not (os.path.exists(META) and os.path.isdir(IMAGES)):
        print("SKIP tiny run: shared NIH images or metadata not found")
        return False
    root = os.path.join(OUT, "tiny")
    shutil.rmtree(root, ignore_errors=True)
    data = os.path.join(root, "data")
    names = tiny_data(data)
    out = os.path.join(root, "out")
    meta = read_metadata(os.path.join(data, "Data_Entry_2017_v2020.csv"))
    # --official-lists: the test part is test_list.txt, val comes from
    # train_val_list.txt by patient (plain names, as NIH ships them; the last
    # line without a newline)
    with open(os.path.join(data, "train_val_list.txt"), "w") as f:
        f.write("\n".join(names[:16]))
    with open(os.path.join(data, "test_list.txt"), "w") as f:
        f.write("\n".join(names[16:]))
    out_off = os.path.join(root, "out-official")
    p = script(data, "--out", out_off, "--chexnet", CHEXNET, "--official-lists", "--dry-run")
    check(p, "dry run with --official-lists")
    po = read_split(os.path.join(out_off, "split"))
    assert sorted(po["test"]) == names[16:], po["test"]
    assert sorted(po["train"] + po["val"]) == names[:16] and po["val"], po
    check_counts(p.stdout, recount(meta, po))
    assert plan(p.stdout)[0].startswith(
        "[split] (run by this dry run) %s split --labels %s/Data_Entry_2017_v2020.csv --train "
        "%s/train_val_list.txt --test %s/test_list.txt --val-fraction 0.125 --seed 0 "
        % (CHEXNET, data, data, data)), plan(p.stdout)[0]
    os.remove(os.path.join(data, "train_val_list.txt"))
    os.remove(os.path.join(data, "test_list.txt"))

    # the split first (a dry run), to give the readers the test part's images
    base = [data, "--out", out, "--threads", "2", "--chexnet", CHEXNET, "--epochs", "1",
            "--max-steps", "1", "--bootstrap", "100"]
    p = script(*base, "--dry-run")
    check(p, "tiny dry run")
    assert "images:  under " in p.stdout
    parts = read_split(os.path.join(out, "split"))
    want = recount(meta, parts)
    check_counts(p.stdout, want)
    # readers' files: three readers of one finding on the test images (made
    # from the metadata's labels, two with one decision changed)
    test = parts["test"]
    cls = max(CLASSES14, key=lambda c: sum(c in meta[n][1] for n in test))
    truth = [int(cls in meta[n][1]) for n in test]
    assert 0 < sum(truth) < len(test), (cls, truth)
    rd = os.path.join(root, "readers")
    os.makedirs(rd)
    for r, flip in (("r1", None), ("r2", 0), ("r3", len(test) - 1)):
        with open(os.path.join(rd, r + ".csv"), "w") as f:
            f.write("Image Index,%s\n" % cls)
            for i, n in enumerate(test):
                f.write("%s,%d\n" % (n, truth[i] ^ (i == flip)))
    # initial weights with another head, as ImageNet's 1000 classes (a
    # freshly initialised model stands in for the converted ImageNet file)
    w = os.path.join(root, "init-1000.safetensors")
    subprocess.run([CHEXNET, "init", "--classes", "1000", "--seed", "1", "-o", w], check=True,
                   capture_output=True)
    base += ["--readers", rd, "--readers-class", cls, "--weights", w]

    p = script(*base)
    check(p, "tiny run")
    print(p.stdout)
    print("tiny run: %.1f s" % p.seconds)
    steps = ["split", "prepare-trainval", "prepare-test", "train-all14", "predict-all14",
             "evaluate-all14", "train-pneumonia", "predict-pneumonia", "evaluate-pneumonia",
             "readers"]
    for st in steps[1:]:
        assert "== %s\n$ " % st in p.stdout, st
    assert "== split: done earlier, skipped" in p.stdout
    for m in ("all14", "pneumonia"):
        assert os.path.getsize(os.path.join(out, m, "best.safetensors")) > 1e6
        with open(os.path.join(out, m, "test-pred.csv")) as f:
            rows = list(csv.reader(f))
        classes = CLASSES14 if m == "all14" else ["Pneumonia"]
        assert rows[0] == ["image"] + classes, rows[0]
        assert sorted(r[0] for r in rows[1:]) == sorted(test)
        for r in rows[1:]:
            assert all(0 <= float(v) <= 1 for v in r[1:]), r
        with open(os.path.join(out, m, "test-eval.json")) as f:
            ev = json.load(f)
        assert ev["n_images"] == len(test) and set(ev["auroc"]) == set(classes)
        assert os.path.exists(os.path.join(out, m, "report", "report.html"))
    # the summary's AUROCs are those of the evaluation's JSON
    with open(os.path.join(out, "all14", "test-eval.json")) as f:
        ev = json.load(f)
    res = p.stdout[p.stdout.index("-- all14 model"):]
    for c in CLASSES14 + ["mean AUROC"]:
        a = ev["mean_auroc"] if c == "mean AUROC" else ev["auroc"][c]
        if a["value"] is None:
            want_line = "%-20s %-30s " % (c, "undefined")
        else:
            want_line = "%-20s %-30s " % (c, "%.4f [%.4f, %.4f]" % (a["value"], *a["ci95"]))
        assert want_line in res, (want_line, res)
    assert p.stderr.count("has 1000 outputs; replacing the head") == 2, p.stderr
    assert "initial weights: %s" % w in p.stdout
    assert "mean AUROC" in p.stdout and "0.841 (public re-implementations: 0.838-0.843)" in p.stdout
    with open(os.path.join(out, "readers", "readers.json")) as f:
        json.load(f)
    assert "-- reader study (%s)" % cls in p.stdout
    # the packs (chexnet info): the split's images, and the disk estimate's
    # bytes per image
    size = 0
    for f, pp in (("trainval.cxpack", ("train", "val")), ("test.cxpack", ("test",))):
        pk = os.path.join(out, "pack", f)
        r = subprocess.run([CHEXNET, "info", "--json", pk], check=True, capture_output=True,
                           text=True)
        js = json.loads(r.stdout)
        n = sum(len(parts[q]) for q in pp)
        assert js["format"] == "cxpack" and js["images"] == n and js["size"] == 224, js
        assert js["bytes"] == os.path.getsize(pk) and js["bytes_per_image"] == js["bytes"] / n
        assert js["classes"] == CLASSES14
        for c in CLASSES14:
            assert js["positives"][c] == sum(want[q]["positives"][c] for q in pp), (c, js)
        size += js["bytes"]
    per = size / len(names)
    assert abs(per - 50251) / 50251 < 0.005, per
    print("pack bytes per image: %.1f (the estimate uses 50251)" % per)

    # a rerun skips every step
    p = script(*base)
    check(p, "rerun")
    for st in steps:
        assert "== %s: done earlier, skipped" % st in p.stdout, st
    assert "\n$ " not in p.stdout, p.stdout
    print("rerun: every step skipped, %.1f s" % p.seconds)

    # an interrupted training (no record, its checkpoint there) continues
    # with --resume; what depends on it runs again, the rest is skipped
    os.remove(os.path.join(out, ".steps", "train-all14"))
    p = script(*base)
    check(p, "resume")
    assert "--out %s/all14 --weights %s --max-steps 1 --threads 2 --resume\n" % (out, w) \
        in p.stdout, p.stdout
    assert "resuming from" in p.stdout + p.stderr
    # (the readers' finding is not pneumonia: their model is the 14-finding one)
    for st in ("train-all14", "predict-all14", "evaluate-all14", "readers"):
        assert "== %s\n$ " % st in p.stdout, st
    for st in ("prepare-trainval", "train-pneumonia", "evaluate-pneumonia"):
        assert "== %s: done earlier, skipped" % st in p.stdout, st
    print("resume: ok")
    return True


def main():
    test_lint_and_usage()
    ran = [test_dry_run(), test_tiny_run()]
    if not any(ran):
        skip("../shared/data/nih not found")
    print("ok")


if __name__ == "__main__":
    main()
