/* A small strict JSON parser and string escaping (see json.h). */
#include "io/json.h"

#include <errno.h>
#include <locale.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define JSON_MAX_DEPTH_CAP 1000

typedef struct {
    const unsigned char *s;
    size_t n, pos;
    int depth, max_depth;
    cx_err *err;
    int failed;
} parser;

static int fail(parser *p, size_t at, cx_status code, const char *what)
{
    if (!p->failed) {
        cx_seterr(p->err, code, "JSON error at byte %zu: %s", at, what);
        p->failed = 1;
    }
    return -1;
}

static int oom(parser *p)
{
    return fail(p, p->pos, CX_ENOMEM, "out of memory");
}

/* Length (1-4) of the valid UTF-8 sequence starting at s[0..n), 0 if none. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c < 0x80)
        return 1;
    if (c < 0xC2)
        return 0; /* continuation byte or overlong 2-byte lead */
    if (c < 0xE0) {
        if (n < 2 || (s[1] & 0xC0) != 0x80)
            return 0;
        return 2;
    }
    if (c < 0xF0) {
        if (n < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80)
            return 0;
        if (c == 0xE0 && s[1] < 0xA0)
            return 0; /* overlong */
        if (c == 0xED && s[1] >= 0xA0)
            return 0; /* surrogate code point */
        return 3;
    }
    if (c < 0xF5) {
        if (n < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 ||
            (s[3] & 0xC0) != 0x80)
            return 0;
        if (c == 0xF0 && s[1] < 0x90)
            return 0; /* overlong */
        if (c == 0xF4 && s[1] >= 0x90)
            return 0; /* beyond U+10FFFF */
        return 4;
    }
    return 0;
}

int cx_utf8_valid(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        size_t k = utf8_seq(u + i, n - i);
        if (!k)
            return 0;
        i += k;
    }
    return 1;
}

static void skip_ws(parser *p)
{
    while (p->pos < p->n) {
        unsigned char c = p->s[p->pos];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r')
            p->pos++;
        else
            break;
    }
}

static size_t put_utf8(unsigned char *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

static int hex4(parser *p, size_t at, uint32_t *out)
{
    uint32_t v = 0;
    if (at + 4 > p->n)
        return fail(p, at, CX_EFORMAT, "truncated \\u escape");
    for (int i = 0; i < 4; i++) {
        unsigned char c = p->s[at + i];
        uint32_t d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return fail(p, at + i, CX_EFORMAT, "invalid hex digit in \\u escape");
        v = v * 16 + d;
    }
    *out = v;
    return 0;
}

/* Parses a string starting at the opening quote; returns a malloc'd
 * NUL-terminated decoded copy. */
static int parse_string(parser *p, char **out, size_t *out_len)
{
    size_t start = ++p->pos; /* after the quote */
    /* Find the closing quote to size the buffer (escapes only shrink). */
    size_t i = start;
    while (i < p->n && p->s[i] != '"') {
        if (p->s[i] == '\\')
            i++;
        i++;
    }
    if (i >= p->n)
        return fail(p, start - 1, CX_EFORMAT, "unterminated string");
    unsigned char *buf = malloc(i - start + 1);
    if (!buf)
        return oom(p);
    size_t o = 0;
    size_t pos = start;
    while (pos < p->n) {
        unsigned char c = p->s[pos];
        if (c == '"')
            break;
        if (c < 0x20) {
            free(buf);
            return fail(p, pos, CX_EFORMAT, "control character in string (must be escaped)");
        }
        if (c == '\\') {
            if (pos + 1 >= p->n) {
                free(buf);
                return fail(p, pos, CX_EFORMAT, "unterminated string");
            }
            unsigned char e = p->s[pos + 1];
            switch (e) {
            case '"': buf[o++] = '"'; pos += 2; continue;
            case '\\': buf[o++] = '\\'; pos += 2; continue;
            case '/': buf[o++] = '/'; pos += 2; continue;
            case 'b': buf[o++] = '\b'; pos += 2; continue;
            case 'f': buf[o++] = '\f'; pos += 2; continue;
            case 'n': buf[o++] = '\n'; pos += 2; continue;
            case 'r': buf[o++] = '\r'; pos += 2; continue;
            case 't': buf[o++] = '\t'; pos += 2; continue;
            case 'u': {
                uint32_t cp;
                if (hex4(p, pos + 2, &cp)) {
                    free(buf);
                    return -1;
                }
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    uint32_t lo;
                    if (pos + 7 >= p->n || p->s[pos + 6] != '\\' || p->s[pos + 7] != 'u') {
                        free(buf);
                        return fail(p, pos, CX_EFORMAT, "lone high surrogate in \\u escape");
                    }
                    if (hex4(p, pos + 8, &lo)) {
                        free(buf);
                        return -1;
                    }
                    if (lo < 0xDC00 || lo > 0xDFFF) {
                        free(buf);
                        return fail(p, pos + 6, CX_EFORMAT,
                                    "high surrogate not followed by a low surrogate");
                    }
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    pos += 12;
                } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                    free(buf);
                    return fail(p, pos, CX_EFORMAT, "lone low surrogate in \\u escape");
                } else {
                    pos += 6;
                }
                o += put_utf8(buf + o, cp);
                continue;
            }
            default:
                free(buf);
                return fail(p, pos, CX_EFORMAT, "invalid escape in string");
            }
        }
        size_t k = utf8_seq(p->s + pos, p->n - pos);
        if (!k) {
            free(buf);
            return fail(p, pos, CX_EFORMAT, "invalid UTF-8 in string");
        }
        memcpy(buf + o, p->s + pos, k);
        o += k;
        pos += k;
    }
    buf[o] = 0;
    p->pos = pos + 1;
    *out = (char *)buf;
    *out_len = o;
    return 0;
}

static int parse_number(parser *p, cx_json *v)
{
    size_t start = p->pos, i = p->pos;
    int neg = 0;
    if (i < p->n && p->s[i] == '-') {
        neg = 1;
        i++;
    }
    if (i >= p->n || p->s[i] < '0' || p->s[i] > '9')
        return fail(p, i, CX_EFORMAT, "invalid number");
    uint64_t mag = 0;
    int ovf = 0;
    if (p->s[i] == '0') {
        i++;
        if (i < p->n && p->s[i] >= '0' && p->s[i] <= '9')
            return fail(p, start, CX_EFORMAT, "leading zero in number");
    } else {
        while (i < p->n && p->s[i] >= '0' && p->s[i] <= '9') {
            unsigned d = p->s[i] - '0';
            if (mag > (UINT64_MAX - d) / 10)
                ovf = 1;
            else
                mag = mag * 10 + d;
            i++;
        }
    }
    int integer = 1;
    if (i < p->n && p->s[i] == '.') {
        integer = 0;
        i++;
        if (i >= p->n || p->s[i] < '0' || p->s[i] > '9')
            return fail(p, i, CX_EFORMAT, "expected digit after decimal point");
        while (i < p->n && p->s[i] >= '0' && p->s[i] <= '9')
            i++;
    }
    if (i < p->n && (p->s[i] == 'e' || p->s[i] == 'E')) {
        integer = 0;
        i++;
        if (i < p->n && (p->s[i] == '+' || p->s[i] == '-'))
            i++;
        if (i >= p->n || p->s[i] < '0' || p->s[i] > '9')
            return fail(p, i, CX_EFORMAT, "expected digit in exponent");
        while (i < p->n && p->s[i] >= '0' && p->s[i] <= '9')
            i++;
    }
    /* Convert with strtod on a NUL-terminated copy, using the C locale's '.'
     * whatever the process locale is. */
    size_t len = i - start;
    char small[64];
    char *tmp = len < sizeof small ? small : malloc(len + 1);
    if (!tmp)
        return oom(p);
    memcpy(tmp, p->s + start, len);
    tmp[len] = 0;
    const char *dp = localeconv()->decimal_point;
    if (dp && dp[0] && dp[0] != '.' && !dp[1]) {
        char *dot = strchr(tmp, '.');
        if (dot)
            *dot = dp[0];
    }
    errno = 0;
    double d = strtod(tmp, NULL);
    int range = errno == ERANGE && isinf(d);
    if (tmp != small)
        free(tmp);
    if (range)
        return fail(p, start, CX_EFORMAT, "number out of range");
    if (integer && !ovf && neg && mag > (uint64_t)INT64_MAX + 1)
        ovf = 1;
    v->type = CX_JSON_NUMBER;
    v->number = d;
    v->is_integer = integer;
    v->int_overflow = integer ? ovf : 0;
    v->negative = neg;
    v->magnitude = integer && !ovf ? mag : 0;
    p->pos = i;
    return 0;
}

static int literal(parser *p, const char *word)
{
    size_t k = strlen(word);
    if (p->n - p->pos < k || memcmp(p->s + p->pos, word, k) != 0)
        return fail(p, p->pos, CX_EFORMAT, "invalid literal");
    p->pos += k;
    return 0;
}

static void free_children(cx_json *v)
{
    if (!v)
        return;
    free(v->str);
    if (v->type == CX_JSON_ARRAY || v->type == CX_JSON_OBJECT) {
        for (size_t i = 0; i < v->len; i++)
            free_children(&v->items[i]);
        if (v->keys)
            for (size_t i = 0; i < v->len; i++)
                free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->key_lens);
    free(v->sorted);
}

static int key_cmp(const char *a, size_t na, const char *b, size_t nb)
{
    size_t m = na < nb ? na : nb;
    int c = memcmp(a, b, m);
    if (c)
        return c;
    return na < nb ? -1 : na > nb ? 1 : 0;
}

/* Stable merge sort of member indices by key (no qsort: it has no context
 * argument). */
static void sort_keys(const cx_json *o, size_t *idx, size_t *tmp, size_t n)
{
    if (n < 2)
        return;
    size_t h = n / 2;
    sort_keys(o, idx, tmp, h);
    sort_keys(o, idx + h, tmp, n - h);
    size_t a = 0, b = h, k = 0;
    while (a < h && b < n) {
        if (key_cmp(o->keys[idx[b]], o->key_lens[idx[b]], o->keys[idx[a]],
                    o->key_lens[idx[a]]) < 0)
            tmp[k++] = idx[b++];
        else
            tmp[k++] = idx[a++];
    }
    while (a < h)
        tmp[k++] = idx[a++];
    while (b < n)
        tmp[k++] = idx[b++];
    memcpy(idx, tmp, n * sizeof *idx);
}

static int parse_value(parser *p, cx_json *v);

/* Grows the items (and for objects keys) arrays to hold one more member. */
static int grow(parser *p, cx_json *v, size_t *cap, int object)
{
    if (v->len < *cap)
        return 0;
    size_t nc = *cap ? *cap * 2 : 4;
    cx_json *items = realloc(v->items, nc * sizeof *items);
    if (!items)
        return oom(p);
    v->items = items;
    if (object) {
        char **keys = realloc(v->keys, nc * sizeof *keys);
        if (!keys)
            return oom(p);
        v->keys = keys;
        size_t *kl = realloc(v->key_lens, nc * sizeof *kl);
        if (!kl)
            return oom(p);
        v->key_lens = kl;
    }
    *cap = nc;
    return 0;
}

static int parse_array(parser *p, cx_json *v)
{
    size_t cap = 0;
    v->type = CX_JSON_ARRAY;
    p->pos++; /* '[' */
    skip_ws(p);
    if (p->pos < p->n && p->s[p->pos] == ']') {
        p->pos++;
        return 0;
    }
    for (;;) {
        if (grow(p, v, &cap, 0))
            return -1;
        cx_json *item = &v->items[v->len];
        memset(item, 0, sizeof *item);
        v->len++;
        skip_ws(p);
        if (parse_value(p, item))
            return -1;
        skip_ws(p);
        if (p->pos >= p->n)
            return fail(p, p->pos, CX_EFORMAT, "unterminated array");
        if (p->s[p->pos] == ',') {
            p->pos++;
            continue;
        }
        if (p->s[p->pos] == ']') {
            p->pos++;
            return 0;
        }
        return fail(p, p->pos, CX_EFORMAT, "expected ',' or ']' in array");
    }
}

static int parse_object(parser *p, cx_json *v)
{
    size_t cap = 0;
    size_t open = p->pos;
    v->type = CX_JSON_OBJECT;
    p->pos++; /* '{' */
    skip_ws(p);
    if (p->pos < p->n && p->s[p->pos] == '}') {
        p->pos++;
        return 0;
    }
    for (;;) {
        skip_ws(p);
        if (p->pos >= p->n)
            return fail(p, p->pos, CX_EFORMAT, "unterminated object");
        if (p->s[p->pos] != '"')
            return fail(p, p->pos, CX_EFORMAT, "expected a string key in object");
        if (grow(p, v, &cap, 1))
            return -1;
        size_t k = v->len;
        memset(&v->items[k], 0, sizeof v->items[k]);
        v->keys[k] = NULL;
        v->key_lens[k] = 0;
        v->len++; /* counted now so that cleanup frees a partial member */
        if (parse_string(p, &v->keys[k], &v->key_lens[k]))
            return -1;
        skip_ws(p);
        if (p->pos >= p->n || p->s[p->pos] != ':')
            return fail(p, p->pos, CX_EFORMAT, "expected ':' after object key");
        p->pos++;
        skip_ws(p);
        if (parse_value(p, &v->items[k]))
            return -1;
        skip_ws(p);
        if (p->pos >= p->n)
            return fail(p, p->pos, CX_EFORMAT, "unterminated object");
        if (p->s[p->pos] == ',') {
            p->pos++;
            continue;
        }
        if (p->s[p->pos] == '}') {
            p->pos++;
            break;
        }
        return fail(p, p->pos, CX_EFORMAT, "expected ',' or '}' in object");
    }
    v->sorted = malloc(v->len * sizeof *v->sorted);
    size_t *tmp = malloc(v->len * sizeof *tmp);
    if (!v->sorted || !tmp) {
        free(tmp);
        return oom(p);
    }
    for (size_t i = 0; i < v->len; i++)
        v->sorted[i] = i;
    sort_keys(v, v->sorted, tmp, v->len);
    free(tmp);
    for (size_t i = 1; i < v->len; i++) {
        size_t a = v->sorted[i - 1], b = v->sorted[i];
        if (!key_cmp(v->keys[a], v->key_lens[a], v->keys[b], v->key_lens[b])) {
            char msg[200];
            snprintf(msg, sizeof msg, "duplicate key \"%.100s\" in object opened at byte %zu",
                     v->keys[b], open);
            size_t at = v->items[a].offset > v->items[b].offset ? v->items[a].offset
                                                                  : v->items[b].offset;
            return fail(p, at, CX_EFORMAT, msg);
        }
    }
    return 0;
}

static int parse_value(parser *p, cx_json *v)
{
    if (p->pos >= p->n)
        return fail(p, p->pos, CX_EFORMAT, "unexpected end of input, expected a value");
    v->offset = p->pos;
    unsigned char c = p->s[p->pos];
    switch (c) {
    case '{':
    case '[': {
        if (p->depth >= p->max_depth) {
            char msg[80];
            snprintf(msg, sizeof msg, "nesting deeper than %d levels", p->max_depth);
            return fail(p, p->pos, CX_ELIMIT, msg);
        }
        p->depth++;
        int r = c == '{' ? parse_object(p, v) : parse_array(p, v);
        p->depth--;
        return r;
    }
    case '"':
        v->type = CX_JSON_STRING;
        return parse_string(p, &v->str, &v->len);
    case 't':
        v->type = CX_JSON_BOOL;
        v->boolean = 1;
        return literal(p, "true");
    case 'f':
        v->type = CX_JSON_BOOL;
        v->boolean = 0;
        return literal(p, "false");
    case 'n':
        v->type = CX_JSON_NULL;
        return literal(p, "null");
    default:
        if (c == '-' || (c >= '0' && c <= '9'))
            return parse_number(p, v);
        return fail(p, p->pos, CX_EFORMAT, "unexpected character, expected a value");
    }
}

cx_status cx_json_parse(const char *text, size_t len, int max_depth,
                        cx_json **out, cx_err *err)
{
    *out = NULL;
    if (!text && len)
        return cx_seterr(err, CX_EARG, "JSON: NULL text");
    parser p = {(const unsigned char *)text, len, 0, 0, max_depth, err, 0};
    if (p.max_depth <= 0)
        p.max_depth = CX_JSON_DEFAULT_DEPTH;
    if (p.max_depth > JSON_MAX_DEPTH_CAP)
        p.max_depth = JSON_MAX_DEPTH_CAP;
    cx_json *root = calloc(1, sizeof *root);
    if (!root)
        return cx_seterr(err, CX_ENOMEM, "JSON: out of memory");
    skip_ws(&p);
    if (p.pos >= p.n) {
        free(root);
        return cx_seterr(err, CX_EFORMAT, "JSON error at byte %zu: empty input", p.pos);
    }
    if (parse_value(&p, root) == 0) {
        skip_ws(&p);
        if (p.pos < p.n)
            fail(&p, p.pos, CX_EFORMAT, "trailing characters after the JSON value");
    }
    if (p.failed) {
        cx_json_free(root);
        return err ? err->code : CX_EFORMAT;
    }
    *out = root;
    return CX_OK;
}

void cx_json_free(cx_json *root)
{
    if (!root)
        return;
    free_children(root);
    free(root);
}

const char *cx_json_type_name(cx_json_type t)
{
    switch (t) {
    case CX_JSON_NULL: return "null";
    case CX_JSON_BOOL: return "boolean";
    case CX_JSON_NUMBER: return "number";
    case CX_JSON_STRING: return "string";
    case CX_JSON_ARRAY: return "array";
    case CX_JSON_OBJECT: return "object";
    }
    return "?";
}

const cx_json *cx_json_get(const cx_json *obj, const char *key)
{
    if (!obj || obj->type != CX_JSON_OBJECT || !key)
        return NULL;
    size_t kl = strlen(key), lo = 0, hi = obj->len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2, i = obj->sorted[mid];
        int c = key_cmp(obj->keys[i], obj->key_lens[i], key, kl);
        if (c == 0)
            return &obj->items[i];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

size_t cx_json_count(const cx_json *v)
{
    if (!v || (v->type != CX_JSON_ARRAY && v->type != CX_JSON_OBJECT))
        return 0;
    return v->len;
}

const cx_json *cx_json_at(const cx_json *arr, size_t i)
{
    if (!arr || arr->type != CX_JSON_ARRAY || i >= arr->len)
        return NULL;
    return &arr->items[i];
}

const char *cx_json_key_at(const cx_json *obj, size_t i)
{
    if (!obj || obj->type != CX_JSON_OBJECT || i >= obj->len)
        return NULL;
    return obj->keys[i];
}

const cx_json *cx_json_value_at(const cx_json *obj, size_t i)
{
    if (!obj || obj->type != CX_JSON_OBJECT || i >= obj->len)
        return NULL;
    return &obj->items[i];
}

const char *cx_json_string(const cx_json *v)
{
    return v && v->type == CX_JSON_STRING ? v->str : NULL;
}

int cx_json_double(const cx_json *v, double *out)
{
    if (!v || v->type != CX_JSON_NUMBER)
        return -1;
    *out = v->number;
    return 0;
}

int cx_json_u64(const cx_json *v, uint64_t *out)
{
    if (!v || v->type != CX_JSON_NUMBER || !v->is_integer || v->int_overflow)
        return -1;
    if (v->negative && v->magnitude != 0)
        return -1;
    *out = v->magnitude;
    return 0;
}

int cx_json_i64(const cx_json *v, int64_t *out)
{
    if (!v || v->type != CX_JSON_NUMBER || !v->is_integer || v->int_overflow)
        return -1;
    if (v->negative) {
        if (v->magnitude > (uint64_t)INT64_MAX + 1)
            return -1;
        *out = v->magnitude == (uint64_t)INT64_MAX + 1 ? INT64_MIN
                                                       : -(int64_t)v->magnitude;
    } else {
        if (v->magnitude > (uint64_t)INT64_MAX)
            return -1;
        *out = (int64_t)v->magnitude;
    }
    return 0;
}

/* ----------------------------------------------------------------- writer */

typedef struct {
    char *dst;
    size_t cap, len;
    FILE *f;
    cx_text_put put;
    void *ctx;
} sink;

static void emit(sink *k, const char *s, size_t n)
{
    if (k->put) {
        k->put(k->ctx, s, n);
    } else if (k->f) {
        fwrite(s, 1, n, k->f);
    } else if (k->dst) {
        for (size_t i = 0; i < n; i++)
            if (k->len + i + 1 < k->cap)
                k->dst[k->len + i] = s[i];
    }
    k->len += n;
}

static void escape_to(sink *k, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    if (!s) {
        emit(k, "null", 4);
        return;
    }
    const unsigned char *u = (const unsigned char *)s;
    size_t n = strlen(s), i = 0;
    emit(k, "\"", 1);
    while (i < n) {
        unsigned char c = u[i];
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            emit(k, esc, 2);
            i++;
        } else if (c < 0x20 || c == 0x7f) {
            const char *named = c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t"
                              : c == '\b' ? "\\b" : c == '\f' ? "\\f" : NULL;
            if (named) {
                emit(k, named, 2);
            } else {
                memcpy(esc, "\\u00", 4);
                esc[4] = hex[c >> 4];
                esc[5] = hex[c & 15];
                emit(k, esc, 6);
            }
            i++;
        } else if (c < 0x80) {
            size_t j = i;
            while (j < n && u[j] >= 0x20 && u[j] < 0x7f && u[j] != '"' && u[j] != '\\')
                j++;
            emit(k, s + i, j - i);
            i = j;
        } else {
            size_t len = utf8_seq(u + i, n - i);
            if (len) {
                emit(k, s + i, len);
                i += len;
            } else {
                emit(k, "\xEF\xBF\xBD", 3); /* U+FFFD */
                i++;
            }
        }
    }
    emit(k, "\"", 1);
}

void cx_json_escape(FILE *f, const char *s)
{
    sink k = {NULL, 0, 0, f, NULL, NULL};
    escape_to(&k, s);
}

size_t cx_json_escape_buf(char *dst, size_t cap, const char *s)
{
    sink k = {dst, cap, 0, NULL, NULL, NULL};
    escape_to(&k, s);
    if (dst && cap)
        dst[k.len < cap ? k.len : cap - 1] = 0;
    return k.len;
}

void cx_json_escape_put(cx_text_put put, void *ctx, const char *s)
{
    sink k = {NULL, 0, 0, NULL, put, ctx};
    escape_to(&k, s);
}
