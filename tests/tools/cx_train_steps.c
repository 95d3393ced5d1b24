/* Test tool: training steps for the PyTorch-autograd parity test.
 *
 *   cx_train_steps MODEL INPUT.f32 LABELS.f32 NIMG N H W STEPS LR WPOS WNEG OUTDIR [ref|cpu]
 *
 * INPUT.f32: NIMG x C x H x W floats (NCHW); LABELS.f32: NIMG x K floats.
 * Step s uses images [(s*N) mod NIMG, ... + N). WPOS/WNEG: the loss weights
 * for every class ("1" for unweighted). Writes to OUTDIR:
 *   grads.safetensors   gradients of step 1 (torchvision names)
 *   step1.safetensors   the model after step 1's forward (running stats)
 *                       and before its Adam update
 *   final.safetensors   the model after STEPS Adam steps
 *   losses.txt          one loss per step */
#include "chexnet.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const cx_err *e)
{
    fprintf(stderr, "%s\n", e->msg);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc < 13) {
        fprintf(stderr, "usage: see source\n");
        return 2;
    }
    cx_err err = {0};
    cx_model *m = NULL;
    if (cx_model_load(argv[1], &m, &err))
        return fail(&err);
    int nimg = atoi(argv[4]), N = atoi(argv[5]), H = atoi(argv[6]), W = atoi(argv[7]);
    int steps = atoi(argv[8]);
    float lr = (float)atof(argv[9]), wp = (float)atof(argv[10]), wn = (float)atof(argv[11]);
    const char *outdir = argv[12];
    cx_backend_id be = argc > 13 && !strcmp(argv[13], "ref") ? CX_BACKEND_REF : CX_BACKEND_CPU;
    int C = cx_model_config(m)->in_channels, K = cx_model_num_classes(m);
    size_t per = (size_t)C * H * W;
    float *in = malloc(per * nimg * sizeof(float)), *lab = malloc((size_t)K * nimg * sizeof(float));
    FILE *f = fopen(argv[2], "rb");
    if (!f || fread(in, sizeof(float), per * nimg, f) != per * nimg)
        return 1;
    fclose(f);
    f = fopen(argv[3], "rb");
    if (!f || fread(lab, sizeof(float), (size_t)K * nimg, f) != (size_t)K * nimg)
        return 1;
    fclose(f);
    cx_train *t = NULL;
    if (cx_train_new(m, N, H, W, be, NULL, &t, &err))
        return fail(&err);
    float *wpos = malloc(K * sizeof(float)), *wneg = malloc(K * sizeof(float));
    for (int k = 0; k < K; k++)
        wpos[k] = wp, wneg[k] = wn;
    if (cx_train_set_loss_weights(t, wpos, wneg, &err))
        return fail(&err);
    char path[4096];
    snprintf(path, sizeof path, "%s/losses.txt", outdir);
    FILE *lf = fopen(path, "w");
    float *x = malloc(per * N * sizeof(float)), *y = malloc((size_t)K * N * sizeof(float));
    for (int s = 0; s < steps; s++) {
        for (int i = 0; i < N; i++) {
            int src = (s * N + i) % nimg;
            memcpy(x + per * i, in + per * src, per * sizeof(float));
            memcpy(y + (size_t)K * i, lab + (size_t)K * src, K * sizeof(float));
        }
        double loss;
        if (cx_train_step(t, x, y, N, &loss, &err))
            return fail(&err);
        fprintf(lf, "%.10g\n", loss);
        if (s == 0) {
            cx_st_writer *w = cx_st_writer_new();
            for (int i = 0; i < cx_model_num_tensors(m); i++) {
                cx_param *p = cx_model_tensor(m, i);
                float *g = cx_train_grad(t, i);
                if (g && cx_st_writer_add_f32(w, p->name, CX_DT_F32, p->ndim, p->shape, g, &err))
                    return fail(&err);
            }
            snprintf(path, sizeof path, "%s/grads.safetensors", outdir);
            if (cx_st_writer_write(w, path, &err))
                return fail(&err);
            cx_st_writer_free(w);
            snprintf(path, sizeof path, "%s/step1.safetensors", outdir);
            if (cx_model_save(m, path, CX_DT_F32, &err))
                return fail(&err);
        }
        if (cx_adam_step(t, lr, &err))
            return fail(&err);
    }
    fclose(lf);
    snprintf(path, sizeof path, "%s/final.safetensors", outdir);
    if (cx_model_save(m, path, CX_DT_F32, &err))
        return fail(&err);
    printf("training arena %.1f MiB\n", cx_train_arena_bytes(t) / 1048576.0);
    cx_train_free(t);
    cx_model_free(m);
    free(in), free(lab), free(x), free(y), free(wpos), free(wneg);
    return 0;
}
