/* img_dump - writes decoded / preprocessed pixels for the Python oracle tests.
 *
 *   img_dump decode  CH OUT IN...          cx_image_load(IN, CH)
 *   img_dump resize  CH W H OUT IN...      load then cx_image_resize to WxH
 *   img_dump tencrop CH R S OUT IN...      load, cx_image_resize_short(R),
 *                                          cx_image_tencrop(S): 10 records
 *   img_dump time    N IN                  mean and min ms of decode and of
 *                                          resize to 224x224 over N runs
 *
 * OUT receives, per image, records of a 16-byte header (int32 LE: status,
 * width, height, channels) followed by width*height*channels bytes (HWC).
 * A failed image gives one record with its cx_status and zero sizes, and its
 * error message on stderr; the exit status is then 1.
 */
#include "chexnet.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void put(FILE *f, int st, const cx_image *im)
{
    int32_t h[4] = {st, im ? im->width : 0, im ? im->height : 0, im ? im->channels : 0};
    fwrite(h, sizeof h, 1, f);
    if (im)
        fwrite(im->data, 1, (size_t)im->width * im->height * im->channels, f);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: see the comment in img_dump.c\n");
        return 2;
    }
    const char *mode = argv[1];
    cx_err err = {0};
    if (!strcmp(mode, "time")) {
        int n = atoi(argv[2]);
        double td = 0, tr = 0, md = 1e9, mr = 1e9;
        for (int i = 0; i < n; i++) {
            cx_image im, sm;
            double t0 = now();
            if (cx_image_load(argv[3], 0, &im, &err)) {
                fprintf(stderr, "%s\n", err.msg);
                return 1;
            }
            double t1 = now();
            if (cx_image_resize(&im, 224, 224, &sm, &err)) {
                fprintf(stderr, "%s\n", err.msg);
                return 1;
            }
            double t2 = now();
            td += t1 - t0;
            tr += t2 - t1;
            md = t1 - t0 < md ? t1 - t0 : md;
            mr = t2 - t1 < mr ? t2 - t1 : mr;
            cx_image_free(&im);
            cx_image_free(&sm);
        }
        printf("decode_ms mean %.3f min %.3f  resize_224_ms mean %.3f min %.3f\n",
               td / n * 1e3, md * 1e3, tr / n * 1e3, mr * 1e3);
        return 0;
    }
    int ch = atoi(argv[2]);
    int first, a = 0, b = 0;
    const char *out;
    if (!strcmp(mode, "decode")) {
        out = argv[3];
        first = 4;
    } else if (!strcmp(mode, "resize") || !strcmp(mode, "tencrop")) {
        if (argc < 6)
            return 2;
        a = atoi(argv[3]);
        b = atoi(argv[4]);
        out = argv[5];
        first = 6;
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    FILE *f = fopen(out, "wb");
    if (!f) {
        perror(out);
        return 2;
    }
    int rc = 0;
    for (int i = first; i < argc; i++) {
        cx_image im;
        cx_status st = cx_image_load(argv[i], ch, &im, &err);
        if (!st && !strcmp(mode, "decode")) {
            put(f, 0, &im);
        } else if (!st && !strcmp(mode, "resize")) {
            cx_image r;
            st = cx_image_resize(&im, a, b, &r, &err);
            if (!st) {
                put(f, 0, &r);
                cx_image_free(&r);
            }
        } else if (!st) {
            cx_image r, crops[10];
            st = cx_image_resize_short(&im, a, &r, &err);
            if (!st) {
                st = cx_image_tencrop(&r, b, crops, &err);
                cx_image_free(&r);
            }
            if (!st)
                for (int k = 0; k < 10; k++) {
                    put(f, 0, &crops[k]);
                    cx_image_free(&crops[k]);
                }
        }
        cx_image_free(&im);
        if (st) {
            fprintf(stderr, "%s\n", err.msg);
            put(f, st, NULL);
            rc = 1;
        }
    }
    if (fclose(f)) {
        perror(out);
        return 2;
    }
    return rc;
}
