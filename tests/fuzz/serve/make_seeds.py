#!/usr/bin/env python3
"""Writes the committed seed corpora of fuzz_dicom and fuzz_http
(tests/fuzz/corpus/dicom/, tests/fuzz/corpus/http/): small DICOM files, in
every transfer syntax chexnet reads and some it refuses, made from a real
X-ray shrunk to 24x16 pixels, and raw HTTP requests for every route. Needs
pydicom, PIL and DCMTK's tools; run from the repository root:
    tests/fuzz/serve/make_seeds.py ../shared/data
"""
import io
import os
import subprocess
import sys
import tempfile

import numpy as np
import pydicom
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "py"))
import dicomgen  # noqa: E402

data = sys.argv[1] if len(sys.argv) > 1 else "../shared/data"
out_d = os.path.join("tests", "fuzz", "corpus", "dicom")
out_h = os.path.join("tests", "fuzz", "corpus", "http")
os.makedirs(out_d, exist_ok=True)
os.makedirs(out_h, exist_ok=True)
xray = Image.open(os.path.join(data, "nih", "images", "00000001_000.png")).convert("L")
g = np.array(xray.resize((24, 16), Image.BILINEAR))
tmp = tempfile.mkdtemp()


def tool(*a):
    subprocess.run(list(a), check=True, capture_output=True)


def ds_for(arr, **kw):
    ds = dicomgen.base_dataset(arr.shape[0], arr.shape[1], **kw)
    dicomgen.set_pixels(ds, arr, bits_stored=kw.pop("bits", None))
    return ds


files = {}
ds = ds_for(g)
files["mono2.dcm"] = dicomgen.write(ds, os.path.join(tmp, "mono2.dcm"))
ds = ds_for((g.astype(np.uint16) * 16 + 8), RescaleSlope="2", RescaleIntercept="-1024",
            WindowCenter="3072.5", WindowWidth="8161")
ds.BitsStored, ds.HighBit = 12, 11
files["w12.dcm"] = dicomgen.write(ds, os.path.join(tmp, "w12.dcm"))
ds = ds_for((255 - g).astype(np.uint8), PhotometricInterpretation="MONOCHROME1",
            ViewPosition="LL", NumberOfFrames="1")
files["mono1-lateral.dcm"] = dicomgen.write(ds, os.path.join(tmp, "mono1-lateral.dcm"))
rgb = np.stack([g, 255 - g, g // 2], axis=2).astype(np.uint8)
ds = dicomgen.base_dataset(16, 24, SamplesPerPixel=3, PhotometricInterpretation="RGB",
                           PlanarConfiguration=1)
dicomgen.set_pixels(ds, rgb)
ds.PixelData = np.ascontiguousarray(rgb.transpose(2, 0, 1)).tobytes()
files["rgb-planar.dcm"] = dicomgen.write(ds, os.path.join(tmp, "rgb-planar.dcm"))
from pydicom.dataset import Dataset  # noqa: E402
ds = ds_for(g.astype(np.uint16) * 16, WindowCenter="100", WindowWidth="50")
ds.BitsStored, ds.HighBit = 12, 11
lut = Dataset()
lut.add_new(0x00283002, "US", [256, 0, 12])
lut.add_new(0x00283006, "OW", (np.arange(256) * 16).astype("<u2").tobytes())
ds.VOILUTSequence = [lut]
files["voi-lut.dcm"] = dicomgen.write(ds, os.path.join(tmp, "voi-lut.dcm"))

for name, p in list(files.items()):
    with open(os.path.join(out_d, name), "wb") as f:
        f.write(open(p, "rb").read())
m, w = files["mono2.dcm"], files["w12.dcm"]
for name, args in [("implicit.dcm", ["dcmconv", "+ti", m]), ("big-endian.dcm", ["dcmconv", "+tb", w]),
                   ("deflated.dcm", ["dcmconv", "+td", m]), ("bare.dcm", ["dcmconv", "-F", "+ti", m]),
                   ("jpeg-baseline.dcm", ["dcmcjpeg", "+eb", m]),
                   ("jpeg-sv1.dcm", ["dcmcjpeg", "+e1", w]), ("jpeg-p14.dcm", ["dcmcjpeg", "+el", m]),
                   ("jpeg-extended.dcm", ["dcmcjpeg", "+ee", w]), ("jpegls.dcm", ["dcmcjpls", w]),
                   ("jpegls-near.dcm", ["dcmcjpls", "+en", m]), ("rle.dcm", ["dcmcrle", w]),
                   ("rle-rgb.dcm", ["dcmcrle", files["rgb-planar.dcm"]]),
                   ("j2k.dcm", ["gdcmconv", "--j2k", m])]:
    tool(*args, os.path.join(out_d, name))

# HTTP: raw requests for every route, small bodies from the seeds above
png = io.BytesIO()
Image.fromarray(g).save(png, "PNG")
png = png.getvalue()
jpg = io.BytesIO()
Image.fromarray(g).save(jpg, "JPEG", quality=90)
jpg = jpg.getvalue()
dcm = open(os.path.join(out_d, "jpegls.dcm"), "rb").read()
TOKEN = b"fuzz-token-0123456789abcdef"


def req(method, path, body=b"", headers=(), chunked=False):
    h = [b"%s %s HTTP/1.1" % (method, path), b"Host: 127.0.0.1"] + list(headers)
    if chunked:
        h.append(b"Transfer-Encoding: chunked")
        mid = len(body) // 2
        body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (body[:mid], body[mid:]) if c)
        body += b"0\r\n\r\n"
    elif body or method == b"POST":
        h.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(h) + b"\r\n\r\n" + body


seeds = {
    "get-root": req(b"GET", b"/"), "get-healthz": req(b"GET", b"/healthz"),
    "head-healthz": req(b"HEAD", b"/healthz"), "get-metrics": req(b"GET", b"/metrics"),
    "get-model": req(b"GET", b"/v1/model"), "get-404": req(b"GET", b"/nope?x=1"),
    "get-predict-405": req(b"GET", b"/v1/predict"),
    "predict-png": req(b"POST", b"/v1/predict", png),
    "predict-jpeg": req(b"POST", b"/v1/predict", jpg),
    "predict-dicom-cam": req(b"POST", b"/v1/predict?cam=auto&layers=1", dcm),
    "predict-cam-class": req(b"POST", b"/v1/predict?cam=Effusion", png),
    "predict-chunked": req(b"POST", b"/v1/predict", png, chunked=True),
    "predict-expect": req(b"POST", b"/v1/predict", png, [b"Expect: 100-continue"]),
    "predict-too-large": req(b"POST", b"/v1/predict", b"", [b"Content-Length: 99999999"]),
    "dicom-results": req(b"POST", b"/v1/dicom", dcm),
    "two-requests": req(b"GET", b"/healthz", headers=[b"Connection: keep-alive"]) +
    req(b"POST", b"/v1/predict", png),
}
for name, r in seeds.items():
    # the first byte picks the server: even, no token; odd, a token
    with open(os.path.join(out_h, name), "wb") as f:
        f.write(b"\x00" + r)
    with open(os.path.join(out_h, name + "-token"), "wb") as f:
        f.write(b"\x01" + r.replace(b"Host: 127.0.0.1", b"Host: 127.0.0.1\r\nAuthorization: Bearer "
                                    + TOKEN, 1))
print("%d DICOM and %d HTTP seeds" % (len(os.listdir(out_d)), len(os.listdir(out_h))))
