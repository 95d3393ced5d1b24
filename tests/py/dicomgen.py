"""DICOM test files made at test time from real X-rays (not a test itself).

pydicom writes the uncompressed files; DCMTK's command-line tools (dcmconv,
dcmcjpeg, dcmcjpls, dcmcrle, img2dcm) transcode them into every transfer
syntax a PACS exports, and GDCM's gdcmconv makes a JPEG 2000 file (which
chexnet refuses). Each case says what chexnet must make of it:

  pixels   the exact 8-bit pixels expected (numpy HxW or HxWx3), or None
  same_as  an image file whose probabilities must be identical, or None
  error    a substring of the expected error message, or None
  warn     substrings of the expected warnings (each must appear)
  close    (reference pixels, max abs difference) for lossy files

make_cases(folder) -> list of dicts with these keys plus name and path.
"""
import os
import shutil
import subprocess

import numpy as np

import cxtest

SC = "1.2.840.10008.5.1.4.1.1.7"      # Secondary Capture Image Storage
CR = "1.2.840.10008.5.1.4.1.1.1"      # Computed Radiography Image Storage
DX = "1.2.840.10008.5.1.4.1.1.1.1"    # Digital X-Ray Image Storage - For Presentation

TOOLS = ["dcmconv", "dcmcjpeg", "dcmcjpls", "dcmcrle", "img2dcm", "gdcmconv"]


def need_tools():
    try:
        import pydicom  # noqa: F401
    except ImportError as e:
        cxtest.skip("pydicom not available (%s): scripts/deps.sh --test installs "
                    "python3-pydicom" % e)
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        cxtest.skip("DICOM tools missing: %s (scripts/deps.sh --test installs dcmtk and "
                    "libgdcm-tools)" % " ".join(missing))


def grey_png():
    return cxtest.shared("nih", "images", "00000001_000.png")     # 512x512 8-bit grey


def rgba_png():
    return cxtest.shared("nih", "images", "00000100_000.png")     # 1024x1024 RGBA


def colour_jpeg():
    d = cxtest.shared("kermany-224", "train", "NORMAL")
    return os.path.join(d, sorted(f for f in os.listdir(d) if f.endswith(".jpeg"))[0])


def base_dataset(rows, cols, sop_class=CR, **tags):
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.preamble = b"\0" * 128
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "Test^Chest"
    ds.PatientID = "CX0001"
    ds.StudyDate = "20240101"
    ds.StudyTime = "120000"
    ds.AccessionNumber = "A0001"
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Modality = "CR"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.Rows = rows
    ds.Columns = cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelRepresentation = 0
    ds.is_little_endian = True
    ds.is_implicit_VR = False
    for k, v in tags.items():
        setattr(ds, k, v)
    del pydicom
    return ds


def write(ds, path):
    import pydicom
    pydicom.dcmwrite(path, ds, write_like_original=False)
    return path


def set_pixels(ds, arr, bits_stored=None):
    arr = np.ascontiguousarray(arr)
    ds.BitsAllocated = 8 if arr.dtype.itemsize == 1 else 16
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if arr.dtype.kind == "i" else 0
    ds.PixelData = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
    if arr.dtype.itemsize == 1 and len(ds.PixelData) % 2:
        ds.PixelData += b"\0"


def tool(*cmd):
    r = subprocess.run(list(cmd), capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit("%s failed: %s %s" % (" ".join(cmd), r.stdout, r.stderr))


def frame_fragment(path):
    """The first frame's encapsulated bytes (e.g. the JPEG stream)."""
    import pydicom
    from pydicom.encaps import generate_pixel_data_frame
    ds = pydicom.dcmread(path)
    return next(generate_pixel_data_frame(ds.PixelData))


def make_cases(out):
    import pydicom
    from PIL import Image
    os.makedirs(out, exist_ok=True)
    P = lambda name: os.path.join(out, name)  # noqa: E731
    g_path = grey_png()
    g = np.array(Image.open(g_path).convert("L"))
    h, w = g.shape
    cases = []

    def case(name, path, pixels=None, same_as=None, error=None, warn=(), close=None):
        cases.append(dict(name=name, path=path, pixels=pixels, same_as=same_as, error=error,
                          warn=list(warn), close=close))

    # 8-bit MONOCHROME2, explicit VR little endian, and its transcodings
    ds = base_dataset(h, w)
    set_pixels(ds, g)
    e8 = write(ds, P("mono2_8bit_explicit.dcm"))
    case("8-bit MONOCHROME2, explicit VR little endian", e8, g, g_path)
    tool("dcmconv", "+ti", e8, P("mono2_8bit_implicit.dcm"))
    case("implicit VR little endian", P("mono2_8bit_implicit.dcm"), g, g_path)
    tool("dcmconv", "+td", e8, P("mono2_8bit_deflated.dcm"))
    case("deflated explicit VR little endian", P("mono2_8bit_deflated.dcm"), g, g_path)
    tool("dcmconv", "-F", "+ti", e8, P("bare_implicit.dcm"))
    case("bare dataset (no preamble, no meta header), implicit VR", P("bare_implicit.dcm"), g,
         g_path)
    tool("dcmconv", "-F", "+te", e8, P("bare_explicit.dcm"))
    case("bare dataset, explicit VR", P("bare_explicit.dcm"), g, g_path)

    # MONOCHROME1: stored inverted
    ds = base_dataset(h, w, PhotometricInterpretation="MONOCHROME1")
    set_pixels(ds, (255 - g).astype(np.uint8))
    m1 = write(ds, P("mono1_8bit.dcm"))
    case("MONOCHROME1, 8-bit", m1, g, g_path)

    # 12 bits stored in 16, rescale slope/intercept and a window that maps
    # the modality values exactly back onto the PNG's: stored 16p + 8,
    # modality 2 s - 1024 = 32 p - 1008, window (3072.5, 8161): y = p
    s12 = (g.astype(np.uint16) * 16 + 8)
    ds = base_dataset(h, w, RescaleSlope="2", RescaleIntercept="-1024", RescaleType="US",
                      WindowCenter="3072.5", WindowWidth="8161")
    set_pixels(ds, s12, bits_stored=12)
    w12 = write(ds, P("w12_rescale_window.dcm"))
    case("12-bit, rescale slope/intercept and window", w12, g, g_path)
    tool("dcmconv", "+tb", w12, P("w12_big_endian.dcm"))
    case("12-bit, explicit VR big endian", P("w12_big_endian.dcm"), g, g_path)

    # signed 12-bit: stored 16p - 2040, window (0.5, 4081): y = p
    ss = (g.astype(np.int16) * 16 - 2040)
    ds = base_dataset(h, w, WindowCenter="0.5", WindowWidth="4081")
    set_pixels(ds, ss, bits_stored=12)
    sg = write(ds, P("s12_signed_window.dcm"))
    case("signed 12-bit with a window", sg, g, g_path)

    # lossless compression of these: identical pixels
    tool("dcmcjpeg", "+e1", w12, P("w12_jpeg_lossless_sv1.dcm"))
    case("JPEG lossless SV1 (1.2.840.10008.1.2.4.70), 12-bit", P("w12_jpeg_lossless_sv1.dcm"),
         g, g_path)
    tool("dcmcjpeg", "+el", m1, P("mono1_jpeg_lossless.dcm"))
    case("JPEG lossless process 14 (1.2.840.10008.1.2.4.57), MONOCHROME1",
         P("mono1_jpeg_lossless.dcm"), g, g_path)
    tool("dcmcjpls", w12, P("w12_jpegls.dcm"))
    case("JPEG-LS lossless, 12-bit", P("w12_jpegls.dcm"), g, g_path)
    tool("dcmcjpls", sg, P("s12_jpegls.dcm"))
    case("JPEG-LS lossless, signed 12-bit", P("s12_jpegls.dcm"), g, g_path)
    tool("dcmcrle", w12, P("w12_rle.dcm"))
    case("RLE lossless, 12-bit", P("w12_rle.dcm"), g, g_path)
    tool("dcmcrle", m1, P("mono1_rle.dcm"))
    case("RLE lossless, MONOCHROME1 8-bit", P("mono1_rle.dcm"), g, g_path)

    # lossy: JPEG baseline (pixels = the same JPEG stream decoded by PIL),
    # JPEG-LS near-lossless (every pixel within NEAR = 2), JPEG extended 12-bit
    tool("dcmcjpeg", "+eb", e8, P("mono2_jpeg_baseline.dcm"))
    jb = P("mono2_jpeg_baseline.jpg")
    with open(jb, "wb") as f:
        f.write(frame_fragment(P("mono2_jpeg_baseline.dcm")))
    case("JPEG baseline (1.2.840.10008.1.2.4.50), grey", P("mono2_jpeg_baseline.dcm"),
         np.array(Image.open(jb).convert("L")), jb)
    tool("dcmcjpls", "+en", e8, P("mono2_jpegls_near.dcm"))
    case("JPEG-LS near-lossless (NEAR 2)", P("mono2_jpegls_near.dcm"), close=(g, 2))
    tool("dcmcjpeg", "+ee", w12, P("w12_jpeg_extended.dcm"))
    case("JPEG extended (12-bit lossy)", P("w12_jpeg_extended.dcm"), close=(g, 8))

    # colour: a JPEG encapsulated as it is (img2dcm: YBR_FULL_422), RGB
    # uncompressed in both planar configurations, RGB in RLE
    cj = colour_jpeg()
    tool("img2dcm", "-k", "Modality=CR", "-k", "BodyPartExamined=CHEST", "-k",
         "ViewPosition=AP", cj, P("colour_jpeg_img2dcm.dcm"))
    case("colour JPEG baseline from img2dcm (YBR_FULL_422)", P("colour_jpeg_img2dcm.dcm"),
         np.array(Image.open(cj).convert("RGB")), cj)
    rgba = rgba_png()
    rgb = np.array(Image.open(rgba).convert("RGB"))
    ds = base_dataset(rgb.shape[0], rgb.shape[1], SamplesPerPixel=3,
                      PhotometricInterpretation="RGB", PlanarConfiguration=0)
    set_pixels(ds, rgb)
    rgb0 = write(ds, P("rgb_planar0.dcm"))
    case("RGB, planar configuration 0 (from an RGBA PNG)", rgb0, rgb, rgba)
    ds.PlanarConfiguration = 1
    ds.PixelData = np.ascontiguousarray(rgb.transpose(2, 0, 1)).tobytes()
    case("RGB, planar configuration 1", write(ds, P("rgb_planar1.dcm")), rgb, rgba)
    tool("dcmcrle", rgb0, P("rgb_rle.dcm"))
    case("RGB in RLE", P("rgb_rle.dcm"), rgb, rgba)

    # JPEG 2000 is refused, naming the transfer syntax
    tool("gdcmconv", "--j2k", e8, P("mono2_j2k.dcm"))
    case("JPEG 2000 (refused)", P("mono2_j2k.dcm"),
         error="JPEG 2000 (Lossless only) (1.2.840.10008.1.2.4.90) is not supported")

    # views that are not a frontal chest X-ray: warnings, probabilities kept
    for name, tags, warn in [
            ("lateral", dict(ViewPosition="LL"), ["ViewPosition is LL (a lateral view)"]),
            ("hand", dict(BodyPartExamined="HAND", ImageLaterality="L"),
             ["BodyPartExamined is HAND", "ImageLaterality is L"]),
            ("ct", dict(Modality="CT"), ["Modality is CT"])]:
        ds = base_dataset(h, w, **tags)
        set_pixels(ds, g)
        case("warning: " + name, write(ds, P("warn_%s.dcm" % name)), g, g_path, warn=warn)

    # two frames: the first is read, with a warning
    ds = base_dataset(h, w, NumberOfFrames="2")
    set_pixels(ds, np.stack([g, 255 - g]))
    case("multi-frame (first frame read)", write(ds, P("multiframe.dcm")), g, g_path,
         warn=["multi-frame DICOM (2 frames)"])
    del pydicom
    return cases


def make_voi_cases(out):
    """Files for the pixel oracle of the Modality and VOI steps (pydicom's
    apply_modality_lut / apply_voi_lut): name, path, dataset."""
    import pydicom
    from pydicom.dataset import Dataset
    from PIL import Image
    g = np.array(Image.open(grey_png()).convert("L")).astype(np.uint16)
    h, w = g.shape
    rng = np.random.default_rng(0)
    s12 = np.clip(g * 16 + rng.integers(0, 16, g.shape), 0, 4095).astype(np.uint16)
    files = []

    def add(name, ds, arr, bits):
        set_pixels(ds, arr, bits_stored=bits)
        files.append((name, write(ds, os.path.join(out, "voi_%s.dcm" % name))))

    add("linear", base_dataset(h, w, RescaleSlope="0.5", RescaleIntercept="-100",
                               WindowCenter="700.25", WindowWidth="1201.5"), s12, 12)
    add("linear_exact", base_dataset(h, w, WindowCenter="2100", WindowWidth="3000.7",
                                     VOILUTFunction="LINEAR_EXACT"), s12, 12)
    add("sigmoid", base_dataset(h, w, RescaleSlope="1.5", RescaleIntercept="10",
                                WindowCenter="3000", WindowWidth="2500",
                                VOILUTFunction="SIGMOID"), s12, 12)
    add("full_range_rescale", base_dataset(h, w, RescaleSlope="-1.25",
                                           RescaleIntercept="3"), s12, 12)
    add("full_range_mono1", base_dataset(h, w, PhotometricInterpretation="MONOCHROME1"),
        s12, 12)
    ds = base_dataset(h, w)
    lut = Dataset()
    lut.add_new(0x00283002, "US", [4096, 0, 16])  # LUT Descriptor
    x = np.arange(4096) / 4095.0
    lut.add_new(0x00283006, "OW", np.round(65535 * x ** 0.6).astype("<u2").tobytes())
    ds.VOILUTSequence = [lut]
    ds.WindowCenter = "100"   # the LUT takes precedence over the window
    ds.WindowWidth = "50"
    add("voi_lut_sequence", ds, s12, 12)
    ds = base_dataset(h, w, WindowCenter="-200", WindowWidth="3000")
    add("signed_window", ds, (s12.astype(np.int16) - 2048), 12)
    del pydicom
    return files
