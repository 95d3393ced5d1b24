/* Packed datasets: decode + resize once, read back by mmap (see chexnet.h,
 * data section, for the file layout). */
#define _GNU_SOURCE
#include "data/data_internal.h"
#include "io/image_internal.h"
#include "io/fileutil.h"

#include <errno.h>
#include <fcntl.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

static const char MAGIC[8] = {'C', 'X', 'P', 'A', 'C', 'K', '\r', '\n'};
static const char END_MAGIC[8] = {'C', 'X', 'P', 'K', 'E', 'N', 'D', '\n'};
#define HDR 64
#define TRL 64
#define REC 24
#define MAX_CLASSES 4096

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}
static uint64_t align(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

void cx_pack_opts_default(cx_pack_opts *o)
{
    o->size = 224;
    o->channels = 0;
    o->threads = 0;
}

int cx_pack_sniff(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    char m[8];
    int r = fread(m, 1, 8, f) == 8 && !memcmp(m, MAGIC, 8);
    fclose(f);
    return r;
}

/* One image as it goes into the pack. */
static cx_status pack_one(const cx_dataset *ds, int i, int size, int mode, cx_image *out,
                          int *ow, int *oh, cx_err *err)
{
    cx_image im = {0}, tmp = {0};
    cx_status st;
    if (!ds->map && ds->paths && ds->paths[i]) {
        /* an image file: decoded row by row into the resize (the full-size
         * image is never held); grey content in RGB is found on the way and
         * kept as one channel, which the resize of R = G = B rows gives
         * exactly */
        cx_resize_info info;
        if ((st = cx_image_load_resized_ex(ds->paths[i], mode, size, size, 0, &im, &info, err)))
            return st;
        *ow = info.src_width;
        *oh = info.src_height;
        if (mode == 0 && im.channels == 3 && info.grey) {
            size_t np = (size_t)im.width * im.height;
            for (size_t j = 0; j < np; j++)
                im.data[j] = im.data[3 * j];
            im.channels = 1;
        }
        *out = im;
        return CX_OK;
    }
    st = cx_dataset_image(ds, i, mode, &im, err);
    if (st)
        return st;
    *ow = im.width;
    *oh = im.height;
    if (mode == 0 && im.channels == 3) { /* grey content in RGB: keep one channel */
        size_t n = (size_t)im.width * im.height;
        const uint8_t *p = im.data;
        size_t j = 0;
        for (; j < n; j++)
            if (p[3 * j] != p[3 * j + 1] || p[3 * j] != p[3 * j + 2])
                break;
        if (j == n) {
            for (j = 0; j < n; j++)
                im.data[j] = p[3 * j];
            im.channels = 1;
        }
    }
    if (im.width != size || im.height != size) {
        st = cx_image_resize(&im, size, size, &tmp, err);
        cx_image_free(&im);
        if (st)
            return st;
        im = tmp;
    }
    *out = im;
    return CX_OK;
}

typedef struct {
    uint8_t *buf;
    size_t used, cap;
} growbuf;

static int gb_add(growbuf *g, const void *p, size_t n)
{
    if (g->used + n > g->cap) {
        size_t c = g->cap ? g->cap : 4096;
        while (c < g->used + n)
            c *= 2;
        uint8_t *nb = realloc(g->buf, c);
        if (!nb)
            return -1;
        g->buf = nb;
        g->cap = c;
    }
    memcpy(g->buf + g->used, p, n);
    g->used += n;
    return 0;
}

cx_status cx_pack_write(const cx_dataset *ds, const int *idx, int n, const cx_pack_opts *o,
                        const char *path, cx_data_progress_fn progress, void *user, cx_err *err)
{
    cx_pack_opts def;
    if (!o) {
        cx_pack_opts_default(&def);
        o = &def;
    }
    if (!idx)
        n = ds->n;
    if (n <= 0)
        return cx_seterr(err, CX_EARG, "pack: no images");
    if (o->size < 1 || o->size > CX_IMAGE_MAX_SIDE)
        return cx_seterr(err, CX_EARG, "pack: size %d out of range", o->size);
    if (o->channels != 0 && o->channels != 1 && o->channels != 3)
        return cx_seterr(err, CX_EARG, "pack: channels must be 0 (per image), 1 or 3");
    if (ds->K > MAX_CLASSES)
        return cx_seterr(err, CX_ELIMIT, "pack: too many classes");
    cx_status st = cx_dataset_check_images(ds, idx, n, err);
    if (st)
        return st;
    int threads = o->threads > 0 ? o->threads : cx_get_threads();
    if (threads < 1)
        threads = 1;
    int K = ds->K, S = o->size;

    /* header + class names */
    growbuf head = {0}, recs = {0}, strs = {0};
    uint8_t *labels = malloc((size_t)n * (K ? K : 1));
    uint8_t h[HDR] = {0};
    memcpy(h, MAGIC, 8);
    put32(h + 8, CX_PACK_VERSION);
    put32(h + 12, HDR);
    put64(h + 16, (uint64_t)n);
    put32(h + 24, (uint32_t)S);
    put32(h + 28, (uint32_t)o->channels);
    put32(h + 32, (uint32_t)K);
    size_t cls_bytes = 0;
    for (int k = 0; k < K; k++)
        cls_bytes += strlen(ds->classes[k]) + 1;
    put32(h + 36, (uint32_t)cls_bytes);
    uint64_t data_off = align(HDR + cls_bytes, 64);
    put64(h + 40, data_off);
    if (!labels || gb_add(&head, h, HDR)) {
        st = cx_seterr(err, CX_ENOMEM, "out of memory");
        goto out_free;
    }
    for (int k = 0; k < K; k++)
        if (gb_add(&head, ds->classes[k], strlen(ds->classes[k]) + 1)) {
            st = cx_seterr(err, CX_ENOMEM, "out of memory");
            goto out_free;
        }
    while (head.used < data_off) {
        uint8_t z = 0;
        if (gb_add(&head, &z, 1)) {
            st = cx_seterr(err, CX_ENOMEM, "out of memory");
            goto out_free;
        }
    }
    uint32_t crc_head = (uint32_t)crc32(0, head.buf, (uInt)head.used);

    cx_atomic_file *af = NULL;
    if ((st = cx_atomic_open(path, &af, err)))
        goto out_free;
    if ((st = cx_atomic_write(af, head.buf, head.used, err)))
        goto abort;

    int chunk = 16 * threads;
    cx_image *ims = calloc((size_t)chunk, sizeof *ims);
    cx_err *errs = calloc((size_t)chunk, sizeof *errs);
    int *ow = calloc((size_t)chunk, sizeof *ow), *oh = calloc((size_t)chunk, sizeof *oh);
    cx_status *sts = calloc((size_t)chunk, sizeof *sts);
    if (!ims || !errs || !ow || !oh || !sts) {
        st = cx_seterr(err, CX_ENOMEM, "out of memory");
        goto abort_chunk;
    }
    uint64_t off = 0;
    if (progress)
        progress(user, 0, n);
    for (int c0 = 0; c0 < n; c0 += chunk) {
        int m = n - c0 < chunk ? n - c0 : chunk;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
        for (int j = 0; j < m; j++) {
            int i = idx ? idx[c0 + j] : c0 + j;
            sts[j] = pack_one(ds, i, S, o->channels, &ims[j], &ow[j], &oh[j], &errs[j]);
        }
        for (int j = 0; j < m && !st; j++) {
            if (sts[j]) {
                st = sts[j];
                if (err)
                    *err = errs[j];
                break;
            }
            int i = idx ? idx[c0 + j] : c0 + j;
            size_t bytes = (size_t)S * S * ims[j].channels;
            if ((st = cx_atomic_write(af, ims[j].data, bytes, err)))
                break;
            uint8_t r[REC] = {0};
            put64(r, off);
            put32(r + 8, (uint32_t)strs.used);
            if (gb_add(&strs, ds->names[i], strlen(ds->names[i]) + 1)) {
                st = cx_seterr(err, CX_ENOMEM, "out of memory");
                break;
            }
            const char *pid = ds->patients[ds->patient[i]];
            put32(r + 12, (uint32_t)strs.used);
            if (gb_add(&strs, pid, strlen(pid) + 1)) {
                st = cx_seterr(err, CX_ENOMEM, "out of memory");
                break;
            }
            r[16] = (uint8_t)ow[j];
            r[17] = (uint8_t)(ow[j] >> 8);
            r[18] = (uint8_t)oh[j];
            r[19] = (uint8_t)(oh[j] >> 8);
            r[20] = (uint8_t)ims[j].channels;
            if (gb_add(&recs, r, REC)) {
                st = cx_seterr(err, CX_ENOMEM, "out of memory");
                break;
            }
            memcpy(labels + (size_t)(c0 + j) * K, ds->y + (size_t)i * K, (size_t)K);
            off += bytes;
        }
        for (int j = 0; j < m; j++)
            cx_image_free(&ims[j]);
        if (st)
            goto abort_chunk;
        if (strs.used > 0xFFFFFFF0u) {
            st = cx_seterr(err, CX_ELIMIT, "pack: names too long in all");
            goto abort_chunk;
        }
        if (progress)
            progress(user, c0 + m, n);
    }
    {
        uint64_t data_bytes = off;
        uint64_t idx_off = align(data_off + data_bytes, 8);
        uint8_t zero[8] = {0};
        if ((st = cx_atomic_write(af, zero, (size_t)(idx_off - data_off - data_bytes), err)))
            goto abort_chunk;
        if (K > 0 && gb_add(&recs, labels, (size_t)n * K)) {
            st = cx_seterr(err, CX_ENOMEM, "out of memory");
            goto abort_chunk;
        }
        if (gb_add(&recs, strs.buf, strs.used)) {
            st = cx_seterr(err, CX_ENOMEM, "out of memory");
            goto abort_chunk;
        }
        uint32_t crc_idx = (uint32_t)crc32(0, recs.buf, (uInt)recs.used);
        if ((st = cx_atomic_write(af, recs.buf, recs.used, err)))
            goto abort_chunk;
        uint8_t t[TRL] = {0};
        memcpy(t, END_MAGIC, 8);
        put64(t + 8, data_off);
        put64(t + 16, data_bytes);
        put64(t + 24, idx_off);
        put64(t + 32, recs.used);
        put64(t + 40, strs.used);
        put32(t + 48, crc_idx);
        put32(t + 52, crc_head);
        put64(t + 56, idx_off + recs.used + TRL);
        if ((st = cx_atomic_write(af, t, TRL, err)))
            goto abort_chunk;
    }
    st = cx_atomic_commit(af, err);
    af = NULL;
abort_chunk:
    free(ims);
    free(errs);
    free(ow);
    free(oh);
    free(sts);
abort:
    if (af)
        cx_atomic_abort(af);
out_free:
    free(head.buf);
    free(recs.buf);
    free(strs.buf);
    free(labels);
    return st;
}

#define BAD(...) do { st = cx_seterr(err, CX_EFORMAT, __VA_ARGS__); goto fail; } while (0)

cx_status cx_pack_open(const char *path, cx_dataset **out, cx_err *err)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return cx_seterr(err, CX_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return cx_seterr(err, CX_EIO, "%s: not a regular file", path);
    }
    uint64_t fsize = (uint64_t)sb.st_size;
    if (fsize < HDR + TRL) {
        close(fd);
        return cx_seterr(err, CX_EFORMAT, "%s: not a chexnet pack (%llu bytes: too short)", path,
                         (unsigned long long)fsize);
    }
    void *map = mmap(NULL, (size_t)fsize, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (map == MAP_FAILED)
        return cx_seterr(err, CX_EIO, "%s: cannot map: %s", path, strerror(errno));
    const uint8_t *b = map;
    cx_status st = CX_OK;
    cx_dataset *ds = NULL;
    if (memcmp(b, MAGIC, 8))
        BAD("%s: not a chexnet pack (bad magic)", path);
    uint32_t version = get32(b + 8);
    if (version != CX_PACK_VERSION)
        BAD("%s: pack version %u; this chexnet reads version %d", path, version,
            CX_PACK_VERSION);
    uint64_t count = get64(b + 16);
    uint32_t S = get32(b + 24), mode = get32(b + 28), K = get32(b + 32),
             cls_bytes = get32(b + 36);
    uint64_t data_off = get64(b + 40);
    if (get32(b + 12) != HDR)
        BAD("%s: bad header size", path);
    if (S < 1 || S > CX_IMAGE_MAX_SIDE)
        BAD("%s: bad image size %u", path, S);
    if (mode != 0 && mode != 1 && mode != 3)
        BAD("%s: bad channel mode %u", path, mode);
    if (K > MAX_CLASSES)
        BAD("%s: bad class count %u", path, K);
    if (count < 1 || count > 0x7FFFFFFF)
        BAD("%s: bad image count %llu", path, (unsigned long long)count);
    if (data_off != align(HDR + (uint64_t)cls_bytes, 64) || data_off > fsize - TRL)
        BAD("%s: bad data offset (truncated or corrupt file)", path);
    const uint8_t *t = b + fsize - TRL;
    if (memcmp(t, END_MAGIC, 8))
        BAD("%s: truncated or corrupt pack (no end marker; %llu bytes)", path,
            (unsigned long long)fsize);
    uint64_t t_data_off = get64(t + 8), data_bytes = get64(t + 16), idx_off = get64(t + 24),
             idx_bytes = get64(t + 32), str_bytes = get64(t + 40), t_fsize = get64(t + 56);
    if (t_fsize != fsize)
        BAD("%s: the pack says %llu bytes but the file has %llu (truncated or corrupt)", path,
            (unsigned long long)t_fsize, (unsigned long long)fsize);
    if (t_data_off != data_off || data_bytes > fsize || idx_off != align(data_off + data_bytes, 8) ||
        idx_bytes > fsize || idx_off + idx_bytes + TRL != fsize)
        BAD("%s: inconsistent section sizes (corrupt pack)", path);
    if (idx_bytes != count * REC + count * K + str_bytes || str_bytes < 1)
        BAD("%s: index size does not match %llu images (corrupt pack)", path,
            (unsigned long long)count);
    if ((uint32_t)crc32(0, b, (uInt)data_off) != get32(t + 52))
        BAD("%s: header checksum mismatch (corrupt pack)", path);
    {
        uint32_t c = 0;
        uint64_t rem = idx_bytes;
        const uint8_t *p = b + idx_off;
        c = (uint32_t)crc32(0, NULL, 0);
        while (rem) {
            uInt part = rem > (1u << 30) ? (1u << 30) : (uInt)rem;
            c = (uint32_t)crc32(c, p, part);
            p += part;
            rem -= part;
        }
        if (c != get32(t + 48))
            BAD("%s: index checksum mismatch (corrupt pack)", path);
    }
    const uint8_t *recs = b + idx_off, *labs = recs + count * REC,
                  *strs = labs + count * K;
    if (strs[str_bytes - 1] != 0)
        BAD("%s: corrupt string table", path);
    /* class names */
    const char *cn = (const char *)b + HDR;
    if (cls_bytes && cn[cls_bytes - 1] != 0)
        BAD("%s: corrupt class names", path);
    if ((st = cx_ds_alloc(&ds, (int)count, (int)K, 0, err)))
        goto fail;
    strcpy(ds->source, "pack");
    {
        uint32_t u = 0;
        for (uint32_t k = 0; k < K; k++) {
            if (u >= cls_bytes)
                BAD("%s: corrupt class names", path);
            ds->classes[k] = strdup(cn + u);
            if (!ds->classes[k]) {
                st = cx_seterr(err, CX_ENOMEM, "out of memory");
                goto fail;
            }
            u += (uint32_t)strlen(cn + u) + 1;
        }
        if (u != cls_bytes)
            BAD("%s: corrupt class names", path);
    }
    ds->pix_off = malloc(count * sizeof *ds->pix_off);
    ds->pix_ch = malloc(count);
    if (!ds->pix_off || !ds->pix_ch) {
        st = cx_seterr(err, CX_ENOMEM, "out of memory");
        goto fail;
    }
    uint64_t expect = 0;
    for (uint64_t i = 0; i < count; i++) {
        const uint8_t *r = recs + i * REC;
        uint64_t po = get64(r);
        uint32_t no = get32(r + 8), pa = get32(r + 12);
        int ch = r[20];
        if (ch != 1 && ch != 3)
            BAD("%s: image %llu: bad channel count %d (corrupt pack)", path,
                (unsigned long long)i, ch);
        if (mode && (uint32_t)ch != mode)
            BAD("%s: image %llu: %d channels in a %u-channel pack", path, (unsigned long long)i,
                ch, mode);
        if (po != expect)
            BAD("%s: image %llu: bad pixel offset (corrupt pack)", path, (unsigned long long)i);
        expect += (uint64_t)S * S * ch;
        if (expect > data_bytes)
            BAD("%s: image %llu: pixels beyond the data section (corrupt pack)", path,
                (unsigned long long)i);
        if (no >= str_bytes || pa >= str_bytes)
            BAD("%s: image %llu: bad name offset (corrupt pack)", path, (unsigned long long)i);
        for (uint32_t k = 0; k < K; k++)
            if (labs[i * K + k] > 1)
                BAD("%s: image %llu: label %u is %d, not 0/1 (corrupt pack)", path,
                    (unsigned long long)i, k, labs[i * K + k]);
        if (!strs[no] || !strs[pa])
            BAD("%s: image %llu: empty name or patient (corrupt pack)", path,
                (unsigned long long)i);
        int got = cx_ds_add(ds, (const char *)strs + no, (const char *)strs + pa, labs + i * K,
                            NULL, path, 0, err);
        if (got < 0) {
            st = err ? err->code : CX_EFORMAT;
            goto fail;
        }
        if (got != (int)i)
            BAD("%s: image '%s' appears twice (corrupt pack)", path, (const char *)strs + no);
        ds->pix_off[i] = po;
        ds->pix_ch[i] = (uint8_t)ch;
    }
    if (expect != data_bytes)
        BAD("%s: data section of %llu bytes, images need %llu (corrupt pack)", path,
            (unsigned long long)data_bytes, (unsigned long long)expect);
    ds->label_path = strdup(path);
    ds->map = map;
    ds->map_len = (size_t)fsize;
    ds->pix = b + data_off;
    ds->pack_size = (int)S;
    ds->pack_mode = (int)mode;
    *out = ds;
    return CX_OK;
fail:
    cx_dataset_free(ds);
    munmap(map, (size_t)fsize);
    return st;
}
