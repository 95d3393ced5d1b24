/* data_internal.h - the dataset structure shared by the data code
 * (internal). Dependencies run one way: dataset.c (the table, its files and
 * pixels) <- pack.c (packs written from and opened into datasets) <-
 * sources.c (cx_dataset_load: label files, lists, packs). */
#ifndef CX_DATA_INTERNAL_H
#define CX_DATA_INTERNAL_H

#include "chexnet.h"
#include "data/labels.h"

#include <stddef.h>
#include <stdint.h>

struct cx_dataset {
    char source[32];
    char *label_path;          /* for messages */
    int n, K;
    char **classes;            /* [K] */
    char **names;              /* [n] image ids */
    char **paths;              /* [n] resolved files (NULL entries: missing) or NULL */
    long *lines;               /* [n] source line (0: unknown) */
    int *patient;              /* [n] */
    int n_patients;
    char **patients;           /* [n_patients] */
    uint8_t *y;                /* [n][K] */
    int K_src;                 /* 14 for ChestX-ray14 sources, else 0 */
    uint8_t *y_src;            /* [n][14] or NULL */
    cx_strmap by_name, by_base, by_patient;
    int n_warn;
    char **warn;
    /* packs */
    void *map;
    size_t map_len;
    int pack_size, pack_mode;
    const uint8_t *pix;        /* pixel data section */
    uint64_t *pix_off;         /* [n] */
    uint8_t *pix_ch;           /* [n] */
};

/* Allocates an empty dataset with room for cap images and K classes. */
cx_status cx_ds_alloc(cx_dataset **out, int cap, int K, int K_src, cx_err *err);
/* Adds an image (copies strings); returns its index or -1 (error set).
 * labels: K values, src: K_src values (or NULL). Duplicate names are errors
 * unless identical (then a warning and the index of the first). */
int cx_ds_add(cx_dataset *ds, const char *name, const char *patient,
              const uint8_t *labels, const uint8_t *src, const char *file,
              long line, cx_err *err);

/* Pixels of a pack entry as a cx_image view (no copy); ds->map is set. */
void cx_pack_view(const cx_dataset *ds, int i, cx_image *view);
/* 1 if path starts with a pack's magic (pack.c). */
int cx_pack_sniff(const char *path);

/* The patient id of a NIH name "00000001_000.png" -> "00000001" (into buf). */
void cx_nih_patient(const char *name, char *buf, size_t n);

/* Writes a string to a malloc'd list of notes. */
#define cx_ds_warn(ds, ...) cx_note_add(&(ds)->n_warn, &(ds)->warn, __VA_ARGS__)

/* The hash used for per-image decisions: splitmix of (seed, a, b). */
uint64_t cx_data_hash(uint64_t seed, uint64_t a, uint64_t b);

#endif
