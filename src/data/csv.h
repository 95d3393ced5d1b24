/* csv.h - a small, strict reader of delimited text tables (internal).
 *
 * Reads a whole file into memory, plain or gzip-compressed (detected from the
 * content, not the name; zlib's gzopen/gzread read both), and splits it into
 * records of fields:
 *   - CX_CSV_COMMA: RFC 4180 CSV: fields separated by ',', optionally quoted
 *     with '"' (a quoted field may hold commas, newlines and doubled quotes
 *     "" meaning one quote); CRLF or LF line ends; a missing final newline is
 *     fine; a UTF-8 byte-order mark at the start is skipped; lines that are
 *     completely empty are skipped.
 *   - CX_CSV_WHITESPACE: fields separated by runs of spaces/tabs, no quoting
 *     (e.g. the ChestX-ray14 split lists "IMAGE L1 ... L14").
 * Errors name the file and the 1-based line where the problem is: an
 * unterminated quote, text after a closing quote, a record whose field count
 * differs from the header's (unless ragged rows are allowed), a NUL byte.
 */
#ifndef CX_DATA_CSV_H
#define CX_DATA_CSV_H

#include "chexnet.h"
#include "util/textput.h"

typedef enum { CX_CSV_COMMA = 0, CX_CSV_WHITESPACE = 1 } cx_csv_sep;

typedef struct {
    cx_csv_sep sep;
    int has_header;  /* first record is the header (column names)   */
    int allow_ragged;/* rows may have a different number of fields  */
} cx_csv_opts;

typedef struct {
    int n_fields;
    char **fields;   /* NUL-terminated, quotes removed */
    long line;       /* 1-based line where the record starts */
} cx_csv_row;

typedef struct {
    char *path;      /* as given (for messages) */
    int n_cols;      /* header fields (0 without a header) */
    char **header;
    long n_rows;     /* data records (the header not counted) */
    cx_csv_row *rows;
    void *impl_;     /* field storage */
} cx_csv;

/* Reads a whole plain or gzip file into a NUL-terminated buffer (free()).
 * The limits (cx_limits: max_bytes after decompression, max_rows lines) are
 * checked while reading, so an oversized file fails early (CX_ELIMIT). */
cx_status cx_read_text_file(const char *path, char **buf, size_t *len,
                            cx_err *err);

/* The CX_ELIMIT error of the row (rows != 0) or byte limit, naming path. */
cx_status cx_text_limit_error(const char *path, int rows, cx_err *err);

/* cx_csv_parse also refuses more records than the row limit (a header is not
 * counted) or text beyond the byte limit. */
cx_status cx_csv_read(const char *path, const cx_csv_opts *opts, cx_csv **out,
                      cx_err *err);
/* Parses text already in memory; name is used in messages. */
cx_status cx_csv_parse(const char *text, size_t len, const char *name,
                       const cx_csv_opts *opts, cx_csv **out, cx_err *err);
void cx_csv_free(cx_csv *t);

/* Index of the header column whose name equals name case-insensitively
 * (surrounding blanks ignored), or -1. */
int cx_csv_col(const cx_csv *t, const char *name);

/* Strict number parsing of a field (surrounding blanks allowed); returns 0 on
 * success, -1 if empty/non-numeric/NaN/inf. */
int cx_csv_parse_double(const char *s, double *out);

/* cx_csv_field (chexnet.h), the one CSV field writer, through put. */
void cx_csv_field_put(cx_text_put put, void *ctx, const char *s);

#endif
