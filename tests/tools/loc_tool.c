/* loc_tool - cx_localize on maps and boxes given as text, for the Python
 * oracle test (py_test_localize).
 *
 *   loc_tool IN OUT_MAPS
 *
 * IN: "n_items n_classes threshold n_bootstrap seed", then per item a line
 * "image cls h w width height n_boxes", a line of h*w map values and a line
 * of 4*n_boxes box values (x y w h). Prints JSON: per item [pointing, iou],
 * per class and overall [n_items, n_images, pointing, lo, hi, iou, lo, hi]
 * (null for NaN). OUT_MAPS gets each item's map upsampled to width x height
 * (cx_cam_upsample_raw), float32, in item order.
 */
#include "chexnet.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static void num(double v, const char *sep)
{
    if (isfinite(v))
        printf("%.17g%s", v, sep);
    else
        printf("null%s", sep);
}

static void group(const cx_loc_stat *s)
{
    printf("[%d, %d, ", s->n_items, s->n_images);
    num(s->pointing.value, ", ");
    num(s->pointing.lo, ", ");
    num(s->pointing.hi, ", ");
    num(s->iou.value, ", ");
    num(s->iou.lo, ", ");
    num(s->iou.hi, "]");
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: loc_tool IN OUT_MAPS\n");
        return 2;
    }
    FILE *f = fopen(argv[1], "r");
    if (!f) {
        perror(argv[1]);
        return 1;
    }
    int n, nc, nb;
    double thr;
    unsigned long long seed;
    if (fscanf(f, "%d %d %lf %d %llu", &n, &nc, &thr, &nb, &seed) != 5) {
        fprintf(stderr, "bad header\n");
        return 1;
    }
    cx_loc_item *it = calloc((size_t)n, sizeof *it);
    for (int i = 0; i < n; i++) {
        cx_loc_item *t = &it[i];
        if (fscanf(f, "%d %d %d %d %d %d %d", &t->image, &t->cls, &t->h, &t->w, &t->width,
                   &t->height, &t->n_boxes) != 7) {
            fprintf(stderr, "bad item %d\n", i);
            return 1;
        }
        float *m = malloc(sizeof(float) * (size_t)t->h * t->w);
        cx_box *b = malloc(sizeof(cx_box) * (size_t)t->n_boxes);
        for (int k = 0; k < t->h * t->w; k++)
            if (fscanf(f, "%f", &m[k]) != 1)
                return 1;
        for (int k = 0; k < t->n_boxes; k++)
            if (fscanf(f, "%lf %lf %lf %lf", &b[k].x, &b[k].y, &b[k].w, &b[k].h) != 4)
                return 1;
        t->map = m;
        t->boxes = b;
    }
    fclose(f);
    cx_loc_opts o;
    cx_loc_opts_default(&o);
    o.threshold = thr;
    o.n_bootstrap = nb;
    o.seed = seed;
    cx_loc_result r;
    cx_err err = {0};
    if (cx_localize(it, n, nc, &o, &r, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    printf("{\"items\": [");
    for (int i = 0; i < n; i++) {
        printf("%s[", i ? ", " : "");
        num(r.hit[i], ", ");
        num(r.iou[i], "]");
    }
    printf("], \"classes\": [");
    for (int k = 0; k < nc; k++) {
        if (k)
            printf(", ");
        group(&r.per_class[k]);
    }
    printf("], \"overall\": ");
    group(&r.overall);
    printf("}\n");
    FILE *out = fopen(argv[2], "wb");
    if (!out) {
        perror(argv[2]);
        return 1;
    }
    for (int i = 0; i < n; i++) {
        size_t np = (size_t)it[i].width * it[i].height;
        float *u = malloc(sizeof(float) * np);
        if (cx_cam_upsample_raw(it[i].map, it[i].h, it[i].w, it[i].height, it[i].width, u, NULL,
                                NULL, &err)) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        fwrite(u, sizeof(float), np, out);
        free(u);
    }
    fclose(out);
    for (int i = 0; i < n; i++) {
        free((void *)it[i].map);
        free((void *)it[i].boxes);
    }
    free(it);
    cx_loc_result_free(&r);
    return 0;
}
