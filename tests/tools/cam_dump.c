/* cam_dump - raw class activation maps for the Python oracle test.
 *
 *   cam_dump MODEL OUT IMAGE...
 *
 * Each image goes through cx_image_load_input (plain resize) and one forward
 * pass; OUT receives, per image, float32 maps [classes][h][w] from
 * cx_cam_compute, followed by the logits [classes]. Prints "h w classes".
 */
#include "chexnet.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: cam_dump MODEL OUT IMAGE...\n");
        return 2;
    }
    cx_err err = {0};
    cx_model *m = NULL;
    if (cx_model_load(argv[1], &m, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    int S = cx_model_input_size(m), nc = cx_model_num_classes(m);
    cx_ctx *c = NULL;
    if (cx_ctx_new(m, 1, S, S, CX_BACKEND_CPU, &c, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    float *in = malloc(sizeof(float) * cx_image_input_floats(m, 0));
    float *logits = malloc(sizeof(float) * nc);
    int h = 0, w = 0;
    cx_cam_compute(c, m, 0, 0, NULL, &h, &w, NULL);
    float *cam = malloc(sizeof(float) * (size_t)h * w);
    FILE *f = fopen(argv[2], "wb");
    if (!in || !logits || !cam || !f) {
        fprintf(stderr, "cannot allocate or open %s\n", argv[2]);
        return 1;
    }
    for (int i = 3; i < argc; i++) {
        if (cx_image_load_input(m, argv[i], 0, in, NULL, &err) ||
            cx_forward(c, in, 1, logits, &err)) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        for (int k = 0; k < nc; k++) {
            if (cx_cam_compute(c, m, 0, k, cam, &h, &w, &err)) {
                fprintf(stderr, "%s\n", err.msg);
                return 1;
            }
            fwrite(cam, sizeof(float), (size_t)h * w, f);
        }
        fwrite(logits, sizeof(float), nc, f);
    }
    if (fclose(f))
        return 1;
    printf("%d %d %d\n", h, w, nc);
    free(in);
    free(logits);
    free(cam);
    cx_ctx_free(c);
    cx_model_free(m);
    return 0;
}
