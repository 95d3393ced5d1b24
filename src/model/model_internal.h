/* Internal view of a DenseNet model: shared by forward, training and I/O.
 *
 * All tensors of a model live in one contiguous fp32 storage array: the
 * trainable tensors first (weights and biases, [0, n_trainable)), then the
 * running statistics, each group in torchvision's state-dict order;
 * cx_param entries point into it. Training keeps gradient and Adam-moment
 * arrays of n_trainable floats and indexes them with cx_param_offset(). */
#ifndef CX_MODEL_INTERNAL_H
#define CX_MODEL_INTERNAL_H

#include "chexnet.h"

#define CX_BN_EPS 1e-5f

typedef struct {
    float *weight, *bias, *mean, *var; /* [C] each */
    int C;
    int idx; /* index of the weight tensor in the model's tensor table */
} cx_bn;

typedef struct {
    float *w; /* [Cout][Cin][k][k] */
    int Cin, Cout, k, stride, pad;
    int idx;
} cx_conv;

typedef struct {
    int cin;          /* input channels (= channels of the block buffer read) */
    cx_bn norm1;      /* over cin */
    cx_conv conv1;    /* 1x1 cin -> bn_size*k */
    cx_bn norm2;      /* over bn_size*k */
    cx_conv conv2;    /* 3x3 pad 1, bn_size*k -> k */
} cx_dense_layer;

typedef struct {
    int n_layers;
    int cin;          /* channels entering the block */
    int cout;         /* cin + n_layers * k: channels of the block buffer */
    cx_dense_layer *layers;
} cx_dense_block;

typedef struct {
    cx_bn norm;       /* over cin */
    cx_conv conv;     /* 1x1 cin -> cin/2 */
} cx_transition;

struct cx_model {
    cx_config cfg;
    int n_tensors;
    cx_param *tensors;
    float *storage;
    int64_t storage_n;
    int64_t n_trainable;

    cx_conv conv0;
    cx_bn norm0;
    cx_dense_block blocks[CX_MAX_BLOCKS];
    cx_transition trans[CX_MAX_BLOCKS - 1];
    cx_bn norm5;
    float *fc_w; /* [classes][features] */
    float *fc_b; /* [classes] */
    int fc_idx;
    int num_features;

    /* metadata */
    int n_meta;
    cx_kv *meta;
    char **class_names;
    int input_size;
    float mean[3], std[3];
    cx_dtype file_dtype;
    /* "thresholds" and "temperature" metadata, parsed (model_io.c);
     * NULL when absent */
    float *thresholds;  /* [classes] */
    float *temperature; /* [classes] */
};

/* Parses and checks the "thresholds" or "temperature" metadata value (a JSON
 * array of one number per class) into m; other keys are left alone. where
 * names the file in messages (NULL: "metadata"). */
cx_status cx_model_parse_calibration(cx_model *m, const char *key, const char *value,
                                     const char *where, cx_err *err);

/* Offset (in floats) of tensor i inside the storage array. */
static inline int64_t cx_param_offset(const struct cx_model *m, int i)
{
    return m->tensors[i].data - m->storage;
}

/* Total BatchNorm channels of the model (all BNs, model order). */
static inline size_t cx_model_bn_channels(const struct cx_model *m)
{
    size_t n = (size_t)m->norm0.C + (size_t)m->norm5.C;
    for (int b = 0; b < m->cfg.n_blocks; b++) {
        for (int l = 0; l < m->blocks[b].n_layers; l++)
            n += (size_t)m->blocks[b].layers[l].norm1.C + (size_t)m->blocks[b].layers[l].norm2.C;
        if (b != m->cfg.n_blocks - 1)
            n += (size_t)m->trans[b].norm.C;
    }
    return n;
}

/* Maps a checkpoint tensor name (DataParallel prefixes, pre-2018 names,
 * Sequential classifier) to torchvision's modern name. Returns 0 when the
 * tensor should be ignored (num_batches_tracked). */
int cx_canonical_name(const char *in, char *out, size_t n);

/* Adds the model's tensors (modern names, num_batches_tracked) and metadata
 * to a writer; the data must stay valid until the writer writes. */
cx_status cx_model_to_writer(const cx_model *m, cx_st_writer *w, cx_dtype dtype, cx_err *err);

#endif
