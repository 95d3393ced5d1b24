"""Patient-level splits on the real ChestX-ray14 files (oracle: Python's own
parse of the same files).

- the 112,120-row Data_Entry_2017_v2020.csv.gz: every row parsed, no patient
  in two splits, image fractions within 0.5% of 70/10/20, positives per class
  equal a recount, same seed -> identical split files, another seed -> not;
- the arnoweng split lists load with 78,468 / 11,219 / 22,433 images and no
  patient crossing, alone and against the metadata (181 label differences);
- the kermany-224 manifest split by patient_key keeps every patient in one
  split (5,216 images);
- bad input through the CLI: malformed rows with line numbers.
"""
import csv
import gzip
import io
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from cxtest import CHEXNET, CLASSES14, TMP, shared  # noqa: E402

OUT = os.path.join(TMP, "py_data_split")
os.makedirs(OUT, exist_ok=True)


def run(*args, ok=True):
    p = subprocess.run([CHEXNET, "split", *args], capture_output=True, text=True, timeout=300)
    if ok and p.returncode != 0:
        raise AssertionError("chexnet split %s failed (%d): %s" % (" ".join(args), p.returncode,
                                                                  p.stderr))
    return p


def read_list(path):
    with open(path) as f:
        return [line.split() for line in f.read().splitlines() if line.strip()]


def check_metadata():
    meta = shared("nih", "metadata", "Data_Entry_2017_v2020.csv.gz")
    with gzip.open(meta, "rt", newline="") as f:
        rows = list(csv.reader(f))
    header, rows = rows[0], rows[1:]
    ii, fl, pi = header.index("Image Index"), header.index("Finding Labels"), \
        header.index("Patient ID")
    patient = {r[ii]: r[pi] for r in rows}
    labels = {r[ii]: set(r[fl].split("|")) for r in rows}
    assert len(rows) == 112120, len(rows)

    dirs = {}
    for seed in ("0", "0", "1"):
        d = os.path.join(OUT, "meta_seed%s_%d" % (seed, len(dirs)))
        p = run("--labels", meta, "--seed", seed, "--out", d, "--json")
        dirs[d] = (seed, json.loads(p.stdout))
    (d0, (_, j0)), (d1, _), (d2, _) = list(dirs.items())
    assert j0["n_images"] == 112120, j0["n_images"]
    assert j0["n_patients"] == len(set(patient.values())), j0["n_patients"]
    assert j0["classes"] == CLASSES14
    seen, part_of_patient = set(), {}
    for k, part in enumerate(("train", "val", "test")):
        lines = read_list(os.path.join(d0, part + ".txt"))
        s = j0["splits"][part]
        assert len(lines) == s["images"], (part, len(lines), s["images"])
        frac = len(lines) / 112120
        target = (0.7, 0.1, 0.2)[k]
        assert abs(frac - target) <= 0.005, (part, frac)
        pos = {c: 0 for c in CLASSES14}
        pats = set()
        for ln in lines:
            name = ln[0]
            assert name in patient, name
            assert name not in seen, name
            seen.add(name)
            q = patient[name]
            assert part_of_patient.setdefault(q, part) == part, ("patient crosses", q)
            pats.add(q)
            # the written labels are the metadata's
            want = [1 if c in labels[name] else 0 for c in CLASSES14]
            assert [int(v) for v in ln[1:]] == want, (name, ln, labels[name])
            for c in CLASSES14:
                pos[c] += c in labels[name]
        assert s["patients"] == len(pats), (part, s["patients"], len(pats))
        assert s["positives"] == pos, (part, s["positives"], pos)
        print("%-5s %6d images %5d patients fraction %.4f" % (part, len(lines), len(pats), frac))
    assert len(seen) == 112120
    assert j0["crossing_patients"] == 0
    for part in ("train", "val", "test"):
        a = open(os.path.join(d0, part + ".txt"), "rb").read()
        b = open(os.path.join(d1, part + ".txt"), "rb").read()
        c = open(os.path.join(d2, part + ".txt"), "rb").read()
        assert a == b, "same seed, different %s split" % part
        assert a != c, "seed 1 gave the same %s split as seed 0" % part
    # pneumonia task: same split (it depends on patients only), one class
    p = run("--labels", meta, "--task", "pneumonia", "--json")
    jp = json.loads(p.stdout)
    assert jp["classes"] == ["Pneumonia"]
    for part in ("train", "val", "test"):
        assert jp["splits"][part]["images"] == j0["splits"][part]["images"]
        assert jp["splits"][part]["positives"]["Pneumonia"] == \
            j0["splits"][part]["positives"]["Pneumonia"]
    # the written lists reload as a split
    p = run("--train", os.path.join(d0, "train.txt"), "--val", os.path.join(d0, "val.txt"),
            "--test", os.path.join(d0, "test.txt"), "--json")
    jl = json.loads(p.stdout)
    for part in ("train", "val", "test"):
        assert jl["splits"][part] == j0["splits"][part], part
    return patient


def check_arnoweng(patient):
    d = ("nih", "split-70-10-20")
    tr, va, te = shared(*d, "train_list.txt.gz"), shared(*d, "val_list.txt"), \
        shared(*d, "test_list.txt")
    want = {"train": 78468, "val": 11219, "test": 22433}
    p = run("--train", tr, "--val", va, "--test", te, "--json")
    j = json.loads(p.stdout)
    for part, n in want.items():
        assert j["splits"][part]["images"] == n, (part, j["splits"][part]["images"])
    assert j["crossing_patients"] == 0
    assert j["source"] == "split-list"
    # against the metadata: same counts, a warning about the 181 revised labels
    meta = shared("nih", "metadata", "Data_Entry_2017_v2020.csv.gz")
    p = run("--labels", meta, "--train", tr, "--val", va, "--test", te, "--json")
    j = json.loads(p.stdout)
    for part, n in want.items():
        assert j["splits"][part]["images"] == n
    ndiff = sum(int(w.split(": ")[1].split()[0]) for w in j["warnings"] if "differ" in w)
    # oracle: compare the lists with the metadata here
    meta_rows = {}
    with gzip.open(meta, "rt", newline="") as f:
        r = csv.reader(f)
        h = next(r)
        for row in r:
            meta_rows[row[0]] = set(row[1].split("|"))
    mine = 0
    for path in (tr, va, te):
        op = gzip.open if path.endswith(".gz") else open
        with op(path, "rt") as f:
            for line in f.read().splitlines():
                t = line.split()
                want_l = [1 if c in meta_rows[t[0]] else 0 for c in CLASSES14]
                mine += [int(v) for v in t[1:]] != want_l
    assert ndiff == mine, (ndiff, mine)
    print("arnoweng lists: %s, %d label differences with the 2020 metadata" % (want, mine))


def check_kermany():
    man = shared("kermany-224", "manifest.csv")
    with open(man, newline="") as f:
        rows = list(csv.DictReader(f))
    key = {r["path"]: r["patient_key"] for r in rows}
    pneu = {r["path"]: r["pneumonia"] for r in rows}
    d = os.path.join(OUT, "kermany")
    p = run("--manifest", man, "--patient-column", "patient_key", "--out", d, "--json")
    j = json.loads(p.stdout)
    assert j["n_images"] == 5216 == len(rows), j["n_images"]
    assert j["n_patients"] == len(set(key.values()))
    owner, total = {}, 0
    for part in ("train", "val", "test"):
        lines = read_list(os.path.join(d, part + ".txt"))
        total += len(lines)
        for ln in lines:
            q = key[ln[0]]
            assert owner.setdefault(q, part) == part, ("patient %s in two splits" % q)
            assert int(ln[1]) == int(pneu[ln[0]]), ln
        frac = len(lines) / 5216
        print("kermany %-5s %5d images, %.4f" % (part, len(lines), frac))
    assert total == 5216
    assert j["crossing_patients"] == 0
    # the default patient column finds patient_key too
    j2 = json.loads(run("--manifest", man, "--json").stdout)
    assert j2["splits"] == j["splits"]


def check_bad_input():
    bad = os.path.join(OUT, "bad_entry.csv")
    with open(bad, "w") as f:
        f.write("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
                "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]\n"
                "00000001_000.png,Cardiomegaly,0,1,57,M,PA,2682,2749,0.143,0.143\n"
                "00000001_001.png,Cardiomegaly|Flu,1,1,58,M,PA,2894,2729,0.143,0.143\n")
    p = run("--labels", bad, ok=False)
    assert p.returncode == 1 and "bad_entry.csv:3" in p.stderr and "Flu" in p.stderr, p.stderr
    p = run("--labels", bad, "--fractions", "0.7,0.2,0.2", ok=False)
    assert p.returncode == 2 and "sum to 1" in p.stderr, p.stderr
    p = run("--help")
    assert "--fractions" in p.stdout and "--patient-column" in p.stdout


patient = check_metadata()
check_arnoweng(patient)
check_kermany()
check_bad_input()
print("OK")
