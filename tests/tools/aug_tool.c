/* aug_tool: training augmentation (cx_augment) for the Python oracle tests.
 *   aug_tool draw [AUG] [--augment 0|1] --seed S --epoch E --first I --count N
 *                 --width W --height H
 *       the parameters cx_augment_draw gives images I..I+N-1 of a W x H
 *       source, one line each: "image flip crop x y w h angle brightness
 *       contrast gamma" (full precision);
 *   aug_tool apply IMAGE --out F [--size S] [--channels C] [--raw 0|1]
 *                  [--flip 0|1] [--crop X,Y,W,H] [--angle A]
 *                  [--bright F] [--contr F] [--gam G]   (factors, not ranges)
 *       cx_augment_apply on IMAGE (loaded as the loader loads a file: 1
 *       channel when C = 1, else as stored) with these parameters; F gets
 *       float32 [C][S][S]; --raw 1 (default): mean 0, std 1, so the values
 *       are the pixel values in [0, 1]; --raw 0: ImageNet's Normalize;
 *   aug_tool check [AUG]
 *       cx_augment_check: prints "ok" (status 0) or the message (status 1).
 * AUG: --crop-scale LO,HI --crop-ratio LO,HI --rotate D --brightness X
 *      --contrast X --gamma X. */
#include "chexnet.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int aug_opt(cx_augment *a, const char *o, const char *v)
{
    if (!strcmp(o, "--crop-scale"))
        return sscanf(v, "%lf,%lf", &a->crop_scale[0], &a->crop_scale[1]) == 2;
    if (!strcmp(o, "--crop-ratio"))
        return sscanf(v, "%lf,%lf", &a->crop_ratio[0], &a->crop_ratio[1]) == 2;
    if (!strcmp(o, "--rotate"))
        return (a->rotate = strtod(v, NULL)), 1;
    if (!strcmp(o, "--brightness"))
        return (a->brightness = strtod(v, NULL)), 1;
    if (!strcmp(o, "--contrast"))
        return (a->contrast = strtod(v, NULL)), 1;
    if (!strcmp(o, "--gamma"))
        return (a->gamma = strtod(v, NULL)), 1;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: aug_tool draw|apply|check ...\n");
        return 2;
    }
    const char *mode = argv[1];
    cx_err err = {0};
    cx_loader_opts lo;
    cx_loader_opts_default(&lo);
    lo.augment = 1;
    int first = 0, count = 1, width = 0, height = 0, epoch = 0;
    int i0 = 2;
    const char *image = NULL, *out = NULL;
    cx_augment_params p;
    memset(&p, 0, sizeof p);
    p.brightness = p.contrast = p.gamma = 1.0;
    cx_input_spec in;
    cx_input_spec_default(&in);
    int raw = 1;
    if (!strcmp(mode, "apply")) {
        if (argc < 3)
            return 2;
        image = argv[2];
        i0 = 3;
    }
    for (int i = i0; i + 1 < argc; i += 2) {
        const char *o = argv[i], *v = argv[i + 1];
        if (aug_opt(&lo.aug, o, v)) continue;
        else if (!strcmp(o, "--augment")) lo.augment = atoi(v);
        else if (!strcmp(o, "--seed")) lo.seed = strtoull(v, NULL, 10);
        else if (!strcmp(o, "--epoch")) epoch = atoi(v);
        else if (!strcmp(o, "--first")) first = atoi(v);
        else if (!strcmp(o, "--count")) count = atoi(v);
        else if (!strcmp(o, "--width")) width = atoi(v);
        else if (!strcmp(o, "--height")) height = atoi(v);
        else if (!strcmp(o, "--out")) out = v;
        else if (!strcmp(o, "--size")) in.size = atoi(v);
        else if (!strcmp(o, "--channels")) in.channels = atoi(v);
        else if (!strcmp(o, "--raw")) raw = atoi(v);
        else if (!strcmp(o, "--flip")) p.flip = atoi(v);
        else if (!strcmp(o, "--crop")) {
            p.crop = sscanf(v, "%d,%d,%d,%d", &p.crop_x, &p.crop_y, &p.crop_w, &p.crop_h) == 4;
            if (!p.crop) {
                fprintf(stderr, "aug_tool: --crop wants X,Y,W,H\n");
                return 2;
            }
        }
        else if (!strcmp(o, "--angle")) p.angle = strtod(v, NULL);
        else if (!strcmp(o, "--bright")) p.brightness = strtod(v, NULL);
        else if (!strcmp(o, "--contr")) p.contrast = strtod(v, NULL);
        else if (!strcmp(o, "--gam")) p.gamma = strtod(v, NULL);
        else {
            fprintf(stderr, "aug_tool: unknown option %s\n", o);
            return 2;
        }
    }
    if (!strcmp(mode, "check")) {
        if (cx_augment_check(&lo.aug, &err)) {
            printf("%s\n", err.msg);
            return 1;
        }
        printf("ok\n");
        return 0;
    }
    if (!strcmp(mode, "draw")) {
        for (int k = first; k < first + count; k++) {
            cx_augment_draw(&lo, epoch, k, width, height, &p);
            printf("%d %d %d %d %d %d %d %.17g %.17g %.17g %.17g\n", k, p.flip, p.crop, p.crop_x,
                   p.crop_y, p.crop_w, p.crop_h, p.angle, p.brightness, p.contrast, p.gamma);
        }
        return 0;
    }
    if (strcmp(mode, "apply") || !out) {
        fprintf(stderr, "aug_tool: unknown mode or no --out\n");
        return 2;
    }
    if (raw)
        for (int c = 0; c < 3; c++)
            in.mean[c] = 0, in.std[c] = 1;
    cx_image im;
    if (cx_image_load(image, in.channels == 1 ? 1 : 0, &im, &err)) {
        fprintf(stderr, "aug_tool: %s\n", err.msg);
        return 1;
    }
    size_t nf = (size_t)in.channels * in.size * in.size;
    float *x = malloc(nf * sizeof *x);
    if (!x || cx_augment_apply(&im, &p, &in, x, &err)) {
        fprintf(stderr, "aug_tool: %s\n", x ? err.msg : "out of memory");
        return 1;
    }
    FILE *f = fopen(out, "wb");
    if (!f || fwrite(x, sizeof *x, nf, f) != nf || fclose(f)) {
        fprintf(stderr, "aug_tool: cannot write %s\n", out);
        return 1;
    }
    cx_image_free(&im);
    free(x);
    return 0;
}
