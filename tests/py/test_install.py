"""`cmake --install` gives a usable installation: the binary, the shared
library (with its SONAME) and the static one, the header, a relocatable
pkg-config file and (when shipped) the model, which the installed binary
finds without --model. A small program is compiled against the installed
library both ways with pkg-config, as the README says, and run:
    cc app.c $(pkg-config --cflags --libs chexnet)                   (shared)
    cc app.c -static $(pkg-config --static --cflags --libs chexnet)  (static)"""
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
