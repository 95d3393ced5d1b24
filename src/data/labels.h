/* labels.h - internal helpers shared by the label and prediction tables.
 * The public API (cx_labels_*) is in chexnet.h's eval section. */
#ifndef CX_DATA_LABELS_H
#define CX_DATA_LABELS_H

#include "chexnet.h"
#include "data/csv.h"

/* The column holding image ids: the first header named (case-insensitively)
 * "Image Index", "Image", "Image_Index", "Image_Name", "Image Name", "Path",
 * "Image_Path", "Filename", "File", "Study", "Id"; else column 0. */
int cx_image_column(const cx_csv *t);

/* One label value: 0/1 (also 0.0/1.0, true/false) -> 0/1; blank, -1, nan ->
 * CX_LABEL_MISSING; anything else -> -2. */
int cx_parse_label(const char *s);

/* The file name part of a path ("a/b/c.png" -> "c.png"). */
const char *cx_basename(const char *path);

/* A string -> int map (open addressing, FNV-1a), keys not copied. */
typedef struct {
    const char **keys;
    int *vals;
    size_t cap, n;
} cx_strmap;
int cx_strmap_init(cx_strmap *m, size_t expected);
void cx_strmap_free(cx_strmap *m);
/* Returns the stored value, or -1 if absent. */
int cx_strmap_get(const cx_strmap *m, const char *key);
/* Inserts or replaces; 0 on success, -1 out of memory. */
int cx_strmap_put(cx_strmap *m, const char *key, int val);

/* Appends a formatted message to a malloc'd string list (best effort). */
void cx_note_add(int *n, char ***list, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

#endif
