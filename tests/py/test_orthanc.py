"""Results back into a real PACS: Debian's Orthanc, started on loopback with
deploy/orthanc/orthanc.json and chexnet.lua (ports, storage and the URL of
chexnet serve changed for the test), next to `chexnet serve`; both always
stopped.

A DICOM chest X-ray made from a real PNG is uploaded through Orthanc's REST
API. Within a bounded time, two new instances must appear in its study:
  - a Secondary Capture: same patient and study, a new series and new UIDs,
    the source referenced, the heat map overlay of `chexnet predict --cam`
    under the burned-in labels;
  - a Comprehensive SR whose numbers are exactly `chexnet predict`'s
    probabilities, referencing the source image.
Both pass dicom3tools' dciodvfy without errors. A lateral view uploaded
first is not sent to chexnet (its study keeps its one instance).
"""
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import cxtest  # noqa: E402
import servetest  # noqa: E402
from servetest import Server  # noqa: E402

import numpy as np  # noqa: E402

SRC = os.environ.get("CX_SOURCE") or os.path.join(os.path.dirname(__file__), "..", "..")
TMP = os.path.join(cxtest.TMP, "orthanc")
ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
passes, failures = [], []


def check(name, ok, detail=""):
    print(("PASS " if ok else "FAIL ") + name + (": " + detail if detail else ""), flush=True)
    (passes if ok else failures).append(name)


class Orthanc:
    def __init__(self, chexnet_url):
        self.port = servetest.free_port()
        cfg = json.load(open(os.path.join(SRC, "deploy", "orthanc", "orthanc.json")))
        db = os.path.join(TMP, "db")
        cfg.update({"HttpPort": self.port, "StorageDirectory": db, "IndexDirectory": db,
                    "DicomServerEnabled": False, "ChexnetUrl": chexnet_url,
                    "LuaScripts": [os.path.join(SRC, "deploy", "orthanc", "chexnet.lua")]})
        path = os.path.join(TMP, "orthanc.json")
        with open(path, "w") as f:
            json.dump(cfg, f, indent=1)
        self.log = open(os.path.join(TMP, "orthanc.log"), "w")
        self.proc = subprocess.Popen([ORTHANC, path], stdout=self.log, stderr=subprocess.STDOUT)
        servetest._RUNNING.append(self.proc)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                st, _, _ = self.get("/system")
                if st == 200:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.3)
        self.stop()
        raise SystemExit("Orthanc did not start: " + open(self.log.name).read()[-2000:])

    def request(self, method, path, body=None):
        return servetest.request("127.0.0.1", self.port, method, path, body, timeout=60)

    def get(self, path):
        return self.request("GET", path)

    def json(self, path):
        st, _, body = self.get(path)
        if st != 200:
            raise SystemExit("Orthanc GET %s: %d %s" % (path, st, body[:200]))
        return json.loads(body)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc in servetest._RUNNING:
            servetest._RUNNING.remove(self.proc)
        self.log.close()


def dciodvfy(data, name):
    if not shutil.which("dciodvfy"):
        print("SKIP dciodvfy (dicom3tools) not installed")
        return
    p = os.path.join(TMP, name + ".dcm")
    with open(p, "wb") as f:
        f.write(data)
    r = subprocess.run(["dciodvfy", p], capture_output=True, text=True)
    errors = [line for line in (r.stdout + r.stderr).splitlines() if line.startswith("Error")]
    check("dciodvfy finds no error in the %s" % name, not errors, "; ".join(errors[:5]))


def sr_numbers(ds):
    """{concept meaning: value} of the NUM items at the root container."""
    out = {}
    for item in ds.ContentSequence:
        if item.ValueType == "NUM":
            out[item.ConceptNameCodeSequence[0].CodeMeaning] = \
                item.MeasuredValueSequence[0].NumericValue
    return out


def main():
    if not os.path.exists(ORTHANC):
        cxtest.skip("Orthanc not installed (scripts/deps.sh --test installs orthanc)")
    import dicomgen
    dicomgen.need_tools()
    model = os.path.join(SRC, "models", "chexnet-pneumonia.safetensors")
    if not os.path.exists(model):
        cxtest.skip("the shipped model is absent")
    import pydicom
    shutil.rmtree(TMP, ignore_errors=True)
    os.makedirs(TMP)
    cases = dicomgen.make_cases(os.path.join(TMP, "files"))
    by = {os.path.basename(c["path"]): c["path"] for c in cases}
    frontal, lateral = by["w12_jpegls.dcm"], by["warn_lateral.dcm"]

    r = subprocess.run([cxtest.CHEXNET, "predict", "--model", model, "--format", "json", frontal],
                       capture_output=True, text=True)
    want = json.loads(r.stdout)["probabilities"]
    camdir = os.path.join(TMP, "cam")
    subprocess.run([cxtest.CHEXNET, "predict", "--model", model, "--cam", camdir,
                    "--no-cam-legend", frontal], capture_output=True)
    from PIL import Image
    overlay = np.array(Image.open(os.path.join(camdir, "w12_jpegls.Pneumonia.png")))

    src = pydicom.dcmread(frontal)
    with Server("--model", model) as chexnet:
        pacs = Orthanc(chexnet.url)
        try:
            st, _, body = pacs.request("POST", "/instances", open(lateral, "rb").read())
            lat_study = json.loads(body)["ParentStudy"] if st == 200 else None
            st, _, body = pacs.request("POST", "/instances", open(frontal, "rb").read())
            check("the X-ray uploaded through Orthanc's REST API", st == 200, "%d" % st)
            up = json.loads(body)
            study = up["ParentStudy"]
            t0 = time.time()
            inst = []
            while time.time() - t0 < 180:
                inst = pacs.json("/studies/%s/instances" % study)
                if len(inst) >= 3:
                    break
                time.sleep(0.5)
            check("the results appear in the study (within 180 s)", len(inst) == 3,
                  "%d instances after %.1f s" % (len(inst), time.time() - t0))
            objs = {}
            for i in inst:
                if i["ID"] == up["ID"]:
                    continue
                st, _, data = pacs.get("/instances/%s/file" % i["ID"])
                ds = pydicom.dcmread(io.BytesIO(data))
                objs[ds.SOPClassUID.name] = (ds, data)
            sc = objs.get("Secondary Capture Image Storage")
            sr = objs.get("Comprehensive SR Storage")
            check("a Secondary Capture and a Comprehensive SR", sc is not None and sr is not None,
                  str(list(objs)))
            uid = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
            if sc and sr:
                for name, (ds, data) in (("Secondary Capture", sc), ("SR", sr)):
                    ok = (ds.StudyInstanceUID == src.StudyInstanceUID and
                          ds.SeriesInstanceUID != src.SeriesInstanceUID and
                          ds.SOPInstanceUID not in (src.SOPInstanceUID,) and
                          all(uid.match(u) and len(u) <= 64 for u in
                              (ds.SOPInstanceUID, ds.SeriesInstanceUID)) and
                          ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID and
                          ds.PatientID == src.PatientID and ds.PatientName == src.PatientName and
                          ds.AccessionNumber == src.AccessionNumber)
                    check("%s: same patient and study, new series and instance UIDs" % name,
                          ok, "%s / %s" % (ds.SeriesInstanceUID, ds.SOPInstanceUID))
                    dciodvfy(data, name.replace(" ", "-"))
                ds = sc[0]
                ref = ds.SourceImageSequence[0]
                check("Secondary Capture references the X-ray",
                      ref.ReferencedSOPInstanceUID == src.SOPInstanceUID and
                      ref.ReferencedSOPClassUID == src.SOPClassUID and
                      ds.BurnedInAnnotation == "YES")
                px = ds.pixel_array
                band = 150  # the labels sit above this row
                check("Secondary Capture: the heat map overlay of chexnet predict --cam",
                      px.shape == overlay.shape and np.array_equal(px[band:], overlay[band:]) and
                      not np.array_equal(px[:band], overlay[:band]),
                      "shape %s vs %s" % (px.shape, overlay.shape))
                ds = sr[0]
                nums = sr_numbers(ds)
                got = {k: float(v) for k, v in nums.items()}
                check("SR: the probabilities of chexnet predict", got == want,
                      "%s vs %s" % (nums, want))
                refs = [str(i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
                        for i in ds.ContentSequence if i.ValueType == "IMAGE"]
                ev = [s.ReferencedSOPInstanceUID
                      for st_ in ds.CurrentRequestedProcedureEvidenceSequence
                      for se in st_.ReferencedSeriesSequence for s in se.ReferencedSOPSequence]
                check("SR: refers to the X-ray and the Secondary Capture",
                      refs == [src.SOPInstanceUID, sc[0].SOPInstanceUID] and
                      set(ev) == {src.SOPInstanceUID, sc[0].SOPInstanceUID}, str(refs))
                texts = [i.TextValue for i in ds.ContentSequence if i.ValueType == "TEXT"]
                check("SR: says research use only", any("not a medical device" in t
                                                        for t in texts), str(texts))
            if lat_study:
                n = len(pacs.json("/studies/%s/instances" % lat_study))
                check("a lateral view is not sent to chexnet", n == 1, "%d instances" % n)
        finally:
            pacs.stop()
    log = open(os.path.join(TMP, "orthanc.log")).read()
    check("Orthanc's log shows the script at work",
          "result objects stored in its study" in log and "not sent: view position LL" in log,
          log[-500:] if failures else "")
    print("%d passed, %d failed" % (len(passes), len(failures)))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
