"""`chexnet serve`, started on loopback on a free port and always stopped:

  - POST /v1/predict on PNG, RGBA PNG, JPEG and DICOM files gives exactly the
    probabilities of `chexnet predict` (JSON shape pinned: probabilities,
    model, warnings, positive); ?cam=CLASS gives the overlay `predict --cam`
    writes, pixel for pixel; a lateral DICOM comes with its warning;
  - a model with "thresholds" and "temperature": /v1/model gives its
    thresholds, /v1/predict predict's (scaled) probabilities and positive
    flags, the DICOM SR each class's threshold;
  - bad input gets the pinned status codes with {"error": ...} (415 not an
    image, 413 too large: declared, chunked or huge dimensions, 400 corrupt,
    404, 405, 401) and the server keeps serving;
  - GET /healthz, GET /metrics (parsed with prometheus_client: requests by
    status, latency and batch-size histograms, queue length);
  - dynamic batching: concurrent requests share forward passes and still
    get the exact single-image probabilities;
  - the bearer token (--token-file), required off loopback;
  - SIGTERM: the request in flight is answered, then the process exits 0.
"""
import base64
import io
import json
import os
import re
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import cxtest  # noqa: E402
import servetest  # noqa: E402
from servetest import Server  # noqa: E402

import numpy as np  # noqa: E402

TMP = os.path.join(cxtest.TMP, "serve")
passes, failures = [], []


def check(name, ok, detail=""):
    print(("PASS " if ok else "FAIL ") + name + (": " + detail if detail else ""), flush=True)
    (passes if ok else failures).append(name)


def model_path():
    src = os.environ.get("CX_SOURCE") or os.path.join(os.path.dirname(__file__), "..", "..")
    p = os.path.join(src, "models", "chexnet-pneumonia.safetensors")
    if not os.path.exists(p):
        cxtest.skip("the shipped model is absent: %s" % p)
    return p


def predict_cli(model, paths):
    r = subprocess.run([cxtest.CHEXNET, "predict", "--model", model, "--format", "json"]
                       + list(paths), capture_output=True, text=True)
    return {json.loads(line)["image"]: json.loads(line) for line in r.stdout.splitlines()}


def inputs():
    """Real X-rays in every format: {name: path}."""
    nih = cxtest.nih_images()
    files = {"png-512": [p for p in nih if p.endswith("00000001_000.png")][0],
             "png-1024": [p for p in nih if p.endswith("00000820_000.png")][0],
             "png-rgba": [p for p in nih if p.endswith("00000100_000.png")][0]}
    kd = os.path.join(cxtest.DATA, "kermany-224", "train", "PNEUMONIA")
    if os.path.isdir(kd):
        files["jpeg"] = os.path.join(kd, sorted(os.listdir(kd))[0])
    try:
        import dicomgen
        dicomgen.need_tools()
    except SystemExit:
        print("SKIP DICOM inputs: pydicom or DCMTK missing")
        return files, {}
    cases = dicomgen.make_cases(os.path.join(TMP, "dicom"))
    by = {os.path.basename(c["path"]): c["path"] for c in cases}
    files["dicom-8bit"] = by["mono2_8bit_explicit.dcm"]
    files["dicom-12bit-jpegls"] = by["w12_jpegls.dcm"]
    files["dicom-mono1-rle"] = by["mono1_rle.dcm"]
    extra = {"lateral": by["warn_lateral.dcm"], "j2k": by["mono2_j2k.dcm"]}
    return files, extra


def png_pixels(data):
    from PIL import Image
    return np.array(Image.open(io.BytesIO(data)))


def huge_png():
    """A valid PNG signature and IHDR claiming 100000 x 100000 pixels."""
    import struct
    import zlib
    ihdr = struct.pack(">IIBBBBB", 100000, 100000, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + \
        struct.pack(">I", zlib.crc32(chunk) & 0xffffffff)


def basic(model, files, extra):
    want = predict_cli(model, files.values())
    with Server("--model", model, "--max-body", "8M") as s:
        st, hd, body = s.request("GET", "/healthz")
        check("GET /healthz", st == 200 and body == b"ok\n", "%d %r" % (st, body))
        st, hd, body = s.request("GET", "/")
        check("GET / serves the viewer", st == 200 and hd.get("Content-Type", "").startswith(
            "text/html") and b"not a medical device" in body, "%d" % st)
        st, hd, body = s.request("GET", "/v1/model")
        info = json.loads(body) if st == 200 else {}
        check("GET /v1/model", st == 200 and info.get("classes") == ["Pneumonia"] and
              len(info.get("colormap", [])) == 256, "%d" % st)
        n_ok = 0
        for name, path in files.items():
            st, res = s.predict(open(path, "rb").read())
            n_ok += st == 200
            w = want.get(path)
            check("POST /v1/predict %s: the probabilities of chexnet predict" % name,
                  st == 200 and w is not None and res.get("probabilities") == w["probabilities"]
                  and res.get("model") == os.path.basename(model) and res.get("warnings") == []
                  and list(res) == ["probabilities", "model", "warnings", "positive"]
                  and res.get("positive") == {c: p >= 0.5 for c, p in w["probabilities"].items()},
                  "%d %s vs %s" % (st, res, w and w["probabilities"]))
        # the overlay of ?cam= is the file predict --cam writes
        camdir = os.path.join(TMP, "cam")
        for name in ("png-1024", "dicom-12bit-jpegls", "png-rgba"):
            if name not in files:
                continue
            path = files[name]
            subprocess.run([cxtest.CHEXNET, "predict", "--model", model, "--cam", camdir,
                            "--cam-class", "Pneumonia", path], capture_output=True)
            stem = os.path.splitext(os.path.basename(path))[0]
            ref = png_pixels(open(os.path.join(camdir, stem + ".Pneumonia.png"), "rb").read())
            st, res = s.predict(open(path, "rb").read(), "?cam=Pneumonia")
            n_ok += st == 200
            got = png_pixels(base64.b64decode(res.get("cam_png_base64", ""))) \
                if st == 200 else None
            check("?cam=Pneumonia is predict --cam's overlay, pixel for pixel (%s)" % name,
                  got is not None and got.shape == ref.shape and np.array_equal(got, ref),
                  "%d %s" % (st, None if got is None else got.shape))
        st, res = s.predict(open(files["png-1024"], "rb").read(), "?cam=auto&layers=1")
        n_ok += st == 200
        ok = st == 200 and res.get("cam_class") == "Pneumonia"
        if ok:
            x = png_pixels(base64.b64decode(res["xray_png_base64"]))
            hm = png_pixels(base64.b64decode(res["heatmap_png_base64"]))
            ok = x.shape[:2] == hm.shape[:2] and hm.shape[2] == 4 and \
                int(hm[:, :, 3].min()) >= 63
        check("?cam=auto&layers=1: the X-ray and an RGBA heat map", ok, "%d" % st)
        # colour scales: this model has no cam_range, so the image's own
        check("/v1/model: the image scale only", info.get("cam_scale") == "image" and
              info.get("cam_scales") == ["image"], str(info.get("cam_scales")))
        check("?cam=: cam_scale image and the map's range", st == 200 and
              res.get("cam_scale") == "image" and len(res.get("cam_range", [])) == 2 and
              res["cam_range"][0] < res["cam_range"][1], str(res.get("cam_range")))
        if "lateral" in extra:
            st, res = s.predict(open(extra["lateral"], "rb").read())
            n_ok += st == 200
            check("a lateral DICOM: probabilities with a warning", st == 200 and
                  any("lateral" in w for w in res.get("warnings", [])), str(res))

        # the DICOM result objects (the Orthanc round trip is test_orthanc)
        if "dicom-8bit" in files:
            import pydicom
            d = open(files["dicom-8bit"], "rb").read()
            st, hd, body = s.request("POST", "/v1/dicom", d)
            ct = hd.get("Content-Type", "")
            m = re.search(r"boundary=(\S+)", ct)
            parts = []
            if st == 200 and m:
                for chunk in body.split(b"--" + m.group(1).encode())[1:-1]:
                    parts.append(pydicom.dcmread(io.BytesIO(chunk.split(b"\r\n\r\n", 1)[1][:-2])))
            kinds = [p.SOPClassUID.name for p in parts]
            check("POST /v1/dicom: multipart/related with a Secondary Capture and an SR",
                  ct.startswith('multipart/related; type="application/dicom"') and
                  kinds == ["Secondary Capture Image Storage", "Comprehensive SR Storage"],
                  "%d %s %s" % (st, ct, kinds))
            if len(parts) == 2:
                nums = {i.ConceptNameCodeSequence[0].CodeMeaning:
                        float(i.MeasuredValueSequence[0].NumericValue)
                        for i in parts[1].ContentSequence if i.ValueType == "NUM"}
                check("POST /v1/dicom: the SR holds predict's probabilities",
                      nums == want[files["dicom-8bit"]]["probabilities"], str(nums))
            st, res = s.request("POST", "/v1/dicom", open(files["png-512"], "rb").read())[::2]
            check("POST /v1/dicom with a PNG -> 415", st == 415, "%d" % st)

        # bad input: the pinned codes, and the server keeps serving
        png = open(files["png-512"], "rb").read()
        bad = [("garbage", b"this is not an image at all", 415),
               ("empty body", b"", 415),
               ("truncated PNG", png[:len(png) // 3], 400),
               ("PNG with huge dimensions", huge_png(), 413)]
        if "dicom-8bit" in files:
            d = open(files["dicom-8bit"], "rb").read()
            bad.append(("truncated DICOM", d[:len(d) // 2], 400))
            bad.append(("DICOM garbage after the preamble", d[:132] + os.urandom(5000), 400))
        if "j2k" in extra:
            bad.append(("JPEG 2000 DICOM", open(extra["j2k"], "rb").read(), 415))
        codes = {}
        for what, body, code in bad:
            st, res = s.predict(body)
            codes[st] = codes.get(st, 0) + 1
            check("%s -> %d with an error message" % (what, code),
                  st == code and isinstance(res.get("error"), str) and res["error"], "%d %s" %
                  (st, res))
        big = os.urandom(9 << 20)
        st = servetest.expect_continue(s.host, s.port, "/v1/predict", len(big))
        check("a body over --max-body (declared length) -> 413 before it is sent", st == 413,
              "%s" % st)
        codes[st] = codes.get(st, 0) + 1
        st, hd, body = s.request("POST", "/v1/predict", big, chunked=True)
        check("a chunked body over --max-body -> 413", st == 413, "%d" % st)
        codes[st] = codes.get(st, 0) + 1
        st, res = s.predict(png, "?cam=Nodule")
        check("an unknown cam class -> 400", st == 400 and "Pneumonia" in res.get("error", ""),
              str(res))
        codes[st] = codes.get(st, 0) + 1
        for q in ("?cam=Pneumonia&cam_scale=model", "?cam=Pneumonia&cam_scale=fixed"):
            st, res = s.predict(png, q)
            check("%s on a model without cam_range: 400 saying why" % q, st == 400 and
                  "cam_scale" in res.get("error", ""), "%d %s" % (st, res))
            codes[st] = codes.get(st, 0) + 1
        st, hd, body = s.request("GET", "/v1/predict")
        check("GET /v1/predict -> 405 with Allow: POST", st == 405 and hd.get("Allow") == "POST",
              "%d %s" % (st, hd.get("Allow")))
        codes[st] = codes.get(st, 0) + 1
        st, hd, body = s.request("GET", "/nope")
        check("unknown path -> 404", st == 404 and json.loads(body).get("error"), "%d" % st)
        st, res = s.predict(png)
        n_ok += st == 200
        check("still serving after the bad requests", st == 200 and
              res["probabilities"] == want[files["png-512"]]["probabilities"], "%d" % st)

        # metrics, parsed by prometheus_client
        try:
            from prometheus_client.parser import text_string_to_metric_families
        except ImportError:
            check("prometheus_client available (python3-prometheus-client)", False)
            return
        want_codes = dict(codes)
        want_codes[200] = n_ok
        # a request is counted when the server has finished with its
        # connection, which may be just after the client has read the answer:
        # scrape again (up to 5 s) until the last one is in
        for attempt in range(50):
            st, hd, body = s.request("GET", "/metrics")
            fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
            req = {}
            for smp in fams["chexnet_requests"].samples:
                if smp.name == "chexnet_requests_total" and smp.labels["handler"] == "/v1/predict":
                    req[int(smp.labels["code"])] = int(smp.value)
            if req == want_codes or st != 200:
                break
            time.sleep(0.1)
        check("GET /metrics", st == 200 and hd.get("Content-Type", "").startswith("text/plain"),
              "%d" % st)
        check("requests counted by status code", req == want_codes, "%s vs %s" %
              (req, want_codes))
        lat = [x for x in fams["chexnet_request_duration_seconds"].samples
               if x.labels.get("handler") == "/v1/predict" and x.name.endswith("_bucket")]
        vals = [x.value for x in lat]
        check("latency histogram: cumulative buckets up to +Inf",
              vals == sorted(vals) and lat[-1].labels["le"] == "+Inf" and
              vals[-1] == sum(req.values()), str(vals))
        bs = {x.name: x.value for x in fams["chexnet_batch_size"].samples
              if not x.name.endswith("_bucket")}
        n_images = n_ok + ("dicom-8bit" in files)  # /v1/dicom ran the network once
        check("batch-size histogram counts the images", bs.get("chexnet_batch_size_sum") ==
              n_images, str(bs))
        check("queue length and memory gauges", "chexnet_queue_length" in fams and
              fams["process_resident_memory_bytes"].samples[0].value > 1e7)


def batching(model, files):
    paths = list(files.values())
    want = predict_cli(model, paths)
    with Server("--model", model, "--max-batch", "8", "--max-wait-ms", "1000") as s:
        res = [None] * len(paths)

        def go(i):
            res[i] = s.predict(open(paths[i], "rb").read())
        th = [threading.Thread(target=go, args=(i,)) for i in range(len(paths))]
        for t in th:
            t.start()
        for t in th:
            t.join()
        same = all(r is not None and r[0] == 200 and
                   r[1]["probabilities"] == want[p]["probabilities"] for r, p in zip(res, paths))
        check("%d concurrent requests: each gets its exact probabilities" % len(paths), same,
              str([(r[0], r[1].get("probabilities")) for r in res if r]))
        st, hd, body = s.request("GET", "/metrics")
        from prometheus_client.parser import text_string_to_metric_families
        fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
        bs = {x.name: x.value for x in fams["chexnet_batch_size"].samples
              if not x.name.endswith("_bucket")}
        check("they were gathered into shared forward passes",
              bs["chexnet_batch_size_sum"] == len(paths) and
              bs["chexnet_batch_size_count"] < len(paths), str(bs))


def token(model, png):
    tf = os.path.join(TMP, "token")
    secret = "s3cret-token-for-the-test-0123456789"
    with open(tf, "w") as f:
        f.write(secret + "\n")
    os.chmod(tf, 0o600)
    with Server("--model", model, "--token-file", tf) as s:
        st, res = s.predict(png)
        check("with --token-file: no token -> 401", st == 401 and "error" in res, "%d" % st)
        st, res = s.predict(png, headers={"Authorization": "Bearer wrong"})
        check("wrong token -> 401", st == 401, "%d" % st)
        st, res = s.predict(png, headers={"Authorization": "Bearer " + secret})
        check("right token -> 200", st == 200 and "probabilities" in res, "%d" % st)
        st, _, _ = s.request("GET", "/metrics")
        check("/metrics needs the token", st == 401, "%d" % st)
        st, _, _ = s.request("GET", "/healthz")
        check("/healthz stays open", st == 200, "%d" % st)
    s = Server("--model", model, "--host", "0.0.0.0", expect_fail=True)
    try:
        rc = s.proc.wait(60)
    except subprocess.TimeoutExpired:
        rc = None
    err = s.proc.stderr.read().decode()
    s.stop()
    check("binding off loopback without a token is refused", rc == 2 and "token" in err,
          "%s %s" % (rc, err.strip()))
    with Server("--model", model, "--host", "0.0.0.0", "--token-file", tf) as s:
        st, res = servetest.request("127.0.0.1", s.port, "POST", "/v1/predict", png,
                                    {"Authorization": "Bearer " + secret})[0], None
        check("off loopback with a token: serving", st == 200, "%d" % st)


def sigterm(model, png, want):
    s = Server("--model", model, "--max-batch", "4", "--max-wait-ms", "3000")
    out = {}

    def go():
        out["r"] = s.predict(png)
    t = threading.Thread(target=go)
    t.start()
    time.sleep(1.0)  # the request waits in the queue for others
    rc, _, err = s.stop()
    t.join()
    st, res = out.get("r", (None, {}))
    check("SIGTERM: the request in flight is answered", st == 200 and
          res.get("probabilities") == want, "%s %s" % (st, res))
    check("SIGTERM: exit status 0 after draining", rc == 0 and "1 request in flight" in err,
          "%s %s" % (rc, err.strip()))


def cam_scales(model, files):
    """a model with a cam_range: model scale by default, both on request,
    each the overlay of chexnet predict --cam-scale"""
    ranged = os.path.join(TMP, "ranged.safetensors")
    subprocess.run([cxtest.CHEXNET, "export", model, "-o", ranged, "--meta",
                    "cam_range=[[-4.5, 9.25]]"], check=True, capture_output=True)
    path = files["png-1024"]
    stem = os.path.splitext(os.path.basename(path))[0]
    with Server("--model", ranged) as s:
        st, hd, body = s.request("GET", "/v1/model")
        info = json.loads(body) if st == 200 else {}
        check("/v1/model with a cam_range: both scales, model by default",
              info.get("cam_scale") == "model" and info.get("cam_scales") == ["image", "model"],
              str(info.get("cam_scales")))
        for q, scale in (("", "model"), ("&cam_scale=model", "model"),
                         ("&cam_scale=image", "image")):
            camdir = os.path.join(TMP, "cam_" + scale)
            subprocess.run([cxtest.CHEXNET, "predict", "--model", ranged, "--cam", camdir,
                            "--cam-scale", scale, path], capture_output=True)
            ref = png_pixels(open(os.path.join(camdir, stem + ".Pneumonia.png"), "rb").read())
            st, res = s.predict(open(path, "rb").read(), "?cam=Pneumonia" + q)
            got = png_pixels(base64.b64decode(res.get("cam_png_base64", ""))) \
                if st == 200 else None
            check("?cam=Pneumonia%s: cam_scale %s, predict --cam-scale %s's overlay"
                  % (q, scale, scale),
                  got is not None and res.get("cam_scale") == scale and
                  got.shape == ref.shape and np.array_equal(got, ref) and
                  (scale == "image" or res.get("cam_range") == [-4.5, 9.25]),
                  "%d %s" % (st, res.get("cam_range")))


def calibrated(model, files):
    """A model carrying thresholds and a temperature (set with chexnet export,
    which checks them as a load does)."""
    cal = os.path.join(TMP, "calibrated.safetensors")
    r = subprocess.run([cxtest.CHEXNET, "export", model, "-o", cal, "--meta",
                        "thresholds=[0.3125]", "--meta", "temperature=[1.75]"],
                       capture_output=True, text=True)
    check("export a model with thresholds and temperature", r.returncode == 0, r.stderr)
    paths = [files[k] for k in ("png-512", "png-1024", "dicom-8bit") if k in files]
    want = predict_cli(cal, paths)
    with Server("--model", cal, "--max-body", "8M") as s:
        st, hd, body = s.request("GET", "/v1/model")
        info = json.loads(body) if st == 200 else {}
        check("calibrated: /v1/model gives the model's thresholds",
              info.get("thresholds") == {"Pneumonia": 0.3125}, str(info.get("thresholds")))
        for p in paths:
            st, res = s.predict(open(p, "rb").read())
            w = want.get(p, {})
            check("calibrated: /v1/predict %s: predict's probabilities and flags"
                  % os.path.basename(p),
                  st == 200 and res.get("probabilities") == w.get("probabilities") and
                  res.get("positive") == w.get("positive") and
                  res.get("positive") == {"Pneumonia": w["probabilities"]["Pneumonia"] >= 0.3125},
                  "%s vs %s" % (res, w))
        if "dicom-8bit" in files:
            import pydicom
            st, hd, body = s.request("POST", "/v1/dicom", open(files["dicom-8bit"], "rb").read())
            m = re.search(r"boundary=(\S+)", hd.get("Content-Type", ""))
            sr = None
            if st == 200 and m:
                chunk = body.split(b"--" + m.group(1).encode())[2]
                sr = pydicom.dcmread(io.BytesIO(chunk.split(b"\r\n\r\n", 1)[1][:-2]))
            got = {}
            for i in (sr.ContentSequence if sr else []):
                if i.ValueType == "NUM":
                    t = [float(c.MeasuredValueSequence[0].NumericValue)
                         for c in getattr(i, "ContentSequence", []) if c.ValueType == "NUM"]
                    got[i.ConceptNameCodeSequence[0].CodeMeaning] = (
                        float(i.MeasuredValueSequence[0].NumericValue), t)
            w = want[files["dicom-8bit"]]["probabilities"]["Pneumonia"]
            check("calibrated: the SR's probability is predict's and its threshold the model's",
                  got == {"Pneumonia": (w, [0.3125])}, str(got))


def main():
    os.makedirs(TMP, exist_ok=True)
    # the shipped weights without their calibration: cam_scales and
    # calibrated add what each of them needs
    model = cxtest.strip_metadata(model_path(), os.path.join(TMP, "uncalibrated.safetensors"))
    files, extra = inputs()
    basic(model, files, extra)
    cam_scales(model, files)
    calibrated(model, files)
    batching(model, files)
    png = open(files["png-512"], "rb").read()
    token(model, png)
    sigterm(model, png, predict_cli(model, [files["png-512"]])[files["png-512"]]["probabilities"])
    print("%d passed, %d failed" % (len(passes), len(failures)))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
