#!/usr/bin/env python3
"""chexnet localize end to end on the real NIH X-ray with radiologists' boxes
(../shared/data/nih: 00002578_000.png and BBox_List_2017.csv.gz; skipped
when absent):

  - the official box list: the one image found, its Nodule box (1024-px
    coordinates, as in the file), the image's size, the class's probability
    (that of chexnet predict), and the pointing game and IoU computed here
    with numpy from the raw map (tests/tools/cam_dump) and the box;
  - --csv agrees with --json; the note about images not in the folder;
  - a box list written here: the odd official header, "Infiltrate" read as
    "Infiltration", several boxes of one class on one image (their union),
    findings the model lacks (a note), an image that is not there;
  - errors: a malformed row (named by line), a file that is not a box list,
    --threshold outside [0, 1], a model without any of the list's classes.
"""
import csv
import gzip
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
import cxtest  # noqa: E402
import numpy as np  # noqa: E402
from test_localize_oracle import item_figures, run_tool, upsample64  # noqa: E402

TMP = os.path.join(cxtest.TMP, "localize_nih")
failures = []
IMG = "00002578_000.png"


def check(name, ok, detail=""):
    print(("PASS " if ok else "FAIL ") + name + (": " + detail if detail else ""), flush=True)
    if not ok:
        failures.append(name)


def run(*args):
    return subprocess.run([cxtest.CHEXNET] + list(args), capture_output=True, text=True)


def main():
    images = cxtest.shared("nih", "images")
    bbox = cxtest.shared("nih", "metadata", "BBox_List_2017.csv.gz")
    os.makedirs(TMP, exist_ok=True)
    model = os.path.join(TMP, "m14.safetensors")
    r = run("init", "--arch", "densenet121", "--classes", "14", "--seed", "3", "-o", model)
    if r.returncode:
        raise SystemExit(r.stderr)

    # the radiologists' boxes of the image, read here
    with gzip.open(bbox, "rt", newline="") as f:
        rows = list(csv.reader(f))
    mine = [r for r in rows[1:] if r[0] == IMG]
    check("the list holds one box for %s (Nodule)" % IMG,
          len(mine) == 1 and mine[0][1] == "Nodule", str(mine))
    box = [float(v) for v in mine[0][2:6]]
    n_list_images = len(set(r[0] for r in rows[1:]))

    js, cs = os.path.join(TMP, "loc.json"), os.path.join(TMP, "loc.csv")
    r = run("localize", "--model", model, "--boxes", bbox, "--images", images,
            "--json", js, "--csv", cs, "--bootstrap", "200", "--seed", "3")
    check("localize on the official list: exit 0", r.returncode == 0, r.stderr.strip())
    if r.returncode:
        sys.exit(1)
    check("a note counts the images not in the folder",
          "%d of %d images with boxes are not in" % (n_list_images - 1, n_list_images)
          in r.stderr, r.stderr.strip())
    j = json.load(open(js))
    it = j["items"]
    check("one image, one item: %s, Nodule, 1024 x 1024" % IMG,
          j["n_images"] == 1 and len(it) == 1 and it[0]["image"] == IMG and
          it[0]["class"] == "Nodule" and it[0]["width"] == 1024 and it[0]["height"] == 1024,
          json.dumps(it)[:300])
    check("the box as in the file (original pixels)", it[0]["boxes"] == [box],
          "%s vs %s" % (it[0]["boxes"], box))
    # the class's probability: chexnet predict's
    p = run("predict", "--model", model, "--format", "json", os.path.join(images, IMG))
    prob = json.loads(p.stdout)["probabilities"]["Nodule"]
    check("the item's probability is chexnet predict's", it[0]["probability"] == prob,
          "%r vs %r" % (it[0]["probability"], prob))

    # the figures from the raw map, here
    raw_path = os.path.join(TMP, "cam.f32")
    d = subprocess.run([cxtest.tool("cam_dump"), model, raw_path, os.path.join(images, IMG)],
                       capture_output=True, text=True)
    h, w, nc = map(int, d.stdout.split())
    raw = np.fromfile(raw_path, dtype=np.float32)[:nc * h * w].reshape(nc, h, w)
    nodule = cxtest.CLASSES14.index("Nodule")
    item = {"image": 0, "cls": 0, "map": raw[nodule], "W": 1024, "H": 1024, "boxes": [box]}
    _, ups = run_tool([item], 1, 0.5, 0, 0, "nih")
    U = ups[0]
    ref = upsample64(raw[nodule], 1024, 1024)
    check("the map upsampled to the original 1024 px (float64 bilinear, rel. %.1e)"
          % (np.abs(U - ref).max() / np.abs(raw[nodule]).max()),
          np.abs(U - ref).max() <= 1e-6 * np.abs(raw[nodule]).max())
    hit, iou = item_figures(U, [box], 0.5)
    check("pointing game and IoU of the CLI = numpy's on the same map",
          it[0]["pointing"] == hit and it[0]["iou"] == iou,
          "%s %s vs %s %s" % (it[0]["pointing"], it[0]["iou"], hit, iou))
    hit64, iou64 = item_figures(ref, [box], 0.5)
    check("... and on the float64 map (IoU to 1e-3)",
          hit64 == hit and abs(iou64 - iou) < 1e-3, "%s %s" % (hit64, iou64))
    nod = j["classes"]["Nodule"]
    check("Nodule: n 1, the item's figures, CIs collapse on one image",
          nod["n_items"] == 1 and nod["pointing"]["value"] == hit and
          nod["pointing"]["ci95"] == [hit, hit] and nod["iou"]["value"] == iou,
          json.dumps(nod))
    check("classes without boxes here: null figures",
          j["classes"]["Mass"]["n_items"] == 0 and j["classes"]["Mass"]["iou"]["value"] is None)
    with open(cs, newline="") as f:
        crow = {r["class"]: r for r in csv.DictReader(f)}
    check("--csv: the Nodule and overall rows of the JSON",
          float(crow["Nodule"]["iou"]) == iou and float(crow["overall"]["pointing"]) == hit and
          crow["Mass"]["iou"] == "" and len(crow) == 15, str(crow.get("Nodule")))

    # a list written here
    lst = os.path.join(TMP, "boxes.csv")
    with open(lst, "w") as f:
        f.write("Image Index,Finding Label,Bbox [x,y,w,h],,,\n")
        f.write("%s,Infiltrate,100,200,300,250\n" % IMG)
        f.write("%s,Infiltrate,600,150,200,400\n" % IMG)
        f.write("%s,Nodule,%s\n" % (IMG, ",".join(mine[0][2:6])))
        f.write("%s,Lung Lesion,10,10,20,20\n" % IMG)
        f.write("99999999_000.png,Mass,1,2,3,4\n")
    js2 = os.path.join(TMP, "loc2.json")
    r = run("localize", "--model", model, "--boxes", lst, "--images", images, "--json", js2,
            "--bootstrap", "0", "--threshold", "0.3")
    check("own list: exit 0", r.returncode == 0, r.stderr.strip())
    j2 = json.load(open(js2))
    by = {(x["image"], x["class"]): x for x in j2["items"]}
    inf = by.get((IMG, "Infiltration"))
    check("'Infiltrate' is Infiltration; its two boxes make one item",
          inf is not None and len(inf["boxes"]) == 2 and len(j2["items"]) == 2,
          str(list(by)))
    if inf:
        infl = cxtest.CLASSES14.index("Infiltration")
        _, ups = run_tool([{"image": 0, "cls": 0, "map": raw[infl], "W": 1024, "H": 1024,
                            "boxes": inf["boxes"]}], 1, 0.3, 0, 0, "nih_inf")
        hh, ii = item_figures(ups[0], inf["boxes"], 0.3)
        check("Infiltration's figures over the union of its boxes, at threshold 0.3",
              inf["pointing"] == hh and inf["iou"] == ii, "%s %s vs %s %s" %
              (inf["pointing"], inf["iou"], hh, ii))
    check("a note names the findings the model lacks", "Lung Lesion" in r.stderr, r.stderr)
    check("and counts the missing image", "1 of 2 images with boxes are not in" in r.stderr,
          r.stderr)
    check("no CIs without the bootstrap", j2["overall"]["iou"]["ci95"] == [None, None])

    # errors
    bad = os.path.join(TMP, "bad.csv")
    with open(bad, "w") as f:
        f.write("Image Index,Finding Label,x,y,w,h\n%s,Nodule,1,2,3,4\n%s,Nodule,1,x,3,4\n"
                % (IMG, IMG))
    r = run("localize", "--model", model, "--boxes", bad, "--images", images)
    check("a malformed row: exit 1, the file and line named",
          r.returncode == 1 and "bad.csv line 3" in r.stderr, r.stderr.strip())
    with open(bad, "w") as f:
        f.write("image,label\n%s,Nodule\n" % IMG)
    r = run("localize", "--model", model, "--boxes", bad, "--images", images)
    check("not a box list: exit 1 with the expected header",
          r.returncode == 1 and "Image Index" in r.stderr, r.stderr.strip())
    with open(bad, "w") as f:
        f.write("Image Index,Finding Label,x,y,w,h\n%s,Nodule,1,2,0,4\n" % IMG)
    r = run("localize", "--model", model, "--boxes", bad, "--images", images)
    check("a box of width 0: exit 1", r.returncode == 1 and "line 2" in r.stderr,
          r.stderr.strip())
    r = run("localize", "--model", model, "--boxes", lst, "--images", images, "--threshold", "2")
    check("--threshold 2: usage error (2)", r.returncode == 2, r.stderr.strip())
    m1 = os.path.join(TMP, "m1.safetensors")
    run("init", "--arch", "densenet121", "--classes", "1", "--seed", "1", "-o", m1)
    r = run("localize", "--model", m1, "--boxes", bbox, "--images", images)
    check("a pneumonia model and no pneumonia box here: exit 1, said why",
          r.returncode == 1 and "Pneumonia" in r.stderr, r.stderr.strip())

    if failures:
        print("%d failure(s): %s" % (len(failures), ", ".join(failures)))
        sys.exit(1)
    print("all localize checks passed")


if __name__ == "__main__":
    main()
