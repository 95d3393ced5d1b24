/*
 * chexnet.h - the one public header of libchexnet.
 *
 * CheXNet (Rajpurkar et al. 2017): a DenseNet-121 that reads chest X-rays.
 * Every library function that can fail returns a cx_status and, when given a
 * non-NULL cx_err, a message naming the file, line or tensor at fault.
 * The library never exits the process and never prints (except progress, which
 * callers enable explicitly).
 *
 * Layout conventions (written on every buffer below):
 *   NCHW  batch, channel, row, column (PyTorch's default; API inputs)
 *   CHW   one image
 *   HWC   interleaved 8-bit pixels (decoded images)
 */
#ifndef CHEXNET_H
#define CHEXNET_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CX_VERSION "0.1.0"

/* ------------------------------------------------------------------ errors */

typedef enum {
    CX_OK = 0,
    CX_EIO,          /* file cannot be opened, read or written          */
    CX_EFORMAT,      /* malformed file contents (PNG, JSON, CSV, ...)   */
    CX_ESHAPE,       /* a tensor or buffer has the wrong shape          */
    CX_ENOMEM,       /* allocation failed                               */
    CX_EARG,         /* invalid argument from the caller                */
    CX_ENUMERIC,     /* NaN/inf where a finite number is required       */
    CX_ELIMIT,       /* input beyond a documented limit                 */
    CX_EUNSUPPORTED, /* valid input we do not support                   */
    CX_EMISSING,     /* a required item (tensor, label, column) absent  */
    CX_EINTERRUPTED  /* stopped on request (signal)                     */
} cx_status;

typedef struct {
    cx_status code;
    char msg[1024];
} cx_err;

const char *cx_status_name(cx_status code);
/* Formats a message into err (if non-NULL) and returns code. */
cx_status cx_seterr(cx_err *err, cx_status code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* ---------------------------------------------------------------- threads */

/* Number of threads used by OpenMP loops and BLAS; n <= 0 means all cores. */
void cx_set_threads(int n);
int cx_get_threads(void);

/* ------------------------------------------------------------ safetensors */

typedef enum {
    CX_DT_F32 = 0, CX_DT_F16, CX_DT_BF16, CX_DT_F64,
    CX_DT_I64, CX_DT_I32, CX_DT_I16, CX_DT_I8, CX_DT_U8, CX_DT_BOOL,
    CX_DT_COUNT
} cx_dtype;

size_t cx_dtype_size(cx_dtype dt);
const char *cx_dtype_name(cx_dtype dt);                 /* "F32", "BF16", ... */
int cx_dtype_parse(const char *name, cx_dtype *out);    /* 0 on success */

#define CX_ST_MAX_DIMS 8
#define CX_ST_MAX_HEADER (100u * 1000u * 1000u) /* as the reference: 100 MB */

typedef struct {
    char *name;
    cx_dtype dtype;
    int ndim;
    int64_t shape[CX_ST_MAX_DIMS];
    uint64_t begin, end; /* byte offsets relative to the data section */
} cx_st_tensor;

typedef struct {
    char *key;
    char *value;
} cx_kv;

typedef struct {
    char *path;
    const uint8_t *data; /* start of the data section (after the header) */
    uint64_t data_size;
    int n_tensors;
    cx_st_tensor *tensors;
    int n_meta;
    cx_kv *meta;         /* "__metadata__" string map */
    void *impl_;         /* mapping / buffer owned by the file */
} cx_st_file;

/* Opens and fully validates a safetensors file (header length and size limit,
 * JSON syntax, dtypes, offsets inside the data section, no overlaps, no gaps,
 * byte sizes matching shape x dtype). */
cx_status cx_st_open(const char *path, cx_st_file **out, cx_err *err);
void cx_st_close(cx_st_file *f);
const cx_st_tensor *cx_st_find(const cx_st_file *f, const char *name);
const char *cx_st_meta(const cx_st_file *f, const char *key);
int64_t cx_st_numel(const cx_st_tensor *t);
/* Converts a F32/F16/BF16/F64 tensor to fp32 into dst (n must equal numel). */
cx_status cx_st_read_f32(const cx_st_file *f, const cx_st_tensor *t,
                         float *dst, int64_t n, cx_err *err);

typedef struct cx_st_writer cx_st_writer;
cx_st_writer *cx_st_writer_new(void);
void cx_st_writer_free(cx_st_writer *w);
/* Adds a tensor from fp32 data, stored as dtype (F32, F16 or BF16, rounded to
 * nearest even). data must stay valid until cx_st_writer_write returns. */
cx_status cx_st_writer_add_f32(cx_st_writer *w, const char *name, cx_dtype dtype,
                               int ndim, const int64_t *shape, const float *data,
                               cx_err *err);
/* Adds an I64 tensor (e.g. BatchNorm num_batches_tracked, shape []). */
cx_status cx_st_writer_add_i64(cx_st_writer *w, const char *name, int ndim,
                               const int64_t *shape, const int64_t *data,
                               cx_err *err);
cx_status cx_st_writer_add_meta(cx_st_writer *w, const char *key,
                                const char *value, cx_err *err);
/* Writes atomically: temp file in the same folder, fsync, rename. */
cx_status cx_st_writer_write(cx_st_writer *w, const char *path, cx_err *err);

/* Writes a whole buffer atomically (temp, fsync, rename). */
cx_status cx_write_file_atomic(const char *path, const void *data, size_t n,
                               cx_err *err);

/* ------------------------------------------------------------------ model */

#define CX_MAX_BLOCKS 8

typedef struct {
    char arch[32];           /* "densenet121", "densenet169", "densenet201", "densenet" */
    int growth_rate;         /* k: 32 */
    int n_blocks;            /* 4 */
    int block_config[CX_MAX_BLOCKS]; /* 6, 12, 24, 16 */
    int num_init_features;   /* 64 */
    int bn_size;             /* 4: bottleneck width = bn_size * k */
    int num_classes;         /* 14 (ChestX-ray14) or 1 (pneumonia) */
    int in_channels;         /* 3, or 1 (torchxrayvision) */
} cx_config;

/* Fills cfg for "densenet121", "densenet169" or "densenet201". */
cx_status cx_config_preset(const char *arch, int num_classes, int in_channels,
                           cx_config *cfg, cx_err *err);
/* Number of channels reaching norm5 (1024 for DenseNet-121). */
int cx_config_num_features(const cx_config *cfg);

/* The 14 ChestX-ray14 findings in CheXNet's order. */
extern const char *const CX_CHESTXRAY14_CLASSES[14];

typedef enum { CX_PARAM_WEIGHT, CX_PARAM_BIAS, CX_PARAM_RUNNING_MEAN,
               CX_PARAM_RUNNING_VAR } cx_param_kind;

/* One named tensor of the model (torchvision state-dict name). Conv weights
 * are [Cout][Cin][kh][kw]; linear weight [classes][features]. */
typedef struct {
    char name[96];
    float *data;
    int ndim;
    int64_t shape[4];
    int64_t numel;
    cx_param_kind kind;
    int trainable;           /* 0 for running statistics */
} cx_param;

typedef struct cx_model cx_model;

/* A model with the given configuration: parameters zero, BN weights 1,
 * running_var 1; metadata defaults (224 input, ImageNet normalisation,
 * class names from the number of outputs). */
cx_status cx_model_new(const cx_config *cfg, cx_model **out, cx_err *err);
/* torchvision's initialisation: Kaiming-normal conv weights, BN weight 1 /
 * bias 0, Linear: PyTorch's default uniform weight, bias 0 (as torchvision's
 * DenseNet constructor). Deterministic for a seed. */
void cx_model_init(cx_model *m, uint64_t seed);
/* Loads torchvision-named safetensors (with the legacy and DataParallel
 * variants); architecture and conv0 input channels come from the tensors. */
cx_status cx_model_load(const char *path, cx_model **out, cx_err *err);
/* Writes modern torchvision names (+ num_batches_tracked) and metadata.
 * dtype: CX_DT_F32, CX_DT_F16 or CX_DT_BF16. Atomic. */
cx_status cx_model_save(const cx_model *m, const char *path, cx_dtype dtype,
                        cx_err *err);
void cx_model_free(cx_model *m);

const cx_config *cx_model_config(const cx_model *m);
int64_t cx_model_num_params(const cx_model *m); /* trainable parameters */
int cx_model_num_tensors(const cx_model *m);
cx_param *cx_model_tensor(cx_model *m, int i);
cx_param *cx_model_find(cx_model *m, const char *name);
cx_dtype cx_model_file_dtype(const cx_model *m); /* dtype found when loaded */

int cx_model_num_classes(const cx_model *m);
const char *cx_model_class_name(const cx_model *m, int i);
cx_status cx_model_set_class_names(cx_model *m, int n, const char *const *names,
                                   cx_err *err);
int cx_model_input_size(const cx_model *m);           /* 224 */
void cx_model_normalization(const cx_model *m, float mean[3], float std[3]);
/* Any "__metadata__" entry (NULL if absent) and setting one. */
const char *cx_model_meta(const cx_model *m, const char *key);
cx_status cx_model_set_meta(cx_model *m, const char *key, const char *value,
                            cx_err *err);
int cx_model_num_meta(const cx_model *m);
const cx_kv *cx_model_meta_at(const cx_model *m, int i);

/* Classifier: weight [classes][features] and bias [classes]. */
const float *cx_model_classifier_weight(const cx_model *m);
const float *cx_model_classifier_bias(const cx_model *m);

/* --------------------------------------------------------------- inference */

typedef enum {
    CX_BACKEND_REF = 0, /* plain C reference kernels (the oracle) */
    CX_BACKEND_CPU = 1  /* BLAS + OpenMP */
} cx_backend_id;

const char *cx_backend_name(cx_backend_id id);

typedef struct cx_ctx cx_ctx;

/* Plans all buffers for (model, batch, height, width) in one arena. The model
 * must outlive the context. */
cx_status cx_ctx_new(const cx_model *m, int batch, int height, int width,
                     cx_backend_id backend, cx_ctx **out, cx_err *err);
void cx_ctx_free(cx_ctx *c);
size_t cx_ctx_arena_bytes(const cx_ctx *c);

/* input: n (<= batch) normalised images, layout NCHW [n][in_channels][H][W];
 * logits: [n][num_classes]. Probabilities are cx_sigmoid(logit). */
cx_status cx_forward(cx_ctx *c, const float *input, int n, float *logits,
                     cx_err *err);
float cx_sigmoid(float x);

/* Final feature maps of image i of the last forward (after norm5 + ReLU),
 * copied to dst in layout CHW [C][h][w]; dst may be NULL to query sizes. */
cx_status cx_ctx_features(const cx_ctx *c, int i, float *dst, int *C, int *h,
                          int *w, cx_err *err);

/* ------------------------------------------------------------------ images */
/* BEGIN images (owned by the image/preprocessing work) */
/* END images */

/* --------------------------------------------------------------------- CAM */
/* BEGIN cam */
/* END cam */

/* -------------------------------------------------------------- evaluation */
/* BEGIN eval */
/* END eval */

/* ---------------------------------------------------------------- training */
/* BEGIN train */
/* END train */

#ifdef __cplusplus
}
#endif
#endif /* CHEXNET_H */
