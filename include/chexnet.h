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
#include <stdio.h>

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

/* ------------------------------------------------------------------ files */

/* Creates a folder and any missing parents (like mkdir -p); an existing
 * folder is fine, an existing non-folder is an error naming it. */
cx_status cx_mkdir_p(const char *dir, cx_err *err);

/* ------------------------------------------------------------ text output */

/* Writes s as a quoted JSON string that is always valid JSON: '"' and '\\'
 * escaped, control characters (U+0000..U+001F and DEL) escaped as \n, \r,
 * \t, \b, \f or \u00XX, and every byte that is not part of valid UTF-8
 * replaced by U+FFFD (written as UTF-8). NULL prints as null. */
void cx_json_escape(FILE *f, const char *s);
/* Writes s as one CSV field (RFC 4180): quoted when it holds a comma, a
 * quote, CR or LF, with the quotes inside doubled; otherwise as it is. */
void cx_csv_field(FILE *f, const char *s);

/* ----------------------------------------------------------------- limits */

/* Bounds on untrusted input, checked before the memory is spent (while a
 * file is read, or from an image's header): input beyond one is refused
 * with CX_ELIMIT and a message naming the limit and the chexnet option that
 * raises it. Process-wide; set them before starting work (the CLI sets them
 * from its options, below). A table costs about twice the size of its text
 * plus 50 to 100 bytes per row in memory (measured: 10 M rows of 14 bytes,
 * the default row limit, 1.2 GB). Images are decoded row by row into the
 * resize to the model's input and are held whole only where a caller keeps
 * them (cx_image_load: width x height x channels bytes). */
typedef struct {
    /* Pixels (width x height) of one image (PNG, JPEG): 67108864 (8192 x
     * 8192). Images are also refused beyond CX_IMAGE_MAX_SIDE per side,
     * so the largest value that matters is 16384^2. chexnet --max-pixels. */
    uint64_t max_pixels;
    /* Lines of one text table or list (CSV, split list, labels,
     * predictions, manifest), counted while it is read: 10000000.
     * At most 2000000000. chexnet --max-rows. */
    uint64_t max_rows;
    /* Bytes of one text table or list after gzip decompression:
     * 1073741824 (1 GiB). chexnet --max-bytes. */
    uint64_t max_bytes;
} cx_limits;

#define CX_LIMIT_MAX_ROWS 2000000000u
void cx_limits_default(cx_limits *l);
/* The limits in force. */
void cx_limits_get(cx_limits *l);
/* Sets the limits; a field of 0 selects its default. CX_EARG for a value
 * beyond what can be represented (max_rows above CX_LIMIT_MAX_ROWS). */
cx_status cx_limits_set(const cx_limits *l, cx_err *err);

/* ---------------------------------------------------------------- threads */

/* Number of threads used by OpenMP loops and the kernels; n <= 0 means all
 * cores. A context or trainer computes with the count set when it was made
 * (its backend's own). */
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

/* What a network takes in: square images of size x size, 1 or 3 channels,
 * each normalised as (v / 255 - mean[c]) / std[c]. */
typedef struct {
    int size;
    int channels;
    float mean[3], std[3];
} cx_input_spec;
/* The default of models without metadata and of the loader: 224 x 224 RGB
 * with ImageNet's channel means and standard deviations. */
void cx_input_spec_default(cx_input_spec *s);
/* The model's: its input size, in_channels and normalisation. */
void cx_model_input_spec(const cx_model *m, cx_input_spec *s);
/* Any "__metadata__" entry (NULL if absent) and setting one. */
const char *cx_model_meta(const cx_model *m, const char *key);
cx_status cx_model_set_meta(cx_model *m, const char *key, const char *value,
                            cx_err *err);
/* Removes an entry (nothing when absent). */
void cx_model_remove_meta(cx_model *m, const char *key);
int cx_model_num_meta(const cx_model *m);
const cx_kv *cx_model_meta_at(const cx_model *m, int i);

/* The operating point and calibration a model carries (metadata written by
 * `chexnet calibrate`, checked when the model loads and whenever set):
 *   "thresholds":  JSON array, one number in (0, 1) per class in the order of
 *                  "classes": class c is positive when its (temperature-
 *                  scaled) probability p >= t[c];
 *   "temperature": JSON array, one positive number per class:
 *                  p = sigmoid(logit / T[c]).
 * A malformed value, a wrong count or a value out of range is a load error
 * naming the file and the key. */
/* 1 and t[classes] filled when the model has thresholds, else 0 (t may be
 * NULL to ask). */
int cx_model_thresholds(const cx_model *m, float *t);
/* T[classes] (may be NULL) filled with the temperatures, 1 without them;
 * returns 1 when the model has them. */
int cx_model_temperature(const cx_model *m, float *T);
/* Class cls's probability from its logit: cx_sigmoid(logit / T[cls]); without
 * temperature metadata exactly cx_sigmoid(logit). */
float cx_model_probability(const cx_model *m, int cls, float logit);
/* Set them (metadata and parsed values), checked as at load. */
cx_status cx_model_set_thresholds(cx_model *m, const float *t, cx_err *err);
cx_status cx_model_set_temperature(cx_model *m, const float *T, cx_err *err);
/* What calibrate writes about one set of weights; training from them drops
 * it (the weights change). */
extern const char *const CX_MODEL_CALIBRATION_KEYS[4]; /* thresholds, temperature,
                                                          threshold_method, cam_range */

/* Calibration arithmetic (src/model/calibration.c) for one class over n
 * images: logits or probabilities with 0/1 labels y. */
#define CX_CALIB_T_MIN 0.01
#define CX_CALIB_T_MAX 100.0
/* Mean binary cross-entropy (NLL) of sigmoid(logit / T). */
double cx_calib_nll(const float *logit, const uint8_t *y, size_t n, double T);
/* The T in [CX_CALIB_T_MIN, CX_CALIB_T_MAX] minimising cx_calib_nll: the
 * NLL is convex in 1/T, and its derivative's zero is found by bisection on
 * log(1/T) to double precision. *at_bound (may be NULL): the minimum lies at
 * or beyond a bound (e.g. separable data), which T is then. */
cx_status cx_calib_fit_temperature(const float *logit, const uint8_t *y, size_t n,
                                   double *T, int *at_bound, cx_err *err);
/* Expected calibration error over `bins` equal-width bins of [0, 1]:
 * sum over bins of (n_b / n) |mean p - fraction positive|. */
double cx_calib_ece(const float *p, const uint8_t *y, size_t n, int bins);
/* How an operating threshold is chosen on probabilities p (positive when
 * p >= t; the candidates are the distinct values of p, as scikit-learn's
 * roc_curve):
 *   YOUDEN       max sensitivity + specificity - 1; ties: the highest
 *   SENSITIVITY  the highest t with sensitivity >= target
 *   SPECIFICITY  the lowest t with specificity >= target (error if none)
 *   F1           max F1; ties: the highest
 *   FIXED        t = target
 * A chosen value outside (0, 1) (a saturated probability) is moved just
 * inside. Both positives and negatives are needed but for FIXED. */
typedef enum { CX_THRESHOLD_YOUDEN, CX_THRESHOLD_SENSITIVITY, CX_THRESHOLD_SPECIFICITY,
               CX_THRESHOLD_F1, CX_THRESHOLD_FIXED } cx_threshold_rule;
cx_status cx_calib_threshold(const float *p, const uint8_t *y, size_t n,
                             cx_threshold_rule rule, double target, float *t, cx_err *err);
/* Sensitivity and specificity of p >= t (NaN without positives/negatives). */
void cx_calib_rates(const float *p, const uint8_t *y, size_t n, float t, double *sens,
                    double *spec);
/* The q-th percentile (0..100) of v[0..n), linear between order statistics
 * (numpy.percentile's default); sorts v. */
double cx_calib_percentile(float *v, size_t n, double q);

/* Classifier: weight [classes][features] and bias [classes]. */
const float *cx_model_classifier_weight(const cx_model *m);
const float *cx_model_classifier_bias(const cx_model *m);

/* --------------------------------------------------------------- inference */

/* The backends this build has (src/kernels/: a registry of backend objects,
 * each with its own memory and operations). Every function taking a
 * backend refuses an unknown one (CX_EARG). */
typedef enum {
    CX_BACKEND_REF = 0, /* plain C reference kernels (the oracle) */
    CX_BACKEND_CPU = 1  /* chexnet's GEMM kernels per instruction set + OpenMP */
} cx_backend_id;

/* "ref", "cpu"; NULL for an unknown id. */
const char *cx_backend_name(cx_backend_id id);
/* The backend of a name, or -1 when there is none. */
int cx_backend_parse(const char *name);
/* Every backend's name, in id order, separated by spaces ("ref cpu"). */
const char *cx_backend_names(void);

typedef struct cx_ctx cx_ctx;

/* Plans all buffers for (model, batch, height, width) in one arena. The model
 * must outlive the context. */
cx_status cx_ctx_new(const cx_model *m, int batch, int height, int width,
                     cx_backend_id backend, cx_ctx **out, cx_err *err);
void cx_ctx_free(cx_ctx *c);
size_t cx_ctx_arena_bytes(const cx_ctx *c);

/* Arithmetic of the convolutions in cx_forward. F32 (the default) matches
 * PyTorch fp32. BF16 (opt-in, inference only) rounds the inputs of every
 * dense-block and transition convolution (after their BatchNorm + ReLU) and
 * those convolutions' weights to bfloat16, with fp32 accumulation; the stem,
 * the BatchNorms, pooling and the classifier stay fp32. It is fast where the
 * CPU has AMX or AVX512-BF16 (see cx_bf16_kernel). Elsewhere its only kernel
 * is portable C, slower than fp32, so the context stays F32: see
 * cx_precision_effective and cx_ctx_precision (CHEXNET_BF16_KERNEL=portable
 * runs that kernel anyway, for tests and comparisons).
 * Setting BF16 packs the model's current weights (again after they change)
 * into a second arena planned here; cx_forward still allocates nothing. */
typedef enum { CX_PRECISION_F32 = 0, CX_PRECISION_BF16 = 1 } cx_precision;
const char *cx_precision_name(cx_precision p);
/* Parses "fp32"/"f32"/"float32" or "bf16"/"bfloat16"; -1 when unknown. */
int cx_precision_parse(const char *s);
cx_status cx_ctx_set_precision(cx_ctx *c, cx_precision p, cx_err *err);
cx_precision cx_ctx_precision(const cx_ctx *c);
/* The precision a context of this backend runs when p is asked for on this
 * machine: p, or F32 where BF16 would only be slower (see above). */
cx_precision cx_precision_effective(cx_backend_id backend, cx_precision p);
/* The bf16 convolution kernel a backend runs on this machine: "amx",
 * "avx512-bf16", "portable" (cpu backend) or "reference"; NULL for an
 * unknown backend. */
const char *cx_bf16_kernel(cx_backend_id backend);
/* The fp32 GEMM a backend runs on this machine: the cpu backend's
 * microkernel of the instruction-set variant chosen for this CPU ("avx512
 * 8x32", "avx2 6x16", "sse2 4x8", "neon 8x8"; CHEXNET_ISA lowers the
 * choice), or "reference"; NULL for an unknown backend. */
const char *cx_gemm_kernel(cx_backend_id backend);
/* How a backend runs 3x3 "same" convolutions here: "winograd F(2x2,3x3)"
 * (the cpu backend, on images whose rows hold at least 12 2x2 tiles; the
 * environment variable CHEXNET_WINOGRAD=0 turns it off) or "direct"; NULL
 * for an unknown backend. */
const char *cx_conv3x3_method(cx_backend_id backend);
/* The cpu backend's instruction-set variant on this machine ("avx512",
 * "avx2", "baseline", "neon", "portable"), and every variant this build
 * has, best first, separated by spaces. */
const char *cx_cpu_variant_name(void);
const char *cx_cpu_variants_built(void);

/* input: n (<= batch) normalised images, layout NCHW [n][in_channels][H][W];
 * logits: [n][num_classes]. Probabilities are cx_sigmoid(logit). */
cx_status cx_forward(cx_ctx *c, const float *input, int n, float *logits,
                     cx_err *err);
float cx_sigmoid(float x);

/* Final feature maps of image i of the last forward (after norm5 + ReLU),
 * copied to dst in layout CHW [C][h][w]; dst may be NULL to query sizes. */
cx_status cx_ctx_features(const cx_ctx *c, int i, float *dst, int *C, int *h,
                          int *w, cx_err *err);

/* A context computes with the weights the model had when it was made (a
 * backend with its own memory holds a copy). After they change (a loaded
 * checkpoint, training), this brings the context up to date (bf16 weights
 * are packed again). On the ref and cpu backends, which compute in the
 * model's own memory, only bf16 has anything to do. */
cx_status cx_ctx_sync_weights(cx_ctx *c, cx_err *err);

/* ------------------------------------------------------------------ images */
/*
 * Decoding (Debian's libpng and libjpeg-turbo; format found from the magic
 * bytes, never the file name). Pixels are exactly what PIL's
 * Image.open(p).convert("RGB") gives (or convert("L") with channels 1):
 *   PNG: grey 1/2/4/8 bit (scaled to 0..255 as PIL), grey+alpha, RGB, RGBA,
 *        palette (with or without tRNS), 16-bit RGB/RGBA/grey+alpha (high
 *        byte, as PIL), interlaced or not. Alpha and tRNS are dropped (PIL
 *        does not composite either).
 *   16-bit grey PNG: PIL maps its mode "I" to RGB by clipping to 255, which
 *        turns nearly every real image white. chexnet instead takes the HIGH
 *        BYTE (v >> 8), the same scaling PIL itself applies to every other
 *        16-bit PNG type, so the full range maps to 0..255.
 *   JPEG: baseline and progressive, grey and YCbCr/RGB (libjpeg's default
 *        ISLOW DCT and fancy upsampling, as PIL); CMYK/YCCK is refused
 *        (CX_EUNSUPPORTED). Any libjpeg warning (corrupt data, premature end
 *        of file, which libjpeg would pad with grey) is an error.
 * Headers claiming a side of 0 (CX_EFORMAT) or above CX_IMAGE_MAX_SIDE
 * (CX_ELIMIT) are refused before any pixel buffer is allocated; truncated
 * files are errors (CX_EFORMAT). Error messages name the file.
 */
#define CX_IMAGE_MAX_SIDE 16384

/* An 8-bit image, layout HWC: pixel (x, y), channel c is
 * data[((size_t)y * width + x) * channels + c]; rows are packed.
 * channels is 1 (grey, PIL "L") or 3 (RGB). */
typedef struct {
    int width, height, channels;
    uint8_t *data;
} cx_image;

/* channels: 3 = RGB (PIL convert("RGB")), 1 = luma (PIL convert("L"):
 * ITU-R 601-2, (19595 R + 38470 G + 7471 B + 32768) >> 16), 0 = as stored
 * (1 for grey sources, 3 otherwise; grey replicated to RGB is what PIL
 * gives, so 0 is exact and 3x cheaper for X-rays). */
cx_status cx_image_load(const char *path, int channels, cx_image *out,
                        cx_err *err);
/* The same from memory; name is used in error messages (may be NULL). */
cx_status cx_image_load_mem(const void *buf, size_t n, const char *name,
                            int channels, cx_image *out, cx_err *err);
/* 1, 2 or 3 when the first bytes are a PNG, JPEG or DICOM signature (n >= 8
 * is enough for PNG and JPEG, 132 for a DICOM file's preamble), else 0. */
int cx_image_sniff(const void *buf, size_t n);
/* Allocates a zeroed image. */
cx_status cx_image_new(int width, int height, int channels, cx_image *out,
                       cx_err *err);
void cx_image_free(cx_image *im); /* frees data, zeroes *im; NULL ok */
/* Converts between 1 and 3 channels (1 -> 3 replicates, 3 -> 1 is PIL's "L"
 * formula above); the same count copies. */
cx_status cx_image_convert(const cx_image *in, int channels, cx_image *out,
                           cx_err *err);

/* Preprocessing (torchvision/PIL semantics). out must not alias in; every
 * function allocates out (free it with cx_image_free). */
/* PIL Image.resize((width, height), Image.BILINEAR) (Pillow >= 7: separable
 * triangle filter widened by the downscale factor, horizontal pass then
 * vertical, 22-bit fixed-point coefficients): bit-exact. */
cx_status cx_image_resize(const cx_image *in, int width, int height,
                          cx_image *out, cx_err *err);
/* cx_image_load(path, channels) followed by cx_image_resize(width, height),
 * with the same pixels, but row by row: each decoded row is resampled
 * horizontally as it arrives and only the rows the vertical pass needs are
 * kept, so the decoded image is never held (interlaced PNGs excepted: libpng
 * assembles them whole, at 8 bits per sample). A 16384 x 16384 X-ray resized
 * to 224 x 224 needs about 16384 x 224 x channels bytes. */
cx_status cx_image_load_resized(const char *path, int channels, int width,
                                int height, cx_image *out, cx_err *err);
/* torchvision transforms.Resize(size) with an int: the shorter side becomes
 * size, the longer int(size * long / short); BILINEAR as above. */
cx_status cx_image_resize_short(const cx_image *in, int size, cx_image *out,
                                cx_err *err);
/* Copies the rectangle at (x, y) of width x height; it must lie inside. */
cx_status cx_image_crop(const cx_image *in, int x, int y, int width,
                        int height, cx_image *out, cx_err *err);
/* torchvision CenterCrop: top = round((H - h) / 2) with round-half-even. */
cx_status cx_image_center_crop(const cx_image *in, int width, int height,
                               cx_image *out, cx_err *err);
cx_status cx_image_flip_h(const cx_image *in, cx_image *out, cx_err *err);
/* torchvision TenCrop(size): out[0..4] = top-left, top-right, bottom-left,
 * bottom-right, center; out[5..9] the same of the horizontally flipped
 * image. */
cx_status cx_image_tencrop(const cx_image *in, int size, cx_image out[10],
                           cx_err *err);
/* ToTensor + Normalize: dst layout CHW [channels][height][width],
 * dst = (v / 255 - mean[c]) / std[c] in float32 as torchvision. channels is
 * 1 or 3; a grey image is replicated to 3 channels; an RGB image given with
 * channels 1 is converted to luma first. */
cx_status cx_image_to_tensor(const cx_image *in, int channels,
                             const float mean[3], const float std[3],
                             float *dst, cx_err *err);

/* Network input from a decoded image, as the PyTorch pipelines of CheXNet:
 *   plain:    Resize((S, S)) -> ToTensor -> Normalize           (1 crop)
 *   ten_crop: Resize(S * 256 / 224) -> TenCrop(S) -> ToTensor -> Normalize
 *             (10 crops, order of cx_image_tencrop; arnoweng/CheXNet)
 * S = in->size; mean/std = in->mean/std; channels = in->channels (1: PIL
 * "L" before resizing). dst layout NCHW [crops][channels][S][S]; its size
 * in floats is cx_input_floats(in, ten_crop). */
size_t cx_input_floats(const cx_input_spec *in, int ten_crop);
cx_status cx_image_to_input(const cx_input_spec *in, const cx_image *im,
                            int ten_crop, float *dst, cx_err *err);
/* Load + preprocess (read straight into the resized image when keep is
 * NULL). If keep is non-NULL it receives the decoded image (as stored: 1 or
 * 3 channels), e.g. for CAM overlays. */
cx_status cx_image_load_to_input(const cx_input_spec *in, const char *path,
                                 int ten_crop, float *dst, cx_image *keep,
                                 cx_err *err);
/* The same for a model's input (cx_model_input_spec). */
size_t cx_image_input_floats(const cx_model *m, int ten_crop);
cx_status cx_image_preprocess(const cx_model *m, const cx_image *im,
                              int ten_crop, float *dst, cx_err *err);
cx_status cx_image_load_input(const cx_model *m, const char *path,
                              int ten_crop, float *dst, cx_image *keep,
                              cx_err *err);

/* Writes an 8-bit grey or RGB PNG atomically (temp file, fsync, rename). */
cx_status cx_image_save_png(const cx_image *im, const char *path, cx_err *err);

/* ------------------------------------------------------------------ DICOM */
/*
 * DICOM input (Debian's DCMTK). cx_image_load and cx_image_load_mem read
 * DICOM files too, found from their content: "DICM" at offset 128 (a Part 10
 * file) or a bare dataset (no preamble: a little-endian group 0x0002 or
 * 0x0008 element first). Transfer syntaxes read: implicit and explicit VR
 * little endian, explicit big endian, deflated, JPEG (baseline, extended,
 * lossless process 14 and SV1), JPEG-LS (lossless and near-lossless) and RLE.
 * JPEG 2000, JPIP and the video syntaxes are refused (CX_EUNSUPPORTED, the
 * message naming the transfer syntax).
 *
 * Greyscale pixels (MONOCHROME1 or MONOCHROME2, 1-16 bits stored in 8 or 16
 * allocated, unsigned or signed) become 8-bit grey in four steps:
 *   1. Modality LUT: the Modality LUT Sequence when present, else
 *      v * RescaleSlope + RescaleIntercept (1 and 0 when absent).
 *   2. VOI: the first VOI LUT of the VOI LUT Sequence (its output scaled to
 *      0..255); else the first WindowCenter/WindowWidth pair with the
 *      VOILUTFunction: LINEAR (the default, PS3.3 C.11.2.1.2.1),
 *      LINEAR_EXACT or SIGMOID; else the full range the stored bits can
 *      hold (after step 1) mapped linearly onto 0..255. LUT inputs outside
 *      the LUT take its first or last entry.
 *   3. Rounding to the nearest integer (floor(y + 0.5)), clamped to 0..255.
 *   4. MONOCHROME1 is inverted (255 - y).
 * So an 8-bit MONOCHROME2 image without LUTs or window keeps its values, and
 * a DICOM made losslessly from a PNG gives exactly the PNG's pixels.
 * Colour: RGB and YBR_FULL, 8 bits per sample, either planar configuration
 * (JPEG's YCbCr is converted to RGB by the decoder, uncompressed YBR_FULL with
 * PS3.3's equations). PALETTE COLOR and colour above 8 bits are refused.
 * Multi-frame files: the first frame, with a warning. The result then takes
 * the same 8-bit path as a PNG (channels as cx_image_load).
 *
 * The model reads frontal chest radiographs. These attributes, when present,
 * are checked, and anything else is a warning (not an error): Modality (CR,
 * DX or DR), BodyPartExamined (CHEST, THORAX or LUNG), ViewPosition (PA or
 * AP; LL, RL, LATERAL... are lateral views), ImageLaterality or Laterality
 * (L or R: one side only).
 */
#define CX_IMAGE_MAX_WARNINGS 8
typedef struct {
    char format[8];             /* "png", "jpeg" or "dicom" */
    int n_warnings;
    char warnings[CX_IMAGE_MAX_WARNINGS][200];
    /* DICOM only (empty or 0 otherwise): */
    char transfer_syntax[68];   /* UID, e.g. "1.2.840.10008.1.2.1" */
    char photometric[20];       /* e.g. "MONOCHROME1" */
    int bits_stored;
    int frames;
    char voi[16];               /* "voi-lut", "window", "full-range", "none" */
} cx_image_info;

/* cx_image_load / cx_image_load_mem that also fill info (which may be NULL);
 * PNG and JPEG give their format and no warnings. */
cx_status cx_image_load_info(const char *path, int channels, cx_image *out,
                             cx_image_info *info, cx_err *err);
cx_status cx_image_load_mem_info(const void *buf, size_t n, const char *name,
                                 int channels, cx_image *out,
                                 cx_image_info *info, cx_err *err);
/* cx_image_load_to_input and cx_image_load_input that also fill info (may
 * be NULL). */
cx_status cx_image_load_to_input_info(const cx_input_spec *in, const char *path,
                                      int ten_crop, float *dst, cx_image *keep,
                                      cx_image_info *info, cx_err *err);
cx_status cx_image_load_input_info(const cx_model *m, const char *path,
                                   int ten_crop, float *dst, cx_image *keep,
                                   cx_image_info *info, cx_err *err);
/* Result objects for a DICOM X-ray, written by chexnet itself: what
 * `chexnet serve` answers at POST /v1/dicom and what the Orthanc script
 * (deploy/orthanc/) stores back into the X-ray's study. Both objects copy
 * the source's Patient and Study modules (same StudyInstanceUID), each
 * starts a new series, and every new UID is a UUID-derived "2.25." UID.
 *   Secondary Capture Image Storage: the RGB image given (the heat map
 *     overlay with its labels burned in), BurnedInAnnotation YES, derived
 *     from the source (SourceImageSequence).
 *   Comprehensive SR: a container "chexnet chest X-ray classification"
 *     holding the source image (IMAGE, "Source of Measurement"), one NUM per
 *     class (concept: the class name in coding scheme 99CHEXNET; value: the
 *     probability as a decimal string, %.9g; unit UCUM {probability}) with
 *     its operating threshold as a child NUM, the heat map (IMAGE, the
 *     Secondary Capture), the model (TEXT), the warnings (TEXT) and
 *     "Research use only, not a medical device." (TEXT). Both images are in
 *     the evidence sequence; VerificationFlag UNVERIFIED.
 * Outputs are Part 10 files (explicit VR little endian) in malloc'd
 * buffers. */
typedef struct {
    const char *model;              /* model file name */
    int n_classes;
    const char *const *classes;
    const float *probabilities;     /* [n_classes] */
    const float *thresholds;        /* [n_classes], or NULL */
    int cam_class;                  /* class of the heat map */
    const cx_image *image;          /* RGB: the Secondary Capture's pixels */
    int n_warnings;
    const char *const *warnings;
} cx_dicom_result;

cx_status cx_dicom_write_results(const void *src, size_t n, const cx_dicom_result *r,
                                 uint8_t **sc, size_t *sc_n, uint8_t **sr,
                                 size_t *sr_n, cx_err *err);
/* A new UID: "2.25." and a random (version 4) UUID as a decimal integer. */
void cx_dicom_new_uid(char uid[65]);

/* --------------------------------------------------------------------- CAM */
/*
 * Class activation maps (Zhou et al. 2016, as in the CheXNet paper):
 * M_c(y, x) = sum_k w[c][k] f_k(y, x) over the final feature maps f (after
 * norm5 + ReLU, cx_ctx_features) with the classifier weight w
 * (cx_model_classifier_weight); the bias is not added.
 */
/* Raw map of class cls for image i of the last cx_forward on c (made with
 * model m): dst layout [h][w] (7 x 7 for a 224 input); dst may be NULL to
 * query h and w. */
cx_status cx_cam_compute(const cx_ctx *c, const cx_model *m, int i, int cls,
                         float *dst, int *h, int *w, cx_err *err);
/* Bilinear upsampling of a [h][w] map to [H][W] with half-pixel centres
 * (PyTorch interpolate(mode="bilinear", align_corners=False), OpenCV
 * resize), then min-max normalisation to [0, 1] (a constant map gives 0).
 * dst layout [H][W]. */
cx_status cx_cam_upsample(const float *cam, int h, int w, int H, int W,
                          float *dst, cx_err *err);
/* Perceptual colour map written for chexnet (CIELAB lightness rising
 * linearly from dark purple through red and orange to light yellow):
 * t in [0, 1] (clamped) to sRGB. */
void cx_cam_colormap(float t, uint8_t rgb[3]);
/* Heat map overlay: the raw map is upsampled to the X-ray's size and
 * normalised (cx_cam_upsample), coloured (cx_cam_colormap) and blended over
 * the X-ray: out = (1 - a) xray + a colour with a = alpha * (0.25 + 0.75 t),
 * so the X-ray stays visible where the model did not look. alpha in [0, 1]
 * (0.5 is a good default). out: a new RGB image of the X-ray's size. */
cx_status cx_cam_overlay(const cx_image *xray, const float *cam, int h, int w,
                         float alpha, cx_image *out, cx_err *err);

/* Colour scale of a heat map.
 *  - CX_CAM_SCALE_IMAGE: the map's own minimum and maximum (after
 *    upsampling) are colours 0 and 1, as cx_cam_upsample: every map has a
 *    hot spot, even a confident negative's.
 *  - CX_CAM_SCALE_MODEL: one fixed range per class, raw map values [lo, hi]
 *    from the model's "cam_range" metadata, clamped: a map below lo is
 *    colour 0 everywhere, so a negative looks cold and colours compare
 *    between images. */
typedef enum { CX_CAM_SCALE_IMAGE = 0, CX_CAM_SCALE_MODEL = 1 } cx_cam_scale;
const char *cx_cam_scale_name(cx_cam_scale s); /* "image", "model" */
/* "image" or "model" (case-insensitive) to *out; -1 on anything else. */
int cx_cam_scale_parse(const char *s, cx_cam_scale *out);

/* The model's "cam_range" metadata: a JSON array of one [lo, hi] pair per
 * class (in the order of "classes"), finite numbers with lo < hi: the raw
 * map values (cx_cam_compute's map) of colours 0 and 1 under the model
 * scale. lo and hi: [n_classes] each. *found = 0 (and CX_OK) when the key
 * is absent; a malformed value is CX_EFORMAT, the message naming model_name
 * (the model file, for messages) and the key. */
cx_status cx_model_cam_range(const cx_model *m, const char *model_name, float *lo,
                             float *hi, int *found, cx_err *err);

/* Upsampling as cx_cam_upsample (bilinear, half-pixel centres) without the
 * normalisation; *min and *max (may be NULL) get the upsampled map's range. */
cx_status cx_cam_upsample_raw(const float *cam, int h, int w, int H, int W, float *dst,
                              float *min, float *max, cx_err *err);
/* The map upsampled to [H][W] and put on a colour scale: t in [0, 1].
 * CX_CAM_SCALE_IMAGE gives cx_cam_upsample's values (lo, hi unused);
 * CX_CAM_SCALE_MODEL maps raw lo..hi to 0..1, clamped. *range_lo and
 * *range_hi (may be NULL) get the raw values of colours 0 and 1. */
cx_status cx_cam_scale_map(const float *cam, int h, int w, int H, int W,
                           cx_cam_scale scale, float lo, float hi, float *dst,
                           float *range_lo, float *range_hi, cx_err *err);

/* How an overlay is drawn (cx_cam_overlay_ex). */
typedef struct {
    float alpha;            /* opacity in [0, 1] (blend as cx_cam_overlay) */
    cx_cam_scale scale;
    float lo, hi;           /* CX_CAM_SCALE_MODEL: the class's raw range   */
    const char *class_name; /* the legend's class (NULL: not named)        */
    float probability;      /* the legend's probability (NaN: not shown)   */
    int legend;             /* 1: add the legend band below the X-ray      */
} cx_cam_style;
/* alpha 0.5, image scale, no class, no probability, legend on. */
void cx_cam_style_default(cx_cam_style *s);

/* The colour scale's ends, and where the legend went (the places are 0
 * without a legend): rows and columns of the output image, ends exclusive. */
typedef struct {
    float lo, hi;           /* the raw map values of colours 0 and 1         */
    int band_y, band_h;     /* the band: rows [band_y, band_y + band_h)     */
    int bar_x0, bar_x1;     /* the colour bar: columns [bar_x0, bar_x1) ... */
    int bar_y0, bar_y1;     /* ... and rows; column x is cx_cam_colormap(
                               (x - bar_x0) / (bar_x1 - bar_x0 - 1))        */
    int font_px;            /* the text's size in pixels                    */
} cx_cam_legend_geom;

/* Heat map overlay with a style. The X-ray region (rows [0, height)) is
 * cx_cam_overlay's blend with t from cx_cam_scale_map; with the legend, a
 * dark band is added below the X-ray, so nothing covers the lungs. It holds
 * the class and probability, the colour bar with the raw map values of its
 * two ends and the scale's name, and "Research use only - not a medical
 * device". Its text and bar are sized from the image's width (the text is
 * 2.5% of it, at least 11 pixels; a line too long for the width wraps), so
 * the legend reads the same at 224 and at 3000 pixels. out: a new RGB image
 * of the X-ray's width and its height plus the band's; geom (may be NULL)
 * gets the legend's place. */
cx_status cx_cam_overlay_ex(const cx_image *xray, const float *cam, int h, int w,
                            const cx_cam_style *style, cx_image *out,
                            cx_cam_legend_geom *geom, cx_err *err);

/* -------------------------------------------------------------- evaluation */
/* Evaluation (src/data/labels.c, src/eval/): label and prediction tables,
 * exact AUROC, ROC curves, operating points, percentile-bootstrap CIs, the
 * reader study of the paper's Table 1, and JSON / HTML reports.
 *
 * Conventions: a label is 0, 1 or CX_LABEL_MISSING (uncertain/blank: such an
 * image is left out of that class). A score s is called positive at threshold
 * t when s >= t (as sklearn's roc_curve). Class names match case-insensitively
 * with '_' and ' ' alike ("Pleural_Thickening" == "pleural thickening").
 * An undefined figure (AUROC of a class without positives or negatives) is
 * NaN in these structs and null in JSON, with a warning: never a number. */

#define CX_LABEL_MISSING (-1)

/* 1 if two class names match (see above). */
int cx_class_name_eq(const char *a, const char *b);

typedef struct cx_labels cx_labels;

/* Loads labels (plain or gzip), auto-detecting the format:
 *  - ChestX-ray14 metadata (Data_Entry_2017*.csv: "Image Index" and
 *    "Finding Labels", '|'-separated or "No Finding"),
 *  - a split list, lines "IMAGE L1 ... L14" (whitespace separated, 0/1, the
 *    classes in CheXNet order, CX_CHESTXRAY14_CLASSES),
 *  - a CSV with an image column ("Image Index", "Image", "Path", "Study",
 *    "File"... else the first column) and 0/1 columns named by class (blank,
 *    -1 and nan are CX_LABEL_MISSING; 1.0/0.0 accepted).
 * classes: the n_classes wanted (NULL: every class the file has); a class the
 * file lacks is an error naming what it has. Duplicate image rows: an error,
 * or a warning when the labels are identical. */
cx_status cx_labels_load(const char *path, int n_classes,
                         const char *const *classes, cx_labels **out,
                         cx_err *err);
void cx_labels_free(cx_labels *l);
const char *cx_labels_format(const cx_labels *l); /* "chestxray14-metadata", "split-list", "csv" */
int cx_labels_num_images(const cx_labels *l);
int cx_labels_num_classes(const cx_labels *l);
const char *cx_labels_class(const cx_labels *l, int k);
const char *cx_labels_image(const cx_labels *l, int i);
/* Row of an image: the exact id if present, else by file name (basename).
 * Returns -1 if absent, -2 if the file name is ambiguous. */
int cx_labels_find(const cx_labels *l, const char *image);
int cx_labels_get(const cx_labels *l, int i, int k); /* 0, 1, CX_LABEL_MISSING */
int cx_labels_num_warnings(const cx_labels *l);
const char *cx_labels_warning(const cx_labels *l, int i);

/* A table of scores: image ids and one column per class. */
typedef struct {
    int n_images, n_classes;
    char **images;
    char **classes;
    double *scores;     /* [n_images][n_classes] */
    int n_warnings;
    char **warnings;
} cx_pred_table;

/* Reads a predictions CSV: the image column (named as for labels, else the
 * first column) and one numeric column per class. Non-numeric or non-finite
 * scores are errors (file:line); scores outside [0,1] are allowed with a
 * warning (AUROC is rank-based). Duplicate images: error, or a warning (and
 * the row dropped) when identical. */
cx_status cx_pred_load(const char *path, cx_pred_table **out, cx_err *err);
cx_status cx_pred_new(int n_images, int n_classes, const char *const *classes,
                      cx_pred_table **out, cx_err *err);
cx_status cx_pred_set_image(cx_pred_table *p, int i, const char *image, cx_err *err);
/* Writes "image,<class>..." with %.9g scores, atomically. */
cx_status cx_pred_save(const cx_pred_table *p, const char *path, cx_err *err);
void cx_pred_free(cx_pred_table *p);

/* Exact AUROC: the Mann-Whitney statistic with tied scores counted half,
 * equal to the trapezoid area of the ROC with ties collapsed (identical to
 * sklearn.metrics.roc_auc_score). Entries with a label other than 0/1 are
 * ignored. Returns 1, or 0 when undefined (no positives or no negatives;
 * *auc = NaN). */
int cx_auroc(const double *score, const int8_t *label, size_t n, double *auc);

/* ROC points as sklearn.metrics.roc_curve: (0,0) first (threshold +inf),
 * then one point per distinct score, descending; drop_intermediate removes
 * collinear points as sklearn does. Arrays malloc'd (free()). Degenerate
 * classes give NaN rates where sklearn would divide by zero. */
cx_status cx_roc_curve(const double *score, const int8_t *label, size_t n,
                       int drop_intermediate, double **fpr, double **tpr,
                       double **thresholds, size_t *n_points, cx_err *err);

typedef struct { double tp, fp, tn, fn; } cx_confusion;
cx_confusion cx_confusion_at(const double *score, const int8_t *label, size_t n,
                             double threshold);

/* Bits of cx_binary_metrics.zero_division: a denominator was 0 and the figure
 * set to 0, as sklearn's zero_division=0 ("warn") does. */
enum { CX_ZD_SENS = 1, CX_ZD_SPEC = 2, CX_ZD_PPV = 4, CX_ZD_NPV = 8, CX_ZD_F1 = 16 };
typedef struct {
    double sensitivity; /* TP/(TP+FN), sklearn recall_score                 */
    double specificity; /* TN/(TN+FP), recall of the negative class          */
    double ppv;         /* TP/(TP+FP), precision_score                       */
    double npv;         /* TN/(TN+FN), precision of the negative class       */
    double f1;          /* 2TP/(2TP+FP+FN), f1_score                         */
    unsigned zero_division;
} cx_binary_metrics;
void cx_metrics_from_confusion(const cx_confusion *c, cx_binary_metrics *m);

typedef enum { CX_OP_THRESHOLD = 0, CX_OP_MAXF1, CX_OP_YOUDEN } cx_op_rule;
const char *cx_op_rule_name(cx_op_rule r); /* "threshold", "maxf1", "youden" */
/* The threshold (one of the scores) maximising F1 or Youden's J
 * (sensitivity + specificity - 1) with positives s >= t; ties go to the
 * larger threshold. Returns 0 if undefined (no positives or negatives). */
int cx_choose_threshold(const double *score, const int8_t *label, size_t n,
                        cx_op_rule rule, double *threshold);

/* Bootstrap resample b of n items for a seed: the same on every machine and
 * thread count. PRNG: xoshiro256** whose state is 4 successive outputs of
 * splitmix64 started at (seed ^ (0x9E3779B97F4A7C15 * (b + 1))); each index is
 * Lemire's unbiased bounded draw on the upper 32 bits of a xoshiro output:
 * m = x * n (64-bit), reject while (uint32)m < (2^32 - n) % n, index m >> 32. */
void cx_bootstrap_indices(uint64_t seed, uint64_t b, uint32_t n, uint32_t *idx);
/* q-th percentile (0..100) of v[0..m) with numpy's default linear
 * interpolation; sorts v in place. NaN if m == 0. */
double cx_percentile(double *v, size_t m, double q);

/* A figure with its percentile-bootstrap 95% CI (NaN when absent/undefined). */
typedef struct {
    double value, lo, hi;
} cx_stat;

/* Provenance of a report: the software, the time, the command and every
 * input file with its SHA-256 (OpenSSL's libcrypto). Reports print it when
 * their result's `provenance` points to one. */
typedef struct {
    char *role;             /* "predictions", "labels", "reader bc4", ...  */
    char *path;             /* as given                                    */
    char sha256[65];        /* lowercase hex                               */
    long long size;         /* bytes                                       */
} cx_prov_input;
typedef struct {
    char version[32];       /* CX_VERSION                                  */
    char created[32];       /* UTC, ISO 8601: 2026-11-30T15:50:08Z         */
    char *command_line;     /* the arguments, shell-quoted where needed    */
    int n_inputs;
    cx_prov_input *inputs;
} cx_provenance;
/* SHA-256 of a file's bytes as 64 lowercase hex digits (+ NUL); *size: bytes
 * read (may be NULL). */
cx_status cx_sha256_file(const char *path, char hex[65], long long *size, cx_err *err);
/* Fills p: version, the current UTC time, and the command line: program (if
 * not NULL) and argv, each quoted for a POSIX shell when it needs it. */
cx_status cx_provenance_init(cx_provenance *p, const char *program, int argc,
                             char *const *argv, cx_err *err);
/* Hashes path and appends it to p's inputs under role. */
cx_status cx_provenance_add_input(cx_provenance *p, const char *role, const char *path,
                                  cx_err *err);
void cx_provenance_free(cx_provenance *p);
/* Localisation: heat maps against radiologists' boxes (src/cam/localize.c).
 * A box is x, y (top left), w, h in the original image's pixels, the frame
 * of ChestX-ray14's BBox_List_2017.csv; a pixel (px, py) belongs to a box
 * when its centre (px + 0.5, py + 0.5) lies in [x, x + w) x [y, y + h). An
 * item is one image and one class with at least one box of that class; its
 * raw map (cx_cam_compute) is upsampled to the original image's size
 * (cx_cam_upsample_raw: the network saw the whole image, resized), then:
 *  - pointing game: the share of the map's maximal pixels that lie in a box
 *    (1 or 0 for a single peak; with tied maxima, e.g. the plateau that
 *    upsampling makes at a border, the chance that a peak chosen among them
 *    falls in a box);
 *  - IoU: the pixels of the upsampled map with v - min >= threshold *
 *    (max - min) (in double: all of them for a constant map, only the peaks
 *    at threshold 1) against the union of the boxes:
 *    |map & boxes| / |map | boxes|.
 * Per class and overall, the means over items, with percentile-bootstrap
 * 95% CIs over images: resample b draws the group's images with
 * cx_bootstrap_indices(seed, b, number of images in the group) and takes
 * the mean over the items of the drawn images. */
typedef struct {
    double x, y, w, h;
} cx_box;
typedef struct {
    int image;              /* image id: items of one image share it        */
    int cls;                /* class index in [0, n_classes)                */
    const float *map;       /* raw map [h][w]                                */
    int h, w;
    int width, height;      /* the original image's size (the boxes' frame) */
    int n_boxes;
    const cx_box *boxes;
} cx_loc_item;
typedef struct {
    double threshold;       /* fraction of the map's range, in [0, 1] (0.5) */
    int n_bootstrap;        /* resamples (10000); 0: no CIs                  */
    uint64_t seed;          /* 0                                             */
} cx_loc_opts;
void cx_loc_opts_default(cx_loc_opts *o);
typedef struct {
    int n_items, n_images;
    cx_stat pointing, iou;  /* NaN when the group has no items               */
} cx_loc_stat;
typedef struct {
    int n_classes;
    cx_loc_stat *per_class; /* [n_classes]                                   */
    cx_loc_stat overall;
    int n_items;
    double *hit, *iou;      /* [n_items]: each item's figures                */
} cx_loc_result;
/* One item's pointing-game score and IoU. */
cx_status cx_loc_item_eval(const cx_loc_item *it, double threshold, double *hit,
                           double *iou, cx_err *err);
cx_status cx_localize(const cx_loc_item *items, int n_items, int n_classes,
                      const cx_loc_opts *opts, cx_loc_result *out, cx_err *err);
void cx_loc_result_free(cx_loc_result *r);
/* A list of radiologists' boxes: ChestX-ray14's BBox_List_2017.csv (plain
 * or gzip), "Image Index,Finding Label,x,y,w,h" by position (the official
 * header reads "Bbox [x,y,w,h]" and has trailing empty fields). The label
 * "Infiltrate" is read as "Infiltration", the class's name everywhere else.
 * Read with the CSV reader's limits (cx_limits); a bad row is CX_EFORMAT
 * naming the file and line. */
typedef struct {
    char *image;            /* as in the file, e.g. "00002578_000.png"       */
    char *label;            /* the finding                                   */
    cx_box box;
    long line;              /* 1-based line in the file                      */
} cx_box_entry;
typedef struct {
    int n;
    cx_box_entry *v;
} cx_box_list;
cx_status cx_box_list_read(const char *path, cx_box_list *out, cx_err *err);
void cx_box_list_free(cx_box_list *l);

typedef struct {
    int n_bootstrap;        /* resamples (10000); 0: no CIs */
    uint64_t seed;          /* 0 by default */
    cx_op_rule rule;        /* how the operating point is chosen          */
    double threshold;       /* CX_OP_THRESHOLD: the threshold (0.5)       */
    int calib_bins;         /* reliability diagram / ECE: equal-width bins
                               of [0,1] (10)                               */
    int band_points;        /* ROC band: FPR grid 0, 1/(G-1), ..., 1 with
                               G points (101)                              */
    int roc_bands;          /* 1: bootstrap the ROC bands (default); 0: the
                               curve on the grid only (saves time)         */
} cx_eval_opts;

/* One bin of a reliability diagram: scores in (lo, hi] (the first bin also
 * holds lo = 0), as sklearn.calibration.calibration_curve(strategy=
 * "uniform"); mean_pred and frac_pos NaN when n == 0. */
typedef struct {
    double lo, hi;
    long n, n_pos;
    double mean_pred, frac_pos;
} cx_calib_bin;
void cx_eval_opts_default(cx_eval_opts *o);

typedef struct {
    char name[64];
    int n, n_pos, n_neg, n_missing;   /* images with a label, ...       */
    int defined;                      /* both classes present            */
    cx_stat auroc;
    double threshold;                 /* operating point                 */
    int threshold_from_val;           /* chosen on validation predictions*/
    cx_confusion conf;
    cx_binary_metrics point;          /* at the threshold on the test set */
    cx_stat sens, spec, ppv, npv, f1;
    long boot_skipped;                /* degenerate resamples            */
    long boot_zero_div[5];            /* per metric (sens..f1)            */
    size_t roc_n;                     /* ROC (drop_intermediate)         */
    double *roc_fpr, *roc_tpr, *roc_thr;
    /* ROC band: at FPR band_fpr[g] the curve's TPR (band_tpr) and the 2.5th
     * and 97.5th percentiles over the bootstrap resamples (band_lo, band_hi;
     * NaN without a bootstrap). TPR at FPR f: the highest TPR of the points
     * at FPR f, else linear between the neighbouring points. */
    int band_n;
    double *band_fpr, *band_tpr, *band_lo, *band_hi;
    long band_skipped;                /* degenerate resamples            */
    /* Calibration (labelled images; undefined when a score is outside
     * [0,1]): ECE = sum over bins of n_b/N |mean score - fraction positive|,
     * with its percentile-bootstrap CI. */
    int calib_defined;
    cx_stat ece;
    int n_bins;
    cx_calib_bin *bins;
} cx_class_eval;

typedef struct {
    int n_images, n_classes;
    cx_class_eval *cls;
    cx_stat mean_auroc;               /* over the defined classes         */
    int n_mean_classes;
    long mean_skipped;                /* resamples with a degenerate class */
    int n_bootstrap;
    uint64_t seed;
    cx_op_rule rule;
    double boot_seconds;              /* wall time of the bootstrap       */
    int threads;
    int n_warnings;
    char **warnings;
    int calib_bins, band_points;
    /* set by the caller before writing reports (not owned): */
    const cx_provenance *provenance;  /* NULL: no provenance section     */
    int json_roc_bands;               /* 1: the ROC bands in the JSON     */
} cx_eval_result;

/* Evaluates pred against labels (matched by image id / file name; every
 * image needs a label), choosing operating points on val (may be NULL: then
 * the fixed opts->threshold) with the same labels table. */
cx_status cx_evaluate(const cx_pred_table *pred, const cx_labels *labels,
                      const cx_pred_table *val, const cx_eval_opts *opts,
                      cx_eval_result **out, cx_err *err);
void cx_eval_free(cx_eval_result *r);
/* {"n_images":..,"auroc":{"<class>":{"value":x,"ci95":[lo,hi]},..},
 *  "mean_auroc":{..},"operating_points":{..},...}: atomic. */
cx_status cx_eval_write_json(const cx_eval_result *r, const char *path, cx_err *err);
/* Creates DIR if needed and writes DIR/report.html (self-contained: tables
 * and ROC curves as inline SVG), DIR/roc.svg (all classes, with a legend),
 * DIR/roc_panels.svg (one panel per class, operating point marked, bootstrap
 * band shaded) and DIR/reliability.svg (reliability diagrams); with two or
 * more classes, all ChestX-ray14's, the CheXNet paper's Table 2 beside ours
 * (cited); the
 * provenance when r->provenance is set. title may be NULL. The JSON adds
 * "calibration", "roc_band" (when r->json_roc_bands) and "provenance". */
cx_status cx_eval_write_report(const cx_eval_result *r, const char *dir,
                               const char *title, cx_err *err);
/* Writes the first n_resamples bootstrap resamples' indices (one line each)
 * of n items, for checking against an independent implementation. */
cx_status cx_bootstrap_dump(uint64_t seed, uint32_t n, int n_resamples,
                            const char *path, cx_err *err);

/* Reader study (CheXNet's Table 1 protocol) for one class: every labeller's
 * F1 against each of the other readers as ground truth (a reader against the
 * K-1 others, a model against all K readers), averaged; the readers' average;
 * per model the difference model - reader average; percentile-bootstrap 95%
 * CIs over image resamples (the same resamples for every figure). */
typedef struct {
    const char *name;
    const char *path;
} cx_rater;

typedef struct {
    const char *class_name;
    int n_readers;               /* >= 2 */
    const cx_rater *readers;
    int n_models;                /* >= 1 */
    const cx_rater *models;
    const char *truth_path;      /* optional extra ground truth (NULL)      */
    double threshold;            /* model scores >= threshold are positive  */
    int threshold_given;         /* else: 0/1 decisions, or 0.5 + a warning */
    int n_bootstrap;             /* 10000 */
    uint64_t seed;
} cx_readers_opts;

typedef struct {
    char name[64];
    int is_model;
    cx_stat f1;                  /* mean F1 over the other readers as truth */
    double *pair_f1;             /* [n_readers]: F1 vs reader j (NaN = self) */
    cx_stat f1_truth;            /* vs truth_path (NaN without)             */
    int n_pos;                   /* positive calls                          */
    /* against truth_path (NaN / empty without): the operating point, and
     * for a model its ROC curve (sklearn's roc_curve) and AUROC from its
     * scores (a model of 0/1 decisions has a 3-point curve) */
    double sens_truth, spec_truth;
    cx_confusion conf_truth;
    double auroc_truth;
    size_t roc_n;
    double *roc_fpr, *roc_tpr, *roc_thr;
} cx_rater_result;

typedef struct {
    char class_name[64];
    int n_images, n_readers, n_models;
    cx_rater_result *raters;     /* readers first, then models */
    cx_stat reader_avg;
    cx_stat reader_avg_truth;    /* readers' average vs truth_path */
    cx_stat *diff;               /* [n_models]: model - reader average */
    int *significant;            /* [n_models]: CI of diff excludes 0 */
    int has_truth;
    int n_bootstrap;
    uint64_t seed;
    double threshold;
    int n_warnings;
    char **warnings;
    /* the readers' mean operating point against truth_path (NaN without):
     * the means of their FPRs (1 - specificity) and TPRs (sensitivity) */
    double reader_mean_fpr, reader_mean_tpr;
    const cx_provenance *provenance; /* set by the caller (not owned) */
} cx_readers_result;

cx_status cx_readers_run(const cx_readers_opts *o, cx_readers_result **out,
                         cx_err *err);
void cx_readers_free(cx_readers_result *r);
/* {"class", "n_images", "readers": {"<name>": {"f1": {"value", "ci95"},
 * "f1_vs": {...}, ...}}, "models": {...}, "reader_average": {...},
 * "difference": {"<model>": {"value", "ci95", "significant"}}, ...}: atomic. */
cx_status cx_readers_write_json(const cx_readers_result *r, const char *path,
                                cx_err *err);
/* Creates DIR if needed and writes DIR/report.html: the Table 1 equivalent,
 * the differences with their conclusion, and the pairwise F1 matrix; with a
 * truth, the operating points against it and the figure of the models' ROC
 * curves with each reader's point and their mean (also DIR/roc_readers.svg);
 * the provenance when r->provenance is set. The JSON adds "vs_truth" and
 * "provenance". */
cx_status cx_readers_write_report(const cx_readers_result *r, const char *dir,
                                  cx_err *err);

/* ------------------------------------------------- datasets, splits, loader */
/*
 * Datasets, patient-level splits, packed datasets and the threaded training
 * loader (src/data/dataset.c, split.c, pack.c, loader.c).
 *
 * Usage (a trainer):
 *   cx_dataset_opts o;
 *   cx_dataset_opts_default(&o);
 *   o.labels = "Data_Entry_2017_v2020.csv.gz"; o.task = "pneumonia";
 *   o.image_dir = "images";                  // searched recursively
 *   cx_dataset *ds;
 *   if (cx_dataset_load(&o, &ds, &err)) ...  // or cx_pack_open("x.cxpack")
 *   cx_split sp;
 *   double f[3] = {0.7, 0.1, 0.2};
 *   cx_split_random(ds, f, seed, &sp, &err); // or cx_split_from_lists()
 *   cx_split_write(ds, &sp, "run/", &err);   // run/train.txt val.txt test.txt
 *   cx_loader_opts lo;
 *   cx_loader_opts_default(&lo);             // batch 16, cx_input_spec_default
 *   cx_model_normalization(m, lo.mean, lo.std);
 *   lo.augment = 1; lo.seed = seed;          // flips; shuffle is on
 *   cx_loader *tr;                           // fails if images are missing
 *   cx_loader_new(ds, sp.index[CX_SPLIT_TRAIN], sp.count[CX_SPLIT_TRAIN],
 *                 &lo, &tr, &err);
 *   for (int epoch = 0; ...; epoch++) {
 *       cx_loader_start_epoch(tr, epoch, 0, &err);  // resume: batch position
 *       int n;
 *       while (!(st = cx_loader_next(tr, x, y, NULL, &n, &err)) && n > 0)
 *           ... x: [n][C][S][S] normalised, y: [n][K] 0/1 ...
 *   }
 *   cx_loader_free(tr); cx_split_free(&sp); cx_dataset_free(ds);
 *
 * Determinism: the split depends only on (dataset, fractions, seed); the
 * order of epoch e on (seed, e); the flip and every other augmentation of
 * an image on (seed, e, image index): never on the number of threads or on
 * timing.
 */

typedef struct cx_dataset cx_dataset;

typedef struct {
    /* Label source (plain or gzip), format detected from the content:
     *  - ChestX-ray14 metadata Data_Entry_2017*.csv ("Image Index",
     *    "Finding Labels" '|'-separated or "No Finding", "Patient ID"),
     *  - a split list, lines "IMAGE L1 ... L14" (0/1, CheXNet order;
     *    patient = the part of the file name before '_'),
     *  - a manifest CSV: a "path" column (else an image column as for
     *    cx_labels_load), 0/1 class columns, optional patient column,
     *  - a pack made by cx_pack_write (as cx_pack_open; task/classes then
     *    select among the pack's classes).
     * May be NULL when lists are given: the dataset is then the union of the
     * lists, which must carry labels ("IMAGE L1 ... L14"). */
    const char *labels;
    /* Image lists (used by cx_split_from_lists; listed here only when they
     * are the label source). */
    const char *const *lists;
    int n_lists;
    /* Folder with the images. ChestX-ray14 names are looked up in it
     * recursively (e.g. images_001/images/NAME.png); manifest paths are
     * relative to it (default: the manifest's folder). NULL: images are
     * not resolved (enough for splits; the loader needs them). */
    const char *image_dir;
    /* "pneumonia" (1 class), "all14" (CX_CHESTXRAY14_CLASSES) or NULL:
     * all14 for ChestX-ray14 sources; for a manifest every column holding
     * only 0/1 (except path/patient/split columns). */
    const char *task;
    /* Explicit classes instead of task (matched with cx_class_name_eq,
     * so "Pneumonia" finds a column "pneumonia"). */
    int n_classes;
    const char *const *classes;
    /* Manifest patient column; NULL: "patient", "patient_key",
     * "patient_id", "Patient ID" if present, else one patient per image
     * (with a warning). */
    const char *patient_column;
} cx_dataset_opts;

void cx_dataset_opts_default(cx_dataset_opts *o); /* zeroes */

/* Loads a dataset. Errors name file and line: malformed rows, findings or
 * labels that are not 0/1 / not in the class list, duplicate images with
 * different labels. Images are resolved against image_dir when given
 * (missing ones are reported by cx_dataset_check_images, not here). */
cx_status cx_dataset_load(const cx_dataset_opts *o, cx_dataset **out,
                          cx_err *err);
void cx_dataset_free(cx_dataset *ds);

int cx_dataset_size(const cx_dataset *ds);             /* images */
int cx_dataset_num_classes(const cx_dataset *ds);      /* K */
const char *cx_dataset_class(const cx_dataset *ds, int k);
/* "chestxray14-metadata", "split-list", "manifest" or "pack". */
const char *cx_dataset_source(const cx_dataset *ds);
const char *cx_dataset_name(const cx_dataset *ds, int i);    /* image id */
const char *cx_dataset_path(const cx_dataset *ds, int i);    /* NULL: not found / pack */
int cx_dataset_num_patients(const cx_dataset *ds);
int cx_dataset_patient(const cx_dataset *ds, int i);         /* 0..patients-1 */
const char *cx_dataset_patient_id(const cx_dataset *ds, int p);
/* Labels, layout [n_images][K], values 0/1. */
const uint8_t *cx_dataset_labels(const cx_dataset *ds);
/* Row of an image by id or file name; -1 absent, -2 ambiguous name. */
int cx_dataset_find(const cx_dataset *ds, const char *name);
int cx_dataset_num_warnings(const cx_dataset *ds);
const char *cx_dataset_warning(const cx_dataset *ds, int i);
/* Resolves images against a folder (as image_dir above). */
cx_status cx_dataset_set_image_dir(cx_dataset *ds, const char *dir, cx_err *err);
/* CX_EMISSING unless every image idx[0..n) (idx NULL: all) has a file (or
 * pixels in a pack); the message gives how many are missing and the first
 * few. */
cx_status cx_dataset_check_images(const cx_dataset *ds, const int *idx, int n,
                                  cx_err *err);
/* Pixels of image i: decoded from its file (channels as cx_image_load), or
 * from the pack (as stored there, converted when channels is 1 or 3). */
cx_status cx_dataset_image(const cx_dataset *ds, int i, int channels,
                           cx_image *out, cx_err *err);

/* Patient-level split. part: 0 train, 1 val, 2 test, -1 in no part. */
enum { CX_SPLIT_TRAIN = 0, CX_SPLIT_VAL = 1, CX_SPLIT_TEST = 2, CX_SPLIT_PARTS = 3 };
extern const char *const CX_SPLIT_NAMES[3];  /* "train", "val", "test" */

typedef struct {
    int n_images, n_classes;
    int8_t *part;              /* [n_images] */
    int count[3];              /* images per part */
    int *index[3];             /* dataset indices of each part, ascending */
    int patients[3];           /* distinct patients per part */
    int *positives;            /* [3][n_classes] positive images */
    int crossing_patients;     /* patients with images in 2+ parts (lists) */
    int n_warnings;
    char **warnings;           /* e.g. a non-empty part without positives */
} cx_split;

/* Random patient-level split: patients are shuffled (seed) and dealt in that
 * order, each to the part where the midpoint of its images falls on the
 * cumulative fractions (so image fractions miss the targets by at most half
 * a patient). fractions: 3 values >= 0 summing to 1 (+-1e-6). */
cx_status cx_split_random(const cx_dataset *ds, const double fractions[3],
                          uint64_t seed, cx_split *out, cx_err *err);
/* Split from list files (one image name per line, optionally followed by
 * labels: "IMAGE L1 ... LK"; names matched by id or file name). val may be
 * NULL: a random patient-level val_fraction of train's images becomes val
 * (for NIH's train_val_list.txt / test_list.txt). test may be NULL. Names
 * absent from the dataset or in two lists are errors (file:line); patients
 * in two lists give a warning. */
cx_status cx_split_from_lists(const cx_dataset *ds, const char *train,
                              const char *val, const char *test,
                              double val_fraction, uint64_t seed,
                              cx_split *out, cx_err *err);
/* Recomputes counts, patients, positives and warnings from part[]. */
cx_status cx_split_update(const cx_dataset *ds, cx_split *s, cx_err *err);
/* Writes DIR/train.txt, val.txt, test.txt ("IMAGE L1 ... LK", the
 * 14 ChestX-ray14 labels for ChestX-ray14 sources, else the dataset's
 * K classes), atomically. */
cx_status cx_split_write(const cx_dataset *ds, const cx_split *s,
                         const char *dir, cx_err *err);
void cx_split_free(cx_split *s);

/* Packed datasets: images decoded and resized once (PIL-exact bilinear to
 * size x size), stored as uint8 with names, labels and patients, read back
 * by mmap. channels: 0 = per image, 1 channel when the image is grey
 * (stored grey, or RGB with R = G = B everywhere) else RGB (exact for 3-
 * and 1-channel models alike for grey X-rays); 1 = all luma (PIL "L" before
 * resizing: exact for 1-channel models); 3 = all RGB.
 * File layout (little-endian): 64-byte header (magic "CXPACK\r\n", version,
 * count, size, channel mode, classes), class names, pixel data (image after
 * image, [size][size][c] HWC), index (per image: pixel offset, channels,
 * original size, name, patient, labels), 64-byte trailer (offsets, CRC-32
 * of the index, end magic). Written atomically. */
#define CX_PACK_VERSION 1
typedef struct {
    int size;       /* 224 */
    int channels;   /* 0, 1 or 3 (above) */
    int threads;    /* decode threads (0: cx_get_threads()) */
} cx_pack_opts;
void cx_pack_opts_default(cx_pack_opts *o);
/* Progress callback (called from the calling thread). */
typedef void (*cx_data_progress_fn)(void *user, long done, long total);
/* Packs images idx[0..n) (idx NULL: all) of ds; every image must exist. */
cx_status cx_pack_write(const cx_dataset *ds, const int *idx, int n,
                        const cx_pack_opts *o, const char *path,
                        cx_data_progress_fn progress, void *user, cx_err *err);
/* Opens and validates a pack (magic, version, sizes against the file
 * length, index CRC, offsets, labels 0/1) as a dataset. */
cx_status cx_pack_open(const char *path, cx_dataset **out, cx_err *err);
int cx_dataset_pack_size(const cx_dataset *ds);  /* side; 0 if not a pack */

/* Training augmentation beyond the horizontal flip (every field 0: none, the
 * default). Each image of epoch e goes through, in this order:
 *   1. crop (crop_scale set): a box of the source image chosen as
 *      torchvision's RandomResizedCrop(scale, ratio) does (up to 10 draws of
 *      area fraction s ~ U(scale) and aspect r = exp(U(log ratio)),
 *      w = round(sqrt(s A r)), h = round(sqrt(s A / r)), kept when it fits,
 *      position uniform; else the centre box of the nearest allowed aspect).
 *      From files the box is cut from the decoded image, at full resolution,
 *      before the resize; from a pack, from the pack's pixels (already at
 *      the pack's size: a box of a pack at the input size is enlarged back
 *      to it).
 *   2. resize of the box (or the image) to size x size, PIL-exact bilinear
 *      with antialiasing (as without augmentation);
 *   3. horizontal flip (augment);
 *   4. on the pixel values x in [0, 1] (v / 255, in float), as
 *      torchvision's functional adjust_* on float tensors, factors
 *      ~ U[lo, hi):
 *      brightness f in [max(0, 1 - b), 1 + b]: x = clamp(f x, 0, 1);
 *      contrast f in [max(0, 1 - c), 1 + c]: x = clamp(f x + (1 - f) m, 0, 1),
 *        m the image's mean grey level (0.2989 R + 0.587 G + 0.114 B for 3
 *        channels, the plane's mean for 1);
 *      gamma g in [1 - g, 1 + g]: x = clamp(x^g, 0, 1);
 *   5. rotation by an angle ~ U[-rotate, rotate) degrees, counter-clockwise,
 *      about the image centre, bilinear, the area outside the source image
 *      black (x = 0), its edge blended as
 *      torchvision.transforms.functional.rotate(tensor, angle, BILINEAR)
 *      (grid_sample, zeros padding, align_corners=False); last, so that
 *      the corners stay black and the contrast's mean is the image's own;
 *   6. Normalize(mean, std).
 * Every draw is a function of (seed, epoch, dataset index), one stream per
 * operation (turning one on does not change another's draws). */
typedef struct {
    double crop_scale[2]; /* {0, 0}: no crop; else 0 < lo <= hi <= 1 */
    double crop_ratio[2]; /* w / h range, 0 < lo <= hi; {0, 0}: 3/4, 4/3 */
    double rotate;        /* degrees, 0..180; 0: none */
    double brightness;    /* >= 0; 0: none */
    double contrast;      /* >= 0; 0: none */
    double gamma;         /* 0 <= g < 1; 0: none */
} cx_augment;

/* What is drawn for one image (cx_augment_draw), or given (cx_augment_apply). */
typedef struct {
    int flip;
    int crop;                           /* 1: the box below, in source pixels */
    int crop_x, crop_y, crop_w, crop_h;
    double angle;                       /* degrees, counter-clockwise; 0: none */
    double brightness, contrast, gamma; /* factors; 1: none */
} cx_augment_params;

/* The training/validation loader: batches of a subset of a dataset, made by
 * background threads ahead of the caller (prefetch). Each image: pixels
 * (decoded, or from the pack), PIL-exact resize to size x size when needed,
 * horizontal flip with p = 0.5 if augment (deterministic in (seed, epoch,
 * image)), ToTensor + Normalize(mean, std); with aug (cx_augment) also a
 * crop before the resize and brightness, contrast, gamma and rotation
 * after the flip. From files this is exactly
 * torchvision's Resize((S, S)) -> RandomHorizontalFlip -> ToTensor ->
 * Normalize on PIL's convert("RGB") (or "L" for 1 channel). From a pack of
 * the same size it is the same, except that a 1-channel loader reading RGB
 * entries converts to luma after resizing (pack with channels 1 for
 * exactness); a pack of another size is resized again from its pixels. */
typedef struct {
    int batch;          /* 16 */
    int size;           /* 224: output side */
    int channels;       /* 3, or 1 for 1-channel models */
    float mean[3], std[3]; /* ImageNet by default */
    int shuffle;        /* 1: a new order per epoch from (seed, epoch) */
    int augment;        /* 0: random horizontal flip when 1 */
    int drop_last;      /* 0: the last batch may be smaller */
    uint64_t seed;      /* 0 */
    int threads;        /* worker threads (0: cx_get_threads()) */
    int prefetch;       /* batches made ahead (2) */
    int shard, shards;  /* 0, 1: of every batch of n images only images
                           [n*shard/shards, n*(shard+1)/shards) are made
                           (data-parallel ranks); batch numbering, order and
                           augmentation are those of the whole batch */
    cx_augment aug;     /* the augmentations besides the flip (all off) */
} cx_loader_opts;
void cx_loader_opts_default(cx_loader_opts *o);

typedef struct cx_loader cx_loader;
/* The dataset must outlive the loader. Fails (CX_EMISSING) if any image of
 * idx[0..n) has no file. */
cx_status cx_loader_new(const cx_dataset *ds, const int *idx, int n,
                        const cx_loader_opts *o, cx_loader **out, cx_err *err);
void cx_loader_free(cx_loader *l);
int cx_loader_num_batches(const cx_loader *l);
/* Starts epoch `epoch` at batch start_batch (0..num_batches; resume). */
cx_status cx_loader_start_epoch(cx_loader *l, int epoch, int start_batch,
                                cx_err *err);
/* The next batch: x layout NCHW [batch][channels][size][size] floats,
 * y layout [batch][K] floats 0/1, ids (may be NULL) [batch] dataset indices;
 * *n images (0 at the end of the epoch). Buffers sized for a full batch.
 * Without cx_loader_start_epoch, epoch 0 starts at batch 0. A decoding
 * error is returned here (naming the file). */
cx_status cx_loader_next(cx_loader *l, float *x, float *y, int *ids, int *n,
                         cx_err *err);
/* Whether image `image` (dataset index) is flipped in epoch `epoch`. */
int cx_loader_flips(const cx_loader_opts *o, int epoch, int image);
/* Seconds cx_loader_next spent waiting for workers (loader stalls). */
double cx_loader_wait_seconds(const cx_loader *l);
/* The options the loader was made with. */
const cx_loader_opts *cx_loader_options(const cx_loader *l);

/* Refuses (CX_EARG, naming the field and the allowed range) values outside
 * those documented at cx_augment. cx_loader_new checks them too. */
cx_status cx_augment_check(const cx_augment *a, cx_err *err);
/* 1 when any augmentation of a besides the flip is on. */
int cx_augment_active(const cx_augment *a);
/* The parameters of image `image` (dataset index) in epoch `epoch` under
 * the loader options o, for a source image of width x height pixels (the
 * decoded file, or the pack entry): what the loader applies. */
void cx_augment_draw(const cx_loader_opts *o, int epoch, int image, int width, int height,
                     cx_augment_params *p);
/* Applies p to an image (1 or 3 channels; a 1-channel input of RGB pixels
 * becomes luma after the resize) and writes the network input dst
 * [in->channels][size][size]: steps 1-6 of cx_augment. The loader's result
 * for an image equals this on the image's pixels with cx_augment_draw's
 * parameters, bit for bit. */
cx_status cx_augment_apply(const cx_image *src, const cx_augment_params *p,
                           const cx_input_spec *in, float *dst, cx_err *err);
/* The augmentation of o as one line of JSON (written into buf, at most n
 * bytes; returns the length it needs), e.g. {"flip": true, "crop_scale":
 * [0.8, 1], "crop_ratio": [0.9, 1.1], "rotate": 5, "brightness": 0.1,
 * "contrast": 0, "gamma": 0}; "crop_scale" and "crop_ratio" are null
 * without a crop. */
size_t cx_augment_describe(const cx_loader_opts *o, char *buf, size_t n);

/* ---------------------------------------------------------------- training */
/*
 * Training (src/train/): forward in training mode (BatchNorm with batch
 * statistics, running statistics updated with momentum 0.1 and unbiased
 * variance, as PyTorch), the paper's losses, backward into parameter
 * gradients, Adam with PyTorch's semantics, ReduceLROnPlateau, checkpoints.
 * Memory-efficient as in Pleiss et al. 2017: the BN-ReLU outputs feeding each
 * convolution are recomputed in backward, not stored; dense blocks keep one
 * shared buffer per block. All buffers are planned by cx_train_new.
 *
 *   cx_train *t; cx_train_new(model, 16, 224, 224, CX_BACKEND_CPU, &t, &err);
 *   cx_train_set_loss_weights(t, wpos, wneg);      (pneumonia: weighted BCE)
 *   for each batch: cx_train_step(t, x, y, n, &loss, &err);   (gradients)
 *                   cx_adam_step(t, lr, &err);                (update)
 */

/* Binary cross-entropy on logits, numerically stable:
 *   L = sum_k mean_n [ -wpos_k y log s(z) - wneg_k (1 - y) log(1 - s(z)) ]
 * logits, labels: [n][K]; wpos/wneg: [K] or NULL for 1. With one class and
 * wpos = |N|/(|P|+|N|), wneg = |P|/(|P|+|N|) it is the paper's weighted BCE;
 * with 14 classes and NULL weights, the sum of 14 unweighted BCEs.
 * dlogits ([n][K], may be NULL) receives dL/dlogits. */
double cx_bce_loss(const float *logits, const float *labels, int n, int K, const float *wpos,
                   const float *wneg, float *dlogits);

typedef struct cx_train cx_train;

typedef struct {
    float beta1, beta2, eps, weight_decay; /* 0.9, 0.999, 1e-8, 0 */
    float bn_momentum;                     /* 0.1 */
} cx_train_opts;
void cx_train_opts_default(cx_train_opts *o);

/* Plans every training buffer for (model, batch, H, W). opts may be NULL. */
cx_status cx_train_new(cx_model *m, int batch, int height, int width, cx_backend_id backend,
                       const cx_train_opts *opts, cx_train **out, cx_err *err);
void cx_train_free(cx_train *t);
size_t cx_train_arena_bytes(const cx_train *t);

/* Per-class loss weights (arrays of num_classes, copied); NULL = 1. */
cx_status cx_train_set_loss_weights(cx_train *t, const float *wpos, const float *wneg,
                                    cx_err *err);

/* One forward (training mode) and backward over n images: input NCHW
 * [n][C][H][W] normalised, labels [n][K] 0/1. Zeroes and fills the
 * gradients, updates the BatchNorm running statistics, returns the loss.
 * A non-finite loss is an error (CX_ENUMERIC) and changes no weights. */
cx_status cx_train_step(cx_train *t, const float *input, const float *labels, int n,
                        double *loss, cx_err *err);
/* Logits [n][K] of the last cx_train_step. */
const float *cx_train_logits(const cx_train *t);
/* The trainer updates the weights and running statistics where its backend
 * computes; this brings them into the model (before saving it or
 * validating with a context). Nothing to do on the ref and cpu backends,
 * which compute in the model's own memory. */
cx_status cx_train_sync_model(cx_train *t, cx_err *err);
/* Gradient of model tensor i (cx_model_tensor order), NULL for running
 * statistics. Same layout as the tensor. */
float *cx_train_grad(cx_train *t, int i);

/* Adam (PyTorch semantics: L2 weight decay added to the gradient, bias
 * correction, eps added to sqrt(v_hat)) over all trainable tensors. */
cx_status cx_adam_step(cx_train *t, float lr, cx_err *err);
int64_t cx_adam_steps(const cx_train *t);
/* Adam moments of tensor i (NULL for running statistics). */
float *cx_adam_m(cx_train *t, int i);
float *cx_adam_v(cx_train *t, int i);
void cx_adam_set_steps(cx_train *t, int64_t steps);

/* ReduceLROnPlateau (mode min, relative threshold), as PyTorch. */
typedef struct {
    double lr, factor, threshold, min_lr, best;
    int patience, cooldown, num_bad_epochs, cooldown_counter;
} cx_plateau;
void cx_plateau_init(cx_plateau *p, double lr, double factor, int patience, double threshold);
/* Feeds one validation loss; returns 1 if the learning rate was reduced. */
int cx_plateau_step(cx_plateau *p, double val_loss);
/* A copy of src whose classifier has num_classes outputs: every other tensor
 * is copied, the new head is initialised as torchvision does (Linear default
 * weight, bias 0) from seed. Class names: the defaults for num_classes. */
cx_status cx_model_with_head(const cx_model *src, int num_classes, uint64_t seed,
                             cx_model **out, cx_err *err);

/* The training loop of `chexnet train` (src/train/trainer.c). Per epoch: the
 * training pass (Adam, per-step progress), validation loss and per-class
 * AUROC in eval mode, ReduceLROnPlateau on the validation loss, the
 * lowest-validation-loss model saved as OUT/best.safetensors, a checkpoint
 * OUT/last.safetensors (model + Adam moments + schedule + position, one
 * atomic file; cx_model_load ignores its "optimizer." tensors) and a line of
 * OUT/log.jsonl. Resuming from last.safetensors continues exactly: an
 * interrupted run ends with the same weights as an uninterrupted one.
 * The train loader's augmentation (cx_augment_describe) is written into the
 * model's metadata as "augmentation" (best.safetensors and the
 * checkpoint); a resume whose loader augments otherwise is refused. */
typedef struct {
    int epoch, epochs;        /* 0-based epoch, total */
    int batch, n_batches;     /* batch just done (1-based) */
    long step;                /* Adam steps so far */
    double loss, avg_loss;    /* this batch's loss, epoch mean so far */
    double images_per_s;      /* this epoch, this run */
    double lr;
} cx_train_progress;

typedef struct {
    int epoch;                /* 0-based */
    double train_loss, val_loss;
    int n_classes;
    const char *const *classes;
    const double *val_auroc;  /* [n_classes], NaN where undefined */
    double mean_val_auroc;    /* over defined classes */
    double lr, next_lr;
    int best;                 /* this epoch gave the lowest val loss so far */
    double seconds, images_per_s;
    double peak_rss_mb;
    const char *json;         /* the log.jsonl line */
    /* where the run stands (also in the log line) */
    int lr_divisions;         /* times the learning rate was divided so far
                                 (this epoch's division included) */
    int best_epoch;           /* 0-based epoch of the lowest loss so far */
    double best_loss;         /* its validation loss (training loss without
                                 a validation loader) */
    int epochs_since_best;    /* epochs ended since then (0: this one) */
    int stop_met;             /* the stopping condition holds (see
                                 cx_trainer_opts.stop_decays) */
    int stopping;             /* ... and the run ends here because of it */
} cx_epoch_report;

/* Where a resumed run continues. */
typedef struct {
    const char *path;         /* the checkpoint read */
    int epoch, epochs;        /* 0-based epoch it continues (epochs: all done) */
    int batch, n_batches;     /* 0-based next batch of that epoch */
    long step;                /* Adam steps done so far */
    int stopped;              /* 1: the stopping condition already held at
                                 the end of epoch `epoch` (with
                                 stop_when_met: nothing is left to run) */
} cx_resume_info;

/* Data-parallel training: the collective operations of a group of ranks
 * (processes) training one model, supplied by the caller (the CLI's comes
 * from MPI). Every rank calls the same operations in the same order; a
 * failing operation returns an error and the caller stops the whole group
 * (the library never waits on a rank that has failed: the caller aborts).
 * Results must be the same on every rank (MPI_Allreduce's are). */
typedef struct cx_comm {
    int rank, size;           /* this rank, number of ranks */
    void *user;
    /* v[0..n) = sum over ranks of v[0..n), in place, blocking */
    cx_status (*allreduce_f64)(void *user, double *v, size_t n, cx_err *err);
    /* starts the same sum over n floats in place; it completes by wait_all
     * (the caller does not touch v meanwhile); progress lets started sums
     * advance and may be called at any time */
    cx_status (*iallreduce_f32)(void *user, float *v, size_t n, cx_err *err);
    cx_status (*progress)(void *user, cx_err *err);
    cx_status (*wait_all)(void *user, cx_err *err);
    /* bytes of buf from rank root to every rank */
    cx_status (*bcast)(void *user, void *buf, size_t bytes, int root, cx_err *err);
} cx_comm;

typedef struct {
    int epochs;               /* 10 */
    int batch;                /* 16: must equal the loaders' batch (the
                                 global batch with a comm: each rank's
                                 loaders make their shard of it) */
    int image_size;           /* 0: the model's input size; must equal the loaders' */
    double lr;                /* 1e-3 */
    double lr_factor;         /* 0.1 */
    int patience;             /* 0: divide when an epoch does not improve */
    double threshold;         /* 1e-4 (relative, as PyTorch) */
    int checkpoint_every;     /* steps between mid-epoch checkpoints; 0: none */
    long max_steps;           /* stop after this many steps in this run (with
                                 a checkpoint), wherever they end: mid-epoch
                                 or at an epoch's end (after its validation,
                                 best model, checkpoint and log line); 0: no
                                 limit */
    /* The stopping condition, checked at each epoch's end and reported in
     * its log line: the learning rate has been divided stop_decays times
     * (2), or stop_patience epochs (3) have ended without a lower loss
     * than the best; 0 leaves that part out. With stop_when_met the run
     * ends at the end of the epoch where it holds (status CX_OK; the
     * checkpoint is of the next epoch's start, and a resume with it ends at
     * once). */
    int stop_decays, stop_patience, stop_when_met;
    int log_steps;            /* 1: also a line per step in OUT/log.jsonl,
                                 {"step": S, "epoch": E, "batch": B,
                                 "loss": L, "lr": X} (E, B 1-based; epoch
                                 lines begin with "epoch") */
    const char *out_dir;      /* required */
    int resume;               /* continue from out_dir/last.safetensors */
    cx_backend_id backend;
    cx_train_opts train;      /* Adam and BatchNorm settings */
    const float *wpos, *wneg; /* loss weights [K] (NULL: 1) */
    cx_dtype best_dtype;      /* dtype of best.safetensors (F32) */
    /* Called after every step; a nonzero return stops the run (with a
     * checkpoint, status CX_EINTERRUPTED). May be NULL. */
    int (*on_step)(void *user, const cx_train_progress *p);
    void (*on_epoch)(void *user, const cx_epoch_report *r);
    /* Called once when resuming, after the checkpoint is read. May be NULL. */
    void (*on_resume)(void *user, const cx_resume_info *r);
    void *user;
    /* Data-parallel training (NULL: one process). Each rank computes its
     * shard of every batch; gradients are summed in buckets of
     * bucket_bytes (0: 4 MiB) started while the backward pass runs
     * (overlap = 1) or all at its end (overlap = 0). Rank 0 alone writes
     * the checkpoints, the log and the best model; on resume it reads the
     * checkpoint and sends it to the others. */
    const cx_comm *comm;
    int sync_bn;              /* BatchNorm statistics over the global batch */
    int no_overlap;           /* 1: gradient sums after the backward pass */
    size_t bucket_bytes;
} cx_trainer_opts;
void cx_trainer_opts_default(cx_trainer_opts *o);

/* Runs training of m (updated in place) on the train loader (augmenting),
 * validating on the val loader (not augmenting; may be NULL: no validation,
 * best = last). Returns CX_OK when all epochs are done, CX_EINTERRUPTED
 * when stopped by on_step or max_steps before that (checkpoint written; the
 * message says where), CX_ENUMERIC on a non-finite loss (the last checkpoint
 * is kept, nothing newer is written). */
cx_status cx_trainer_run(cx_model *m, cx_loader *train, cx_loader *val,
                         const cx_trainer_opts *o, cx_err *err);

#ifdef __cplusplus
}
#endif
#endif /* CHEXNET_H */
