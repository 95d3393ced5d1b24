/* One plan and one pass of a DenseNet: the buffers of inference and
 * training by name (plan.c, in the spirit of llm.c's fill_in_*_sizes), the
 * forward pass with a training flag (forward.c) used by inference, CAM,
 * bf16 and training, and the training backward beside it (backward.c).
 * Everything runs on a backend object (kernels/backend.h) as a sequence of
 * op calls over the planned buffers, which live in the backend's memory.
 *
 * Activations are CNHW (kernels/backend.h). Each dense block owns one
 * buffer [C_block_out][N][h][w]: the block's input is written to its first
 * channels (by max-pool or by the transition's average pool) and layer l
 * writes its k new channels at channel offset cin_l, so concatenation never
 * copies.
 *
 * Training keeps, for backward: the conv0 output (pre-norm0), the dense
 * block buffers (pre-norm1 inputs of every layer, concatenated in place),
 * the bottleneck output of every dense layer (pre-norm2, MIDS), the final
 * features and the pooled vector. Every BN-ReLU output that feeds a
 * convolution or a pooling is recomputed in backward from these and the
 * saved batch statistics (Pleiss et al. 2017), so no per-layer normalised
 * copy of the concatenation is ever kept. */
#ifndef CX_MODEL_PASS_H
#define CX_MODEL_PASS_H

#include "kernels/backend.h"
#include "model/model_internal.h"

/* The named buffers. OUT holds what a training step downloads at once
 * (inference uses its logits as staging). Sizes depend on the mode: a buffer a mode does not use
 * has size 0, and so do the staging buffers on a host-memory backend (the
 * caller's memory is used in place). The main arena holds [0, CX_B_W16),
 * the bf16 arena (cx_ctx_set_precision) [CX_B_W16, CX_B_COUNT). */
enum {
    CX_B_INPUT,                              /* CNHW [Cin][N][H][W] */
    CX_B_STEM,                               /* conv0 output [C0][N][H0][W0] */
    CX_B_BLOCK,                              /* + b: dense block b [Cout_b][N][h_b][w_b] */
    CX_B_MIDS = CX_B_BLOCK + CX_MAX_BLOCKS,  /* train: every bottleneck output, in order */
    CX_B_ACT,                                /* BN-ReLU outputs the backend may store */
    CX_B_MID,                                /* infer bottleneck; transition pool out (bf16: in) */
    CX_B_SCRATCH,                            /* convolution scratch (floats) */
    CX_B_FEATURES,                           /* norm5 + ReLU [F][N][h][w] */
    CX_B_POOLED,                             /* [N][F] */
    CX_B_BN_SCALE,                           /* every BN's folded scale, model order */
    CX_B_BN_SHIFT,                           /* and shift */
    CX_B_OUT,                                /* loss (a double, 64 bytes), logits [N][K] */
    CX_B_DLOGITS,                            /* train: [N][K] */
    CX_B_LABELS,                             /* train, staging: [N][K] */
    CX_B_DBLOCK,                             /* + b, train: gradient of block b */
    CX_B_DPOOLED = CX_B_DBLOCK + CX_MAX_BLOCKS, /* train: [N][F] */
    CX_B_DACT,                               /* train: gradients, ACT-sized */
    CX_B_DMID,                               /* train: gradients, MID-sized */
    CX_B_BN_MEAN,                            /* train: batch statistics of BNs, model order */
    CX_B_BN_INVSTD,
    CX_B_BN_VAR,
    CX_B_BLOCK_MEAN,                         /* train: statistics of every block channel */
    CX_B_BLOCK_VAR,
    CX_B_BLOCK_INVSTD,                       /* train: one block's, in backward */
    CX_B_PEND_A,                             /* train: deferred BN terms of one block */
    CX_B_PEND_B,
    CX_B_LOSS_W,                             /* train: wpos [K], wneg [K] */
    CX_B_GRAD,                               /* train: [n_trainable], storage order */
    CX_B_ADAM_M,
    CX_B_ADAM_V,
    CX_B_FLAG,                               /* train: first non-finite gradient (int64) */
    CX_B_NCHW,                               /* staging: the batch as given */
    CX_B_FEATURE_OUT,                        /* staging: one image's features (CHW) */
    CX_B_WEIGHTS,                            /* the model's storage (own memory; last) */
    CX_B_W16,                                /* bf16 arena: packed conv weights */
    CX_B_ACT16,                              /* packed BN-ReLU of a 1x1 conv's input */
    CX_B_MID16,                              /* BN-ReLU of the bottleneck, grid layout */
    CX_B_SCRATCH16,                          /* bf16 convolution scratch (floats) */
    CX_B_COUNT
};

/* What a mode plans: geometry, the bytes of every named buffer, and the
 * order they are carved in (each mode's, as its kernels were tuned with;
 * the weights' copy last). */
typedef struct {
    int training;
    int batch, H, W;
    int H0, W0;                               /* after conv0 */
    int Hb[CX_MAX_BLOCKS], Wb[CX_MAX_BLOCKS]; /* of each dense block */
    size_t bytes[CX_B_COUNT];
    size_t scratch_n, scratch16_n;            /* floats of SCRATCH, SCRATCH16 */
    unsigned char order[CX_B_W16];            /* the main arena's buffers in carve order */
} cx_plan;

/* Plans inference (training = 0) or a training step for (model, batch, H, W)
 * on a backend (scratch sizes are the backend's). */
cx_status cx_plan_make(const cx_model *m, int batch, int height, int width, int training,
                       const cx_backend *be, cx_plan *p, cx_err *err);
/* Adds the bf16 arena's buffers (inference). */
cx_status cx_plan_bf16(const cx_model *m, const cx_backend *be, cx_plan *p, cx_err *err);
/* Bytes of the main arena (bf16 = 0) or of the bf16 arena (bf16 = 1), the
 * buffers carved one after another, 64-byte aligned. */
size_t cx_plan_bytes(const cx_plan *p, int bf16);
/* Where a buffer of the main arena starts in it. */
size_t cx_plan_offset(const cx_plan *p, int buf);
/* Points the views of an arena's buffers into base (cx_plan_bytes of it). */
void cx_plan_carve(const cx_plan *p, int bf16, void *base, void **views);

/* One BatchNorm as the pass sees it, in model order (norm0, then each dense
 * layer's norm1 and norm2, each transition's norm, norm5). */
typedef struct {
    const cx_bn *bn;          /* the model's (C, tensor index) */
    const float *weight, *bias;
    float *run_mean, *run_var; /* in the backend's memory */
    float *scale, *shift;     /* its slice of BN_SCALE / BN_SHIFT */
    /* training: the batch statistics it normalises with; for the readers of
     * a block buffer (norm1, transition norms, norm5) the block's, computed
     * once as the channels are written */
    float *mean, *var, *invstd;
} cx_bn_slot;

/* Data-parallel training as the pass sees it (set by the trainer; NULL:
 * one process). With sync_bn every batch statistic of the forward and the
 * per-channel sums of every BatchNorm backward are reduced over the ranks
 * (sums and sums of squares, in double); grads_done tells the trainer,
 * as the backward pass goes, that the gradients [lo, n_trainable) are
 * final, so their sums can start while the rest is computed. */
typedef struct {
    int sync_bn;
    void *user;
    /* v[0..n) = its sum over the ranks, in place */
    cx_status (*sum)(void *user, double *v, size_t n, cx_err *err);
    cx_status (*grads_done)(void *user, int64_t lo, cx_err *err);
    double *host;             /* host scratch: 2 * Cmax + 1 doubles */
    float *host_f;            /* host scratch: 4 * Cmax floats */
    float *dev_a, *dev_b;     /* backend memory: Cmax floats each */
} cx_pass_dist;

/* A planned pass on a backend. */
typedef struct {
    const cx_model *m;
    cx_backend *be;
    cx_plan plan;
    void *arena, *arena16;
    void *buf[CX_B_COUNT];
    float *w;                 /* the model's storage in the backend's memory */
    cx_bn_slot *bn;
    int n_bn;
    int bf16;                 /* bf16 convolutions (inference) */
    const cx_pass_dist *dist; /* training over several ranks, or NULL */
} cx_pass;

/* The widest BatchNorm of the model (channels). */
int cx_pass_max_channels(const cx_pass *p);
/* Sync-BN, forward: mean and var [C] (this rank's batch statistics over P
 * values per channel) become those of the global batch. */
cx_status cx_pass_sync_stats(cx_pass *p, const char *where, int C, int64_t P, float *mean,
                             float *var, cx_err *err);
/* Sync-BN, backward of slot s's BN + ReLU: dx was computed by
 * bn_relu_backward from this rank's sums (left in the slot's weight and bias
 * gradients, which held zero before); it is corrected to the global sums'. */
cx_status cx_pass_sync_bn_backward(cx_pass *p, const cx_bn_slot *s, const float *x, int64_t P,
                                   float *dx, cx_err *err);
/* Sync-BN, backward of a block reader (norm1): bn_deferred_terms with the
 * global sums of the slot's weight and bias gradients (this rank's, which
 * held zero before) over the global count. */
cx_status cx_pass_sync_deferred_terms(cx_pass *p, const cx_bn_slot *s, int C, int64_t P,
                                      float *pa, float *pb, cx_err *err);

/* Plans and allocates a pass; the backend object is the pass's from now on
 * (freed by cx_pass_free, also on failure). The model's weights are uploaded
 * (nothing to do on a host-memory backend). */
cx_status cx_pass_new(const cx_model *m, int batch, int height, int width, int training,
                      cx_backend *be, cx_pass *p, cx_err *err);
void cx_pass_free(cx_pass *p);
/* Uploads the model's weights again (after they changed on the host). */
cx_status cx_pass_upload_weights(cx_pass *p, cx_err *err);
/* Downloads the weights and running statistics into the model. */
cx_status cx_pass_download_weights(cx_pass *p, cx_err *err);
/* The bf16 arena and packed weights (set), or none (clear). */
cx_status cx_pass_set_bf16(cx_pass *p, int on, cx_err *err);

/* The forward pass over n images: x the batch NCHW [n][Cin][H][W] in the
 * backend's memory, logits [n][K] written there. Training: BatchNorm with
 * batch statistics (kept for backward), the activations backward needs. */
cx_status cx_pass_forward(cx_pass *p, const float *x, int n, float *logits, cx_err *err);
/* The backward of the last training forward over n images, from DLOGITS:
 * every parameter gradient into GRAD (overwritten). */
cx_status cx_pass_backward(cx_pass *p, int n, cx_err *err);

/* cx_ctx_new and cx_train_new on a given backend object (which they then
 * own, also on failure): the conformance harness runs every variant. */
cx_status cx_ctx_new_on(const cx_model *m, int batch, int height, int width, cx_backend *be,
                        cx_ctx **out, cx_err *err);
cx_status cx_train_new_on(cx_model *m, int batch, int height, int width, cx_backend *be,
                          const cx_train_opts *opts, cx_train **out, cx_err *err);
/* The trainer's copy of the weights from the model again (after a
 * checkpoint was loaded into it); cx_train_sync_model is the other way. */
cx_status cx_train_reload_model(cx_train *t, cx_err *err);

/* Data-parallel training on a trainer (NULL: one process). */
cx_status cx_train_set_comm(cx_train *t, const cx_comm *comm, int sync_bn, int overlap,
                            size_t bucket_bytes, cx_err *err);
/* cx_train_step over this rank's n images of a global batch of n_global
 * (with a comm; the loss returned is the global batch's). */
cx_status cx_train_step_global(cx_train *t, const float *input, const float *labels, int n,
                               int n_global, double *loss, cx_err *err);

/* A model tensor's data, and its gradient, in the backend's memory. */
static inline float *cx_pass_dev(const cx_pass *p, const float *host)
{
    return p->w + (host - p->m->storage);
}
static inline float *cx_pass_grad(const cx_pass *p, const float *host)
{
    return (float *)p->buf[CX_B_GRAD] + (host - p->m->storage);
}
/* "features.denseblock1.denselayer1.conv1.weight": names for messages. */
static inline const char *cx_pass_name(const cx_pass *p, int tensor)
{
    return p->m->tensors[tensor].name;
}

#endif
