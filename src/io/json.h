/* json.h - a small, strict JSON parser (RFC 8259) and string escaping.
 *
 * Strict: exactly one value (surrounded by optional whitespace), valid UTF-8
 * only (no overlong forms, no surrogate code points), no control characters
 * inside strings, no lone surrogates in \u escapes, no leading zeros, no
 * trailing commas, no NaN/Infinity, no duplicate keys in an object, a nesting
 * depth limit. Errors give the byte offset of the fault.
 *
 * The tree is owned by the root returned from cx_json_parse and freed with
 * cx_json_free. Strings are NUL-terminated UTF-8 (\u0000 is decoded, so a
 * string may contain NUL bytes: its exact length is len).
 */
#ifndef CX_IO_JSON_H
#define CX_IO_JSON_H

#include "chexnet.h"
#include "util/textput.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum {
    CX_JSON_NULL = 0,
    CX_JSON_BOOL,
    CX_JSON_NUMBER,
    CX_JSON_STRING,
    CX_JSON_ARRAY,
    CX_JSON_OBJECT
} cx_json_type;

typedef struct cx_json cx_json;

struct cx_json {
    cx_json_type type;
    size_t offset;       /* byte offset of the value in the source text */
    int boolean;         /* BOOL */
    double number;       /* NUMBER (nearest double) */
    int is_integer;      /* NUMBER written without fraction or exponent */
    int int_overflow;    /* ... but beyond the int64/uint64 range */
    int negative;        /* ... with a minus sign */
    uint64_t magnitude;  /* ... its absolute value (when !int_overflow) */
    char *str;           /* STRING: NUL-terminated */
    size_t len;          /* STRING: length in bytes; ARRAY/OBJECT: count */
    cx_json *items;      /* ARRAY: elements; OBJECT: values, document order */
    char **keys;         /* OBJECT: keys (NUL-terminated), document order */
    size_t *key_lens;    /* OBJECT: key lengths in bytes */
    size_t *sorted;      /* OBJECT: member indices sorted by key */
};

#define CX_JSON_DEFAULT_DEPTH 64

/* Parses text[0..len) (need not be NUL-terminated). max_depth <= 0 selects
 * CX_JSON_DEFAULT_DEPTH. On failure err->msg reads
 * "JSON error at byte N: what was wrong" (callers prefix the file name). */
cx_status cx_json_parse(const char *text, size_t len, int max_depth,
                        cx_json **out, cx_err *err);
void cx_json_free(cx_json *root);

const char *cx_json_type_name(cx_json_type t); /* "null", "object", ... */

/* Lookup helpers; all accept NULL and return NULL/0 on a type mismatch. */
const cx_json *cx_json_get(const cx_json *obj, const char *key); /* O(log n) */
size_t cx_json_count(const cx_json *v);               /* array/object size */
const cx_json *cx_json_at(const cx_json *arr, size_t i);
const char *cx_json_key_at(const cx_json *obj, size_t i);
const cx_json *cx_json_value_at(const cx_json *obj, size_t i);
const char *cx_json_string(const cx_json *v);  /* NULL unless a string */
/* Numbers: return 0 on success, -1 if v is not a number of that kind. */
int cx_json_double(const cx_json *v, double *out);
int cx_json_u64(const cx_json *v, uint64_t *out); /* non-negative integer */
int cx_json_i64(const cx_json *v, int64_t *out);  /* integer in int64 range */

/* 1 if s[0..n) is valid UTF-8 (the strict definition used by the parser). */
int cx_utf8_valid(const char *s, size_t n);

/* cx_json_escape (chexnet.h), the one JSON string writer, into dst (always
 * NUL-terminated when cap > 0); returns the length the full output needs
 * (excluding the NUL), like snprintf. */
size_t cx_json_escape_buf(char *dst, size_t cap, const char *s);
/* The same through put (called with pieces of the output, in order), for
 * writers with their own buffers. */
void cx_json_escape_put(cx_text_put put, void *ctx, const char *s);

#endif
