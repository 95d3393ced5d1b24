"""`cmake --install` gives a usable installation: the binary, the shared
library (with its SONAME) and the static one, the header, a relocatable
pkg-config file and (when shipped) the model, which the installed binary
finds without --model. A small program is compiled against the installed
library both ways with pkg-config, as the README says, and run:
    cc app.c $(pkg-config --cflags --libs chexnet)                   (shared)
    cc app.c -static $(pkg-config --static --cflags --libs chexnet)  (static)
DICOM: the shared library reads DICOM files; a fully static program does
not (Debian ships DCMTK only as shared libraries) and says so; the static
library with `pkg-config --static --libs chexnet-dicom` reads them."""
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
import cxtest  # noqa: E402

SRC = os.environ.get("CX_SOURCE") or os.path.join(os.path.dirname(__file__), "..", "..")
passes, failures = [], []


def check(name, ok, detail=""):
    print(("PASS " if ok else "FAIL ") + name + (": " + detail if detail else ""), flush=True)
    (passes if ok else failures).append(name)


PROGRAM = r'''
#include <chexnet.h>
#include <stdio.h>
int main(void) {
    cx_config cfg; cx_err err = {0}; cx_model *m = NULL;
    if (cx_config_preset("densenet121", 14, 3, &cfg, &err) || cx_model_new(&cfg, &m, &err)) {
        fprintf(stderr, "%s\n", err.msg); return 1;
    }
    cx_model_init(m, 1);
    printf("%lld %s\n", (long long)cx_model_num_params(m), cx_model_class_name(m, 13));
    cx_model_free(m);
    return 0;
}
'''


DICOM_PROGRAM = r'''
#include <chexnet.h>
#include <stdio.h>
int main(int argc, char **argv) {
    cx_image im; cx_err err = {0};
    if (cx_image_load(argv[1], 0, &im, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    printf("%dx%d %d\n", im.width, im.height, im.data[1]);
    cx_image_free(&im);
    return 0;
}
'''


def tiny_dicom(path):
    """A bare explicit-VR dataset: 3x2 MONOCHROME2 8-bit pixels 10..60."""
    import struct

    def el(g, e, vr, val):
        if vr in (b"OB", b"OW"):
            return struct.pack("<HH2sHI", g, e, vr, 0, len(val)) + val
        return struct.pack("<HH2sH", g, e, vr, len(val)) + val
    us = lambda v: struct.pack("<H", v)  # noqa: E731
    d = (el(0x0008, 0x0060, b"CS", b"CR") + el(0x0028, 0x0002, b"US", us(1)) +
         el(0x0028, 0x0004, b"CS", b"MONOCHROME2 ") + el(0x0028, 0x0010, b"US", us(2)) +
         el(0x0028, 0x0011, b"US", us(3)) + el(0x0028, 0x0100, b"US", us(8)) +
         el(0x0028, 0x0101, b"US", us(8)) + el(0x0028, 0x0102, b"US", us(7)) +
         el(0x0028, 0x0103, b"US", us(0)) + el(0x7fe0, 0x0010, b"OB", bytes([10, 20, 30, 40, 50,
                                                                             60])))
    with open(path, "wb") as f:
        f.write(d)


def dicom_programs(env, libdir):
    dcm = os.path.join(cxtest.TMP, "install-tiny.dcm")
    tiny_dicom(dcm)
    c = os.path.join(cxtest.TMP, "install-dicom.c")
    with open(c, "w") as f:
        f.write(DICOM_PROGRAM)
    for how, pc, cc_args, works in (("shared", ["--libs", "chexnet"], [], True),
                                    ("fully static", ["--static", "--libs", "chexnet"],
                                     ["-static"], False),
                                    ("static chexnet-dicom",
                                     ["--static", "--libs", "chexnet-dicom"], [], True)):
        flags = subprocess.run(["pkg-config", "--cflags"] + pc, capture_output=True, text=True,
                               env=env)
        exe = os.path.join(cxtest.TMP, "install-dicom-" + how.replace(" ", "-"))
        r = subprocess.run(["cc", c, "-o", exe] + cc_args + flags.stdout.split(),
                           capture_output=True, text=True)
        if r.returncode != 0:
            check("a DICOM-reading program links (%s)" % how, False, r.stderr.strip()[-300:])
            continue
        r = subprocess.run([exe, dcm], capture_output=True, text=True,
                           env=dict(os.environ, LD_LIBRARY_PATH=libdir))
        if works:
            check("it reads a DICOM file (%s)" % how, r.returncode == 0 and
                  r.stdout.strip() == "3x2 20", (r.stdout + r.stderr).strip()[-200:])
        else:
            check("without DCMTK it says how to link DICOM in (%s)" % how,
                  r.returncode == 1 and "chexnet-dicom" in r.stderr, r.stderr.strip()[-200:])


def main():
    if shutil.which("pkg-config") is None:
        cxtest.skip("pkg-config not installed")
    prefix = os.path.join(cxtest.TMP, "install-prefix")
    shutil.rmtree(prefix, ignore_errors=True)
    r = subprocess.run(["cmake", "--install", cxtest.BUILD, "--prefix", prefix],
                       capture_output=True, text=True)
    check("cmake --install", r.returncode == 0, r.stderr.strip()[-200:])
    for rel in ("bin/chexnet", "include/chexnet.h", "lib/libchexnet.a", "lib/libchexnet.so",
                "lib/libchexnet.so.0", "lib/pkgconfig/chexnet.pc"):
        check("installed " + rel, os.path.exists(os.path.join(prefix, rel)))
    libdir = os.path.join(prefix, "lib")
    if shutil.which("readelf"):
        r = subprocess.run(["readelf", "-d", os.path.join(libdir, "libchexnet.so")],
                           capture_output=True, text=True)
        check("the shared library's SONAME is libchexnet.so.0",
              "Library soname: [libchexnet.so.0]" in r.stdout, r.stderr.strip()[-200:])
    env = dict(os.environ, PKG_CONFIG_PATH=os.path.join(libdir, "pkgconfig"))
    c = os.path.join(cxtest.TMP, "install-prog.c")
    with open(c, "w") as f:
        f.write(PROGRAM)
    for how, pc_args, cc_args in (("shared", ["--cflags", "--libs"], []),
                                  ("static", ["--static", "--cflags", "--libs"], ["-static"])):
        flags = subprocess.run(["pkg-config"] + pc_args + ["chexnet"], capture_output=True,
                               text=True, env=env)
        check("pkg-config %s chexnet" % " ".join(pc_args), flags.returncode == 0,
              flags.stdout.strip())
        exe = os.path.join(cxtest.TMP, "install-prog-" + how)
        r = subprocess.run(["cc", c, "-o", exe] + cc_args + flags.stdout.split(),
                           capture_output=True, text=True)
        check("a program links the installed %s library" % how, r.returncode == 0,
              r.stderr.strip()[-300:])
        if r.returncode == 0:
            run_env = dict(os.environ, LD_LIBRARY_PATH=libdir) if how == "shared" else None
            r = subprocess.run([exe], capture_output=True, text=True, env=run_env)
            check("and runs (%s)" % how, r.returncode == 0 and
                  r.stdout.strip() == "6968206 Hernia", (r.stdout + r.stderr).strip()[-200:])
        if how == "shared" and shutil.which("ldd"):
            r = subprocess.run(["ldd", exe], capture_output=True, text=True, env=run_env)
            check("the shared build loads libchexnet.so.0 from the prefix",
                  os.path.join(libdir, "libchexnet.so.0") in r.stdout, r.stdout.strip()[-300:])
    dicom_programs(env, libdir)
    shipped = os.path.join(SRC, "models", "chexnet-pneumonia.safetensors")
    if os.path.exists(shipped):
        inst_model = os.path.join(prefix, "share", "chexnet", "models",
                                  "chexnet-pneumonia.safetensors")
        check("model installed", os.path.exists(inst_model))
        sample = sorted(os.listdir(os.path.join(SRC, "samples")))
        img = [os.path.join(SRC, "samples", s) for s in sample if s.endswith(".jpeg")][0]
        env2 = dict(os.environ)
        env2.pop("CHEXNET_MODEL", None)
        # run the installed binary from a copy of the prefix elsewhere: it must
        # find the model relative to itself, not in the source tree
        moved = os.path.join(cxtest.TMP, "install-moved")
        shutil.rmtree(moved, ignore_errors=True)
        shutil.copytree(prefix, moved)
        r = subprocess.run([os.path.join(moved, "bin", "chexnet"), "info", "--json"],
                           capture_output=True, text=True, env=env2)
        check("installed binary uses the installed model by default",
              r.returncode == 0 and os.path.realpath(__import__("json").loads(r.stdout)["file"])
              == os.path.realpath(os.path.join(moved, "share", "chexnet", "models",
                                               "chexnet-pneumonia.safetensors")),
              r.stdout.strip()[:120] + r.stderr.strip())
        r = subprocess.run([os.path.join(moved, "bin", "chexnet"), "predict", "--format", "json",
                            img], capture_output=True, text=True, env=env2)
        check("installed binary predicts with the installed model", r.returncode == 0 and
              "Pneumonia" in r.stdout, (r.stdout + r.stderr).strip()[-200:])
    print("%d passed, %d failed" % (len(passes), len(failures)))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
