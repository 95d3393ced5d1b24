/* fuzz_json: the strict JSON parser (RFC 8259, UTF-8, depth limit, duplicate
 * keys) and the accessors over every value; strings escaped back. */
#include "fuzz_common.h"
#include "io/json.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_setup();
    return 0;
}

static void walk(const cx_json *v, int depth)
{
    char buf[64];
    double d;
    uint64_t u;
    int64_t i64;
    switch (v->type) {
    case CX_JSON_NUMBER:
        (void)cx_json_double(v, &d);
        (void)cx_json_u64(v, &u);
        (void)cx_json_i64(v, &i64);
        break;
    case CX_JSON_STRING:
        if (!cx_utf8_valid(v->str, v->len))
            abort(); /* the parser accepts valid UTF-8 only */
        (void)cx_json_escape_buf(buf, sizeof buf, v->str);
        break;
    case CX_JSON_ARRAY:
        for (size_t i = 0; i < cx_json_count(v); i++)
            walk(cx_json_at(v, i), depth + 1);
        break;
    case CX_JSON_OBJECT:
        for (size_t i = 0; i < cx_json_count(v); i++) {
            const char *k = cx_json_key_at(v, i);
            if (cx_json_get(v, k) == NULL && strlen(k) == v->key_lens[i])
                abort(); /* every key is found */
            walk(cx_json_value_at(v, i), depth + 1);
        }
        break;
    default:
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size ? size : 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    cx_json *root = NULL;
    cx_err err;
    if (cx_json_parse(text, size, 0, &root, &err) == CX_OK) {
        walk(root, 0);
        cx_json_free(root);
    }
    free(text);
    return 0;
}
