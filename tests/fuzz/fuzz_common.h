/* fuzz_common.h - shared by the libFuzzer harnesses of tests/fuzz/.
 *
 * Each harness is one LLVMFuzzerTestOneInput over one parser of untrusted
 * input. Parsers that take a path get the input as a file in a per-process
 * folder on a memory file system (/dev/shm when present). The limits are
 * lowered (cx_limits) so that one input stays fast: what a limit refuses is
 * tested elsewhere. A harness must never crash, leak or trip a sanitizer,
 * whatever the bytes.
 */
#ifndef CX_FUZZ_COMMON_H
#define CX_FUZZ_COMMON_H

#include "chexnet.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char fuzz_dir_[256];
static char fuzz_names_[16][64];
static int fuzz_nnames_;

/* Writes data to DIR/name and returns the path (valid until the next call
 * with the same name). */
static inline const char *fuzz_file(const uint8_t *data, size_t size, const char *name)
{
    static char path[8][512];
    static int k;
    if (!fuzz_dir_[0]) {
        const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(fuzz_dir_, sizeof fuzz_dir_, "%s/cxfuzz-%ld", base, (long)getpid());
        mkdir(fuzz_dir_, 0700);
    }
    int known = 0;
    for (int i = 0; i < fuzz_nnames_; i++)
        known |= !strcmp(fuzz_names_[i], name);
    if (!known && fuzz_nnames_ < 16)
        snprintf(fuzz_names_[fuzz_nnames_++], sizeof fuzz_names_[0], "%s", name);
    char *p = path[k++ % 8];
    snprintf(p, sizeof path[0], "%s/%s", fuzz_dir_, name);
    FILE *f = fopen(p, "wb");
    if (!f)
        abort();
    if (size && fwrite(data, 1, size, f) != size)
        abort();
    if (fclose(f))
        abort();
    return p;
}

static void fuzz_cleanup_(void)
{
    if (!fuzz_dir_[0])
        return;
    char p[600];
    for (int i = 0; i < fuzz_nnames_; i++) {
        snprintf(p, sizeof p, "%s/%s", fuzz_dir_, fuzz_names_[i]);
        unlink(p);
    }
    rmdir(fuzz_dir_);
}

/* Small limits: an input the fuzzer makes stays fast. */
static void fuzz_setup(void)
{
    cx_limits l;
    cx_limits_default(&l);
    l.max_pixels = (uint64_t)1 << 20;
    l.max_rows = 100000;
    l.max_bytes = (uint64_t)1 << 24;
    cx_limits_set(&l, NULL);
    cx_set_threads(1);
    atexit(fuzz_cleanup_);
}

static inline uint32_t fuzz_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void fuzz_put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

#endif
