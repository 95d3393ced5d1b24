/* calib_tool: the calibration arithmetic of libchexnet on numbers from stdin
 * (for the Python oracle tests against scipy / scikit-learn / numpy).
 *
 *   calib_tool fit                 stdin "logit label" lines; prints
 *                                  {"T": ..., "at_bound": 0|1, "nll_1": ..., "nll_T": ...}
 *   calib_tool threshold RULE [X]  stdin "p label" lines; RULE youden,
 *                                  sensitivity, specificity, f1, fixed;
 *                                  prints {"threshold": ..., "sens": ..., "spec": ...}
 *                                  or {"error": "..."}
 *   calib_tool ece BINS            stdin "p label"; prints {"ece": ...}
 *   calib_tool percentile Q        stdin one value per line; prints {"value": ...}
 *
 * Values are read as float (as the library holds them). */
#include "chexnet.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t read_pairs(float **v, uint8_t **y, int pairs)
{
    size_t n = 0, cap = 1024;
    *v = malloc(sizeof(float) * cap);
    *y = malloc(cap);
    float a;
    int b = 0;
    while (pairs ? scanf("%f %d", &a, &b) == 2 : scanf("%f", &a) == 1) {
        if (n == cap) {
            cap *= 2;
            *v = realloc(*v, sizeof(float) * cap);
            *y = realloc(*y, cap);
        }
        (*v)[n] = a;
        (*y)[n] = (uint8_t)(b != 0);
        n++;
    }
    return n;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    float *v = NULL;
    uint8_t *y = NULL;
    cx_err err = {0};
    if (!strcmp(argv[1], "fit")) {
        size_t n = read_pairs(&v, &y, 1);
        double T;
        int at;
        if (cx_calib_fit_temperature(v, y, n, &T, &at, &err)) {
            printf("{\"error\": \"%s\"}\n", err.msg);
            free(v);
            free(y);
            return 0;
        }
        printf("{\"T\": %.17g, \"at_bound\": %d, \"nll_1\": %.17g, \"nll_T\": %.17g}\n", T, at,
               cx_calib_nll(v, y, n, 1.0), cx_calib_nll(v, y, n, T));
    } else if (!strcmp(argv[1], "threshold") && argc >= 3) {
        static const char *names[] = {"youden", "sensitivity", "specificity", "f1", "fixed"};
        int rule = -1;
        for (int i = 0; i < 5; i++)
            if (!strcmp(argv[2], names[i]))
                rule = i;
        if (rule < 0)
            return 2;
        double x = argc > 3 ? atof(argv[3]) : 0;
        size_t n = read_pairs(&v, &y, 1);
        float t;
        if (cx_calib_threshold(v, y, n, (cx_threshold_rule)rule, x, &t, &err)) {
            printf("{\"error\": \"%s\"}\n", err.msg);
            free(v);
            free(y);
            return 0;
        }
        double se, sp;
        cx_calib_rates(v, y, n, t, &se, &sp);
        printf("{\"threshold\": %.9g, \"sens\": %.17g, \"spec\": %.17g}\n", t, se, sp);
    } else if (!strcmp(argv[1], "ece") && argc >= 3) {
        size_t n = read_pairs(&v, &y, 1);
        printf("{\"ece\": %.17g}\n", cx_calib_ece(v, y, n, atoi(argv[2])));
    } else if (!strcmp(argv[1], "percentile") && argc >= 3) {
        size_t n = read_pairs(&v, &y, 0);
        printf("{\"value\": %.17g}\n", cx_calib_percentile(v, n, atof(argv[2])));
    } else {
        return 2;
    }
    free(v);
    free(y);
    return 0;
}
