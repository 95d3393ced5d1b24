/* labels.h - internal helpers shared by the label and prediction tables.
 * The public API (cx_labels_*) is in chexnet.h's eval section. */
#ifndef CX_DATA_LABELS_H
#define CX_DATA_LABELS_H

#include "chexnet.h"
#include "data/csv.h"

#include <stdint.h>

/* The column holding image ids: the first header named (case-insensitively)
 * "Image Index", "Image", "Image_Index", "Image_Name", "Image Name", "Path",
 * "Image_Path", "Filename", "File", "Study", "Id"; else column 0. */
int cx_image_column(const cx_csv *t);

/* One label value: 0/1 (also 0.0/1.0, true/false) -> 0/1; blank, -1, nan ->
 * CX_LABEL_MISSING; anything else -> -2. */
int cx_parse_label(const char *s);

/* The same, strict: 0 or 1, else -1 (missing labels are not allowed). */
int cx_parse_label01(const char *s);

/* ---- the one parser of the label formats (label tables and datasets) ----
 *
 * ChestX-ray14 metadata ("Finding Labels" = "Effusion|Mass" or "No
 * Finding"), split lists ("IMAGE L1 ... Lk", whitespace separated, 0/1) and
 * CSVs with one 0/1 column per class. */

#define CX_NO_FINDING "No Finding"
#define CX_NIH_NO_FINDING 14

/* Index of a ChestX-ray14 finding (CheXNet's order; also "Infiltrate"),
 * CX_NIH_NO_FINDING for "No Finding", -1 otherwise. */
int cx_nih_class_index(const char *name);

/* The findings of a "Finding Labels" field: has[0..13] set for each finding,
 * has[14] for No Finding. Errors (naming path:line): an unknown name, No
 * Finding together with findings, an empty field. */
cx_status cx_nih_findings(const char *field, uint8_t has[15], const char *path,
                          long line, cx_err *err);

/* The layout of a label file, from its first non-empty line: CSV (it has a
 * comma), SPLIT (no comma, an image and then only 0/1 tokens) or LIST (no
 * comma, anything else: e.g. image names alone). */
typedef enum { CX_LAYOUT_CSV, CX_LAYOUT_SPLIT, CX_LAYOUT_LIST } cx_label_layout;
cx_label_layout cx_label_layout_sniff(const char *text, size_t len);

/* The k labels of a split-list row "IMAGE L1 ... Lk" (each 0 or 1) into
 * out. Errors name path:line. */
cx_status cx_split_row(const cx_csv_row *row, int k, uint8_t *out,
                       const char *path, cx_err *err);

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
