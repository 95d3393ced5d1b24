/* Datasets: the table of images, labels and patients, its image files
 * (resolved against an image folder) and its pixels (from the files or from
 * a pack's mapping). The sources a dataset is read from are in sources.c,
 * packs in pack.c; this file depends on neither. */
#define _GNU_SOURCE
#include "data/data_internal.h"
#include "util/rng.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>

/* ------------------------------------------------------------- the table */

uint64_t cx_data_hash(uint64_t seed, uint64_t a, uint64_t b)
{
    uint64_t x = seed;
    uint64_t h = cx_splitmix64(&x);
    x = h ^ (a * 0xD1B54A32D192ED03ULL);
    h = cx_splitmix64(&x);
    x = h ^ (b * 0x9E3779B97F4A7C15ULL + 0x632BE59BD9B4E019ULL);
    return cx_splitmix64(&x);
}

void cx_dataset_opts_default(cx_dataset_opts *o)
{
    memset(o, 0, sizeof *o);
}

cx_status cx_ds_alloc(cx_dataset **out, int cap, int K, int K_src, cx_err *err)
{
    *out = NULL;
    cx_dataset *ds = calloc(1, sizeof *ds);
    if (!ds)
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    size_t c = cap > 0 ? (size_t)cap : 1;
    ds->K = K;
    ds->K_src = K_src;
    ds->classes = calloc(K > 0 ? (size_t)K : 1, sizeof *ds->classes);
    ds->names = calloc(c, sizeof *ds->names);
    ds->lines = calloc(c, sizeof *ds->lines);
    ds->patient = calloc(c, sizeof *ds->patient);
    ds->patients = calloc(c, sizeof *ds->patients);
    ds->y = calloc(c * (size_t)(K > 0 ? K : 1), 1);
    if (K_src > 0)
        ds->y_src = calloc(c * (size_t)K_src, 1);
    if (!ds->classes || !ds->names || !ds->lines || !ds->patient || !ds->patients || !ds->y ||
        (K_src > 0 && !ds->y_src) || cx_strmap_init(&ds->by_name, c) ||
        cx_strmap_init(&ds->by_base, c) || cx_strmap_init(&ds->by_patient, c)) {
        cx_dataset_free(ds);
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    }
    *out = ds;
    return CX_OK;
}

int cx_ds_add(cx_dataset *ds, const char *name, const char *patient, const uint8_t *labels,
              const uint8_t *src, const char *file, long line, cx_err *err)
{
    int prev = cx_strmap_get(&ds->by_name, name);
    if (prev >= 0) {
        int same = !memcmp(ds->y + (size_t)prev * ds->K, labels, (size_t)ds->K) &&
                   !strcmp(ds->patients[ds->patient[prev]], patient);
        if (!same) {
            cx_seterr(err, CX_EFORMAT,
                      "%s:%ld: image '%s' appears twice with different labels or patient "
                      "(first on line %ld)",
                      file, line, name, ds->lines[prev]);
            return -1;
        }
        cx_ds_warn(ds, "%s:%ld: duplicate row for image '%s' (identical to line %ld), ignored",
                   file, line, name, ds->lines[prev]);
        return prev;
    }
    int i = ds->n;
    ds->names[i] = strdup(name);
    if (!ds->names[i]) {
        cx_seterr(err, CX_ENOMEM, "out of memory");
        return -1;
    }
    ds->n++;
    memcpy(ds->y + (size_t)i * ds->K, labels, (size_t)ds->K);
    if (ds->y_src && src)
        memcpy(ds->y_src + (size_t)i * ds->K_src, src, (size_t)ds->K_src);
    ds->lines[i] = line;
    int p = cx_strmap_get(&ds->by_patient, patient);
    if (p < 0) {
        p = ds->n_patients;
        ds->patients[p] = strdup(patient);
        if (!ds->patients[p]) {
            cx_seterr(err, CX_ENOMEM, "out of memory");
            return -1;
        }
        ds->n_patients++;
        if (cx_strmap_put(&ds->by_patient, ds->patients[p], p)) {
            cx_seterr(err, CX_ENOMEM, "out of memory");
            return -1;
        }
    }
    ds->patient[i] = p;
    if (cx_strmap_put(&ds->by_name, ds->names[i], i)) {
        cx_seterr(err, CX_ENOMEM, "out of memory");
        return -1;
    }
    const char *base = cx_basename(ds->names[i]);
    int pb = cx_strmap_get(&ds->by_base, base);
    if (pb == -1) {
        if (cx_strmap_put(&ds->by_base, base, i)) {
            cx_seterr(err, CX_ENOMEM, "out of memory");
            return -1;
        }
    } else {
        cx_strmap_put(&ds->by_base, base, -3); /* ambiguous */
    }
    return i;
}

void cx_dataset_free(cx_dataset *ds)
{
    if (!ds)
        return;
    for (int k = 0; k < ds->K; k++)
        free(ds->classes[k]);
    free(ds->classes);
    for (int i = 0; i < ds->n; i++) {
        free(ds->names[i]);
        if (ds->paths)
            free(ds->paths[i]);
    }
    free(ds->names);
    free(ds->paths);
    free(ds->lines);
    free(ds->patient);
    for (int p = 0; p < ds->n_patients; p++)
        free(ds->patients[p]);
    free(ds->patients);
    free(ds->y);
    free(ds->y_src);
    cx_strmap_free(&ds->by_name);
    cx_strmap_free(&ds->by_base);
    cx_strmap_free(&ds->by_patient);
    for (int i = 0; i < ds->n_warn; i++)
        free(ds->warn[i]);
    free(ds->warn);
    free(ds->label_path);
    if (ds->map)
        munmap(ds->map, ds->map_len);
    free(ds->pix_off);
    free(ds->pix_ch);
    free(ds);
}

int cx_dataset_size(const cx_dataset *ds) { return ds->n; }
int cx_dataset_num_classes(const cx_dataset *ds) { return ds->K; }
const char *cx_dataset_class(const cx_dataset *ds, int k)
{
    return k >= 0 && k < ds->K ? ds->classes[k] : NULL;
}
const char *cx_dataset_source(const cx_dataset *ds) { return ds->source; }
const char *cx_dataset_name(const cx_dataset *ds, int i)
{
    return i >= 0 && i < ds->n ? ds->names[i] : NULL;
}
const char *cx_dataset_path(const cx_dataset *ds, int i)
{
    return i >= 0 && i < ds->n && ds->paths ? ds->paths[i] : NULL;
}
int cx_dataset_num_patients(const cx_dataset *ds) { return ds->n_patients; }
int cx_dataset_patient(const cx_dataset *ds, int i)
{
    return i >= 0 && i < ds->n ? ds->patient[i] : -1;
}
const char *cx_dataset_patient_id(const cx_dataset *ds, int p)
{
    return p >= 0 && p < ds->n_patients ? ds->patients[p] : NULL;
}
const uint8_t *cx_dataset_labels(const cx_dataset *ds) { return ds->y; }
int cx_dataset_num_warnings(const cx_dataset *ds) { return ds->n_warn; }
const char *cx_dataset_warning(const cx_dataset *ds, int i)
{
    return i >= 0 && i < ds->n_warn ? ds->warn[i] : NULL;
}
int cx_dataset_pack_size(const cx_dataset *ds) { return ds->map ? ds->pack_size : 0; }

int cx_dataset_find(const cx_dataset *ds, const char *name)
{
    int r = cx_strmap_get(&ds->by_name, name);
    if (r >= 0)
        return r;
    r = cx_strmap_get(&ds->by_base, cx_basename(name));
    if (r == -3)
        return -2;
    return r < 0 ? -1 : r;
}

void cx_nih_patient(const char *name, char *buf, size_t n)
{
    const char *b = cx_basename(name);
    size_t l = strcspn(b, "_");
    if (!b[l]) { /* no '_': the name without extension */
        const char *dot = strrchr(b, '.');
        l = dot && dot > b ? (size_t)(dot - b) : strlen(b);
    }
    if (l >= n)
        l = n - 1;
    memcpy(buf, b, l);
    buf[l] = 0;
}

/* ------------------------------------------------------------ image files */

typedef struct {
    char **paths;
    size_t n, cap;
} file_list;

static int fl_push(file_list *f, char *p)
{
    if (f->n == f->cap) {
        size_t nc = f->cap ? f->cap * 2 : 1024;
        char **np = realloc(f->paths, nc * sizeof *np);
        if (!np)
            return -1;
        f->paths = np;
        f->cap = nc;
    }
    f->paths[f->n++] = p;
    return 0;
}

static int is_image_name(const char *name)
{
    const char *dot = strrchr(name, '.');
    if (!dot)
        return 0;
    return !strcasecmp(dot, ".png") || !strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg");
}

static cx_status scan_dir(const char *dir, int depth, file_list *f, cx_err *err)
{
    if (depth > 16)
        return CX_OK;
    DIR *d = opendir(dir);
    if (!d) {
        if (depth == 0)
            return cx_seterr(err, CX_EIO, "%s: cannot open image folder: %s", dir,
                             strerror(errno));
        return CX_OK;
    }
    struct dirent *e;
    cx_status st = CX_OK;
    while ((e = readdir(d)) && !st) {
        if (e->d_name[0] == '.')
            continue;
        size_t l = strlen(dir) + strlen(e->d_name) + 2;
        char *p = malloc(l);
        if (!p) {
            st = cx_seterr(err, CX_ENOMEM, "out of memory");
            break;
        }
        snprintf(p, l, "%s%s%s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/", e->d_name);
        int isdir = e->d_type == DT_DIR, isreg = e->d_type == DT_REG;
        if (e->d_type == DT_UNKNOWN || e->d_type == DT_LNK) {
            struct stat sb;
            if (stat(p, &sb) == 0) {
                isdir = S_ISDIR(sb.st_mode);
                isreg = S_ISREG(sb.st_mode);
            }
        }
        if (isdir) {
            st = scan_dir(p, depth + 1, f, err);
            free(p);
        } else if (isreg && is_image_name(e->d_name)) {
            if (fl_push(f, p)) {
                free(p);
                st = cx_seterr(err, CX_ENOMEM, "out of memory");
            }
        } else {
            free(p);
        }
    }
    closedir(d);
    return st;
}

static int is_file(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

static char *join(const char *dir, const char *name)
{
    size_t l = strlen(dir) + strlen(name) + 2;
    char *p = malloc(l);
    if (p)
        snprintf(p, l, "%s%s%s", dir, (*dir && dir[strlen(dir) - 1] != '/') ? "/" : "", name);
    return p;
}

cx_status cx_dataset_set_image_dir(cx_dataset *ds, const char *dir, cx_err *err)
{
    if (ds->map)
        return CX_OK; /* pixels are in the pack */
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return cx_seterr(err, CX_EIO, "%s: not an image folder", dir);
    char **paths = calloc((size_t)ds->n, sizeof *paths);
    if (!paths)
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    cx_status st = CX_OK;
    if (!strcmp(ds->source, "manifest")) {
        for (int i = 0; i < ds->n && !st; i++) {
            const char *nm = ds->names[i];
            char *p = nm[0] == '/' ? strdup(nm) : join(dir, nm);
            if (!p) {
                st = cx_seterr(err, CX_ENOMEM, "out of memory");
                break;
            }
            if (is_file(p))
                paths[i] = p;
            else
                free(p);
        }
    } else {
        file_list f = {0};
        st = scan_dir(dir, 0, &f, err);
        cx_strmap m = {0};
        if (!st && cx_strmap_init(&m, f.n))
            st = cx_seterr(err, CX_ENOMEM, "out of memory");
        for (size_t j = 0; j < f.n && !st; j++) {
            const char *b = cx_basename(f.paths[j]);
            int prev = cx_strmap_get(&m, b);
            /* duplicates: the smaller path wins (independent of readdir order) */
            if (prev < 0 || strcmp(f.paths[j], f.paths[prev]) < 0)
                if (cx_strmap_put(&m, b, (int)j))
                    st = cx_seterr(err, CX_ENOMEM, "out of memory");
        }
        for (int i = 0; i < ds->n && !st; i++) {
            const char *nm = ds->names[i];
            if (strchr(nm, '/')) {
                char *p = nm[0] == '/' ? strdup(nm) : join(dir, nm);
                if (p && is_file(p)) {
                    paths[i] = p;
                    continue;
                }
                free(p);
            }
            int j = cx_strmap_get(&m, cx_basename(nm));
            if (j >= 0) {
                paths[i] = strdup(f.paths[j]);
                if (!paths[i])
                    st = cx_seterr(err, CX_ENOMEM, "out of memory");
            }
        }
        cx_strmap_free(&m);
        for (size_t j = 0; j < f.n; j++)
            free(f.paths[j]);
        free(f.paths);
    }
    if (st) {
        for (int i = 0; i < ds->n; i++)
            free(paths[i]);
        free(paths);
        return st;
    }
    if (ds->paths) {
        for (int i = 0; i < ds->n; i++)
            free(ds->paths[i]);
        free(ds->paths);
    }
    ds->paths = paths;
    return CX_OK;
}

cx_status cx_dataset_check_images(const cx_dataset *ds, const int *idx, int n, cx_err *err)
{
    if (ds->map)
        return CX_OK;
    if (!idx)
        n = ds->n;
    if (!ds->paths && n > 0)
        return cx_seterr(err, CX_EMISSING,
                         "%s: no image folder given: cannot find the %d image%s",
                         ds->label_path ? ds->label_path : "dataset", n, n == 1 ? "" : "s");
    int missing = 0;
    char first[5][128];
    for (int j = 0; j < n; j++) {
        int i = idx ? idx[j] : j;
        if (i < 0 || i >= ds->n)
            return cx_seterr(err, CX_EARG, "image index %d out of range (dataset of %d)", i,
                             ds->n);
        if (!ds->paths[i]) {
            if (missing < 5)
                snprintf(first[missing], sizeof first[0], "%s", ds->names[i]);
            missing++;
        }
    }
    if (!missing)
        return CX_OK;
    char list[700];
    size_t u = 0;
    list[0] = 0;
    for (int j = 0; j < missing && j < 5; j++)
        u += (size_t)snprintf(list + u, sizeof list - u, "%s%s", j ? ", " : "", first[j]);
    return cx_seterr(err, CX_EMISSING, "%d of %d image%s %s no file in the image folder "
                                       "(first: %s%s)",
                     missing, n, n == 1 ? "" : "s", missing == 1 ? "has" : "have", list,
                     missing > 5 ? ", ..." : "");
}

void cx_pack_view(const cx_dataset *ds, int i, cx_image *view)
{
    view->width = view->height = ds->pack_size;
    view->channels = ds->pix_ch[i];
    view->data = (uint8_t *)(ds->pix + ds->pix_off[i]);
}

cx_status cx_dataset_image(const cx_dataset *ds, int i, int channels, cx_image *out,
                           cx_err *err)
{
    memset(out, 0, sizeof *out);
    if (i < 0 || i >= ds->n)
        return cx_seterr(err, CX_EARG, "image index %d out of range (dataset of %d)", i, ds->n);
    if (channels != 0 && channels != 1 && channels != 3)
        return cx_seterr(err, CX_EARG, "channels must be 0, 1 or 3");
    if (ds->map) {
        cx_image v;
        cx_pack_view(ds, i, &v);
        return cx_image_convert(&v, channels ? channels : v.channels, out, err);
    }
    if (!ds->paths || !ds->paths[i])
        return cx_seterr(err, CX_EMISSING, "image '%s' has no file", ds->names[i]);
    return cx_image_load(ds->paths[i], channels, out, err);
}
