/* Test tool: runs the forward pass on raw fp32 input and writes raw logits.
 *
 *   cx_forward MODEL INPUT.f32 N H W BACKEND(ref|cpu) OUT.f32 [RESAVE.safetensors [f32|f16|bf16]]
 *
 * INPUT.f32: N x C x H x W floats (NCHW, native endianness); OUT.f32 gets
 * N x classes logits followed by the final feature maps of every image
 * (N x C x h x w, CHW per image). With RESAVE the loaded model is written
 * back with cx_model_save (to test chexnet -> torchvision). The environment
 * variable CX_PRECISION (fp32 or bf16) sets cx_ctx_set_precision. */
#include "chexnet.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc < 8) {
        fprintf(stderr, "usage: cx_forward MODEL INPUT N H W ref|cpu OUT [RESAVE [dtype]]\n");
        return 2;
    }
    cx_err err = {0};
    cx_model *m = NULL;
    if (cx_model_load(argv[1], &m, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    int N = atoi(argv[3]), H = atoi(argv[4]), W = atoi(argv[5]);
    cx_backend_id be = strcmp(argv[6], "ref") ? CX_BACKEND_CPU : CX_BACKEND_REF;
    int C = cx_model_config(m)->in_channels, K = cx_model_num_classes(m);
    size_t n_in = (size_t)N * C * H * W;
    float *in = malloc(n_in * sizeof *in);
    FILE *f = fopen(argv[2], "rb");
    if (!f || fread(in, sizeof *in, n_in, f) != n_in) {
        fprintf(stderr, "cannot read %zu floats from %s\n", n_in, argv[2]);
        return 1;
    }
    fclose(f);
    cx_ctx *ctx = NULL;
    const char *prec = getenv("CX_PRECISION");
    int p = prec && *prec ? cx_precision_parse(prec) : CX_PRECISION_F32;
    if (p < 0) {
        fprintf(stderr, "unknown CX_PRECISION '%s'\n", prec);
        return 2;
    }
    if (cx_ctx_new(m, N, H, W, be, &ctx, &err) ||
        cx_ctx_set_precision(ctx, (cx_precision)p, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    float *logits = malloc((size_t)N * K * sizeof *logits);
    if (cx_forward(ctx, in, N, logits, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    int FC, h, w;
    cx_ctx_features(ctx, 0, NULL, &FC, &h, &w, &err);
    float *feat = malloc((size_t)FC * h * w * sizeof *feat);
    f = fopen(argv[7], "wb");
    if (!f)
        return 1;
    fwrite(logits, sizeof *logits, (size_t)N * K, f);
    for (int i = 0; i < N; i++) {
        cx_ctx_features(ctx, i, feat, &FC, &h, &w, &err);
        fwrite(feat, sizeof *feat, (size_t)FC * h * w, f);
    }
    fclose(f);
    if (argc > 8) {
        cx_dtype dt = CX_DT_F32;
        if (argc > 9 && !strcmp(argv[9], "f16"))
            dt = CX_DT_F16;
        if (argc > 9 && !strcmp(argv[9], "bf16"))
            dt = CX_DT_BF16;
        if (cx_model_save(m, argv[8], dt, &err)) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
    }
    printf("arena %.1f MiB\n", cx_ctx_arena_bytes(ctx) / 1048576.0);
    free(feat);
    free(logits);
    free(in);
    cx_ctx_free(ctx);
    cx_model_free(m);
    return 0;
}
