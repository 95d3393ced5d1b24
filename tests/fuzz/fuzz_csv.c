/* fuzz_csv: the delimited-text reader (cx_csv_parse: RFC 4180 quoting, CRLF,
 * BOM, whitespace lists, ragged rows) and strict number parsing. The first
 * byte chooses the options; the text is not NUL-terminated. */
#include "fuzz_common.h"
#include "data/csv.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_setup();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    cx_csv_opts o = {(data[0] & 1) ? CX_CSV_WHITESPACE : CX_CSV_COMMA, (data[0] >> 1) & 1,
                     (data[0] >> 2) & 1};
    /* an exact-size copy: reading past the end is caught */
    char *text = malloc(size - 1 ? size - 1 : 1);
    if (!text)
        return 0;
    memcpy(text, data + 1, size - 1);
    cx_csv *t = NULL;
    cx_err err;
    if (cx_csv_parse(text, size - 1, "fuzz.csv", &o, &t, &err) == CX_OK) {
        (void)cx_csv_col(t, "image");
        (void)cx_csv_col(t, " Finding Labels ");
        for (long r = 0; r < t->n_rows && r < 64; r++)
            for (int c = 0; c < t->rows[r].n_fields; c++) {
                double v;
                (void)cx_csv_parse_double(t->rows[r].fields[c], &v);
            }
        cx_csv_free(t);
    }
    free(text);
    return 0;
}
