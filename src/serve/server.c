/* server.c - `chexnet serve`: HTTP on libmicrohttpd, one thread per
 * connection; inference through the batcher (batcher.c).
 *
 * Routes:
 *   GET  /             the viewer (viewer/index.html, embedded)
 *   GET  /healthz      200 "ok" (503 while shutting down)
 *   GET  /metrics      Prometheus text format (metrics.c)
 *   GET  /v1/model     the model: file name, classes, thresholds, colour map
 *   POST /v1/predict   image bytes (PNG, JPEG or DICOM) -> JSON probabilities
 *                      (with the model's temperature) and "positive" per
 *                      class (probability >= the class's threshold);
 *                      ?cam=CLASS (or "auto": the most probable) adds the
 *                      heat map overlay as a PNG in base64; &layers=1 adds
 *                      the X-ray and the coloured map as separate PNGs (the
 *                      viewer blends them with its opacity slider);
 *                      &cam_scale=image|model the map's colour scale (as
 *                      chexnet predict --cam-scale; the same default)
 *   POST /v1/dicom     a DICOM X-ray -> the result objects for its study
 *                      (multipart/related of application/dicom parts)
 * Errors are JSON {"error": "..."}: 400 corrupt, 401 token, 404, 405,
 * 413 too large, 415 not an image, 500, 503 shutting down.
 *
 * With a token (--token-file), /v1/... and /metrics need the header
 * "Authorization: Bearer TOKEN"; / and /healthz stay open. Binding to an
 * address other than loopback needs a token.
 *
 * SIGTERM or SIGINT: the listening socket closes, requests in flight are
 * answered (for up to drain_s seconds), then the process exits 0.
 */
#define _GNU_SOURCE
#include "serve/serve.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <malloc.h>
#include <math.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CAM_ALPHA 0.5f
#define LAYER_MAX_SIDE 1024

typedef struct {
    const serve_opts *o;
    cx_model *m;
    char model_name[256];
    int nc;
    float *thresholds;
    serve_batcher *b;
    int cam_h, cam_w;
    float *cam_lo, *cam_hi;   /* the model's cam_range, or NULL */
    cx_cam_scale cam_scale;   /* the default: model with a cam_range, else image */
    atomic_int stopping;
    pthread_mutex_t mu;
    pthread_cond_t idle;
    long inflight;
} server;

typedef struct {
    int route;
    double t0;
    uint8_t *body;
    size_t n, cap;
    int too_large;
    unsigned status; /* set once a response is queued */
} req;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ------------------------------------------------------------ responses */

static enum MHD_Result send_buf(server *S, struct MHD_Connection *c, req *r, unsigned status,
                                const char *ctype, void *data, size_t n, int owned,
                                const char *const *headers)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        n, data, owned ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!resp) {
        if (owned)
            free(data);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    for (int i = 0; headers && headers[i]; i += 2)
        MHD_add_response_header(resp, headers[i], headers[i + 1]);
    if (atomic_load(&S->stopping))
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ret = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    r->status = status;
    return ret;
}

static enum MHD_Result send_error(server *S, struct MHD_Connection *c, req *r, unsigned status,
                                  const char *const *headers, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 6, 7)))
#endif
    ;
static enum MHD_Result send_error(server *S, struct MHD_Connection *c, req *r, unsigned status,
                                  const char *const *headers, const char *fmt, ...)
{
    char msg[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    sbuf b = {0};
    sb_puts(&b, "{\"error\": ");
    sb_json_str(&b, msg);
    sb_puts(&b, "}\n");
    if (b.oom) {
        free(b.p);
        static char oom[] = "{\"error\": \"out of memory\"}\n";
        return send_buf(S, c, r, 503, "application/json", oom, sizeof oom - 1, 0, headers);
    }
    return send_buf(S, c, r, status, "application/json", b.p, b.n, 1, headers);
}

static unsigned http_status(cx_status st)
{
    switch (st) {
    case CX_ELIMIT: return 413;
    case CX_EUNSUPPORTED: return 415;
    case CX_ENOMEM: return 503;
    case CX_EFORMAT:
    case CX_ESHAPE:
    case CX_EARG:
    case CX_EMISSING: return 400;
    default: return 500;
    }
}

/* ------------------------------------------------------------ /v1/predict */

static int class_index(server *S, const char *name)
{
    for (int k = 0; k < S->nc; k++)
        if (!strcasecmp(name, cx_model_class_name(S->m, k)))
            return k;
    return -1;
}

/* the X-ray (shrunk to LAYER_MAX_SIDE) and its coloured map with the blend
 * weight of cx_cam_overlay in the alpha channel, as two PNGs in base64 */
static cx_status add_layers(server *S, sbuf *out, const cx_image *xray, const float *cam,
                            const cx_cam_style *sty, cx_err *err)
{
    cx_image small = {0};
    const cx_image *x = xray;
    cx_status st = CX_OK;
    int side = xray->width > xray->height ? xray->width : xray->height;
    if (side > LAYER_MAX_SIDE) {
        int w = (int)lround((double)xray->width * LAYER_MAX_SIDE / side);
        int h = (int)lround((double)xray->height * LAYER_MAX_SIDE / side);
        if ((st = cx_image_resize(xray, w < 1 ? 1 : w, h < 1 ? 1 : h, &small, err)))
            return st;
        x = &small;
    }
    size_t np = (size_t)x->width * x->height;
    float *t = malloc(sizeof(float) * np);
    uint8_t *rgba = malloc(4 * np);
    uint8_t *png = NULL;
    size_t n = 0;
    if (!t || !rgba) {
        st = cx_seterr(err, CX_ENOMEM, "out of memory");
        goto out;
    }
    if ((st = cx_cam_scale_map(cam, S->cam_h, S->cam_w, x->height, x->width, sty->scale,
                               sty->lo, sty->hi, t, NULL, NULL, err)))
        goto out;
    for (size_t i = 0; i < np; i++) {
        cx_cam_colormap(t[i], rgba + 4 * i);
        float tt = t[i] < 0 ? 0 : t[i] > 1 ? 1 : t[i];
        rgba[4 * i + 3] = (uint8_t)lrintf(255.0f * (0.25f + 0.75f * tt));
    }
    if ((st = serve_png_encode(x->data, x->width, x->height, x->channels, &png, &n, err)))
        goto out;
    sb_puts(out, ", \"xray_png_base64\": \"");
    sb_base64(out, png, n);
    free(png);
    png = NULL;
    if ((st = serve_png_encode(rgba, x->width, x->height, 4, &png, &n, err)))
        goto out;
    sb_puts(out, "\", \"heatmap_png_base64\": \"");
    sb_base64(out, png, n);
    sb_puts(out, "\"");
out:
    free(png);
    free(t);
    free(rgba);
    cx_image_free(&small);
    return st;
}

/* Decodes body, runs the network (with a heat map unless cam_class is -1).
 * On failure returns the HTTP status and fills msg. */
typedef struct {
    cx_image im;          /* the decoded X-ray, as stored (1 or 3 channels) */
    cx_image_info info;
    float *logits, *cam;
    int cam_used;
} inference;

static void inference_free(inference *f)
{
    cx_image_free(&f->im);
    free(f->logits);
    free(f->cam);
}

static unsigned infer(server *S, const uint8_t *body, size_t n, int cam_class, inference *f,
                      char *msg, size_t msg_n)
{
    memset(f, 0, sizeof *f);
    cx_err err = {0};
    cx_status st = cx_image_load_mem_info(body, n, "request body", 0, &f->im, &f->info, &err);
    if (st) {
        snprintf(msg, msg_n, "%s", err.msg);
        return http_status(st);
    }
    size_t nin = cx_image_input_floats(S->m, 0);
    float *input = malloc(sizeof(float) * nin);
    f->logits = malloc(sizeof(float) * (size_t)S->nc);
    if (cam_class != -1)
        f->cam = malloc(sizeof(float) * (size_t)S->cam_h * S->cam_w);
    if (!input || !f->logits || (cam_class != -1 && !f->cam)) {
        free(input);
        snprintf(msg, msg_n, "out of memory");
        return 503;
    }
    if ((st = cx_image_preprocess(S->m, &f->im, 0, input, &err))) {
        free(input);
        snprintf(msg, msg_n, "%s", err.msg);
        return http_status(st);
    }
    serve_job job = {0};
    job.input = input;
    job.cam_class = cam_class;
    job.logits = f->logits;
    job.cam = f->cam;
    st = serve_batcher_run(S->b, &job);
    free(input);
    if (st) {
        snprintf(msg, msg_n, "inference failed: %s", job.err);
        return 500;
    }
    f->cam_used = job.cam_used;
    return 200;
}

static enum MHD_Result handle_predict(server *S, struct MHD_Connection *c, req *r)
{
    const char *cam_arg = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "cam");
    const char *layers_arg = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "layers");
    const char *scale_arg = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "cam_scale");
    cx_cam_scale scale = S->cam_scale;
    if (scale_arg && cx_cam_scale_parse(scale_arg, &scale))
        return send_error(S, c, r, 400, NULL, "unknown cam_scale '%s' (image or model)",
                          scale_arg);
    if (scale == CX_CAM_SCALE_MODEL && !S->cam_lo && cam_arg)
        return send_error(S, c, r, 400, NULL,
                          "cam_scale=model: the model %s has no \"cam_range\" metadata (the "
                          "fixed range of each class's maps; chexnet calibrate adds it); use "
                          "cam_scale=image",
                          S->model_name);
    int cam_class = -1;
    if (cam_arg) {
        if (!*cam_arg || !strcasecmp(cam_arg, "auto"))
            cam_class = -2;
        else if ((cam_class = class_index(S, cam_arg)) < 0) {
            sbuf names = {0};
            for (int k = 0; k < S->nc; k++)
                sb_printf(&names, "%s%s", k ? ", " : "", cx_model_class_name(S->m, k));
            enum MHD_Result ret =
                send_error(S, c, r, 400, NULL, "unknown class '%s' for cam (the model's: %s; "
                           "or auto)", cam_arg, names.p ? names.p : "");
            free(names.p);
            return ret;
        }
    }
    int layers = layers_arg && strcmp(layers_arg, "0") && cam_class != -1;
    if (r->n == 0)
        return send_error(S, c, r, 415, NULL,
                          "empty body: send the image bytes (PNG, JPEG or DICOM)");
    if (!cx_image_sniff(r->body, r->n))
        return send_error(S, c, r, 415, NULL,
                          "not an image: the body is neither PNG, JPEG nor DICOM");

    cx_err err = {0};
    cx_status st;
    enum MHD_Result ret;
    inference f;
    char msg[1200];
    unsigned code = infer(S, r->body, r->n, cam_class, &f, msg, sizeof msg);
    if (code != 200) {
        ret = send_error(S, c, r, code, NULL, "%s", msg);
        goto out;
    }
    const cx_image im = f.im;
    const cx_image_info info = f.info;
    const float *logits = f.logits, *cam = f.cam;

    sbuf o = {0};
    sb_puts(&o, "{\"probabilities\": {");
    for (int k = 0; k < S->nc; k++) {
        if (k)
            sb_puts(&o, ", ");
        sb_json_str(&o, cx_model_class_name(S->m, k));
        /* the float chexnet predict prints, with as many digits */
        float p = cx_model_probability(S->m, k, logits[k]);
        sb_printf(&o, ": %.9g", p);
    }
    sb_puts(&o, "}, \"model\": ");
    sb_json_str(&o, S->model_name);
    sb_puts(&o, ", \"warnings\": [");
    for (int w = 0; w < info.n_warnings; w++) {
        if (w)
            sb_puts(&o, ", ");
        sb_json_str(&o, info.warnings[w]);
    }
    /* at or above the class's operating threshold (as /v1/model gives it) */
    sb_puts(&o, "], \"positive\": {");
    for (int k = 0; k < S->nc; k++) {
        if (k)
            sb_puts(&o, ", ");
        sb_json_str(&o, cx_model_class_name(S->m, k));
        sb_puts(&o, cx_model_probability(S->m, k, logits[k]) >= S->thresholds[k] ? ": true"
                                                                                : ": false");
    }
    sb_puts(&o, "}");
    if (cam_class != -1) {
        cx_image ov = {0};
        uint8_t *png = NULL;
        size_t n = 0;
        cx_cam_style sty;
        cx_cam_style_default(&sty);
        sty.alpha = CAM_ALPHA;
        sty.scale = scale;
        if (scale == CX_CAM_SCALE_MODEL) {
            sty.lo = S->cam_lo[f.cam_used];
            sty.hi = S->cam_hi[f.cam_used];
        }
        sty.class_name = cx_model_class_name(S->m, f.cam_used);
        sty.probability = cx_sigmoid(logits[f.cam_used]);
        cx_cam_legend_geom geom;
        st = cx_cam_overlay_ex(&im, cam, S->cam_h, S->cam_w, &sty, &ov, &geom, &err);
        if (!st)
            st = serve_png_encode(ov.data, ov.width, ov.height, 3, &png, &n, &err);
        cx_image_free(&ov);
        if (!st) {
            sb_puts(&o, ", \"cam_class\": ");
            sb_json_str(&o, cx_model_class_name(S->m, f.cam_used));
            sb_printf(&o, ", \"cam_scale\": \"%s\", \"cam_range\": [%.9g, %.9g]",
                      cx_cam_scale_name(scale), geom.lo, geom.hi);
            sb_puts(&o, ", \"cam_png_base64\": \"");
            sb_base64(&o, png, n);
            sb_puts(&o, "\"");
        }
        free(png);
        if (!st && layers)
            st = add_layers(S, &o, &im, cam, &sty, &err);
        if (st) {
            free(o.p);
            ret = send_error(S, c, r, http_status(st) == 400 ? 500 : http_status(st), NULL,
                             "heat map: %s", err.msg);
            goto out;
        }
    }
    sb_puts(&o, "}\n");
    if (o.oom) {
        free(o.p);
        ret = send_error(S, c, r, 503, NULL, "out of memory");
        goto out;
    }
    ret = send_buf(S, c, r, 200, "application/json", o.p, o.n, 1, NULL);
out:
    inference_free(&f);
    return ret;
}

/* ------------------------------------------------------------ small routes */

static enum MHD_Result handle_model(server *S, struct MHD_Connection *c, req *r)
{
    sbuf o = {0};
    sb_puts(&o, "{\"model\": ");
    sb_json_str(&o, S->model_name);
    sb_puts(&o, ", \"classes\": [");
    for (int k = 0; k < S->nc; k++) {
        if (k)
            sb_puts(&o, ", ");
        sb_json_str(&o, cx_model_class_name(S->m, k));
    }
    sb_puts(&o, "], \"thresholds\": {");
    for (int k = 0; k < S->nc; k++) {
        if (k)
            sb_puts(&o, ", ");
        sb_json_str(&o, cx_model_class_name(S->m, k));
        sb_printf(&o, ": %.9g", S->thresholds[k]);
    }
    sb_printf(&o, "}, \"input_size\": %d, \"cam_alpha\": %g, \"cam_scale\": \"%s\", "
              "\"cam_scales\": [\"image\"%s]",
              cx_model_input_size(S->m), CAM_ALPHA, cx_cam_scale_name(S->cam_scale),
              S->cam_lo ? ", \"model\"" : "");
    sb_puts(&o, ", \"colormap\": [");
    for (int i = 0; i < 256; i++) {
        uint8_t rgb[3];
        cx_cam_colormap(i / 255.0f, rgb);
        sb_printf(&o, "%s[%u, %u, %u]", i ? ", " : "", rgb[0], rgb[1], rgb[2]);
    }
    sb_puts(&o, "], \"notice\": \"research use only, not a medical device\"}\n");
    if (o.oom) {
        free(o.p);
        return send_error(S, c, r, 503, NULL, "out of memory");
    }
    return send_buf(S, c, r, 200, "application/json", o.p, o.n, 1, NULL);
}

/* ------------------------------------------------------------ dispatch */

static int route_of(const char *url)
{
    if (!strcmp(url, "/") || !strcmp(url, "/index.html"))
        return SERVE_ROUTE_VIEWER;
    if (!strcmp(url, "/healthz"))
        return SERVE_ROUTE_HEALTHZ;
    if (!strcmp(url, "/metrics"))
        return SERVE_ROUTE_METRICS;
    if (!strcmp(url, "/v1/model"))
        return SERVE_ROUTE_MODEL;
    if (!strcmp(url, "/v1/predict"))
        return SERVE_ROUTE_PREDICT;
    if (!strcmp(url, "/v1/dicom"))
        return SERVE_ROUTE_DICOM;
    return SERVE_ROUTE_OTHER;
}

static int token_ok(server *S, struct MHD_Connection *c)
{
    const char *t = S->o->token;
    if (!t)
        return 1;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7))
        return 0;
    h += 7;
    while (*h == ' ')
        h++;
    size_t n = strlen(t), m = strlen(h);
    while (m > 0 && (h[m - 1] == ' ' || h[m - 1] == '\t'))
        m--;
    /* constant time in the token's length */
    unsigned char diff = (unsigned char)(n != m);
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)(t[i] ^ (i < m ? h[i] : 0));
    return diff == 0;
}

/* ------------------------------------------------------------ /v1/dicom */

/* The X-ray's result objects (cx_dicom_write_results): a Secondary Capture
 * of the heat map overlay with the probabilities burned in, and a
 * Structured Report, as multipart/related (the DICOMweb STOW payload form). */
static enum MHD_Result handle_dicom(server *S, struct MHD_Connection *c, req *r)
{
    if (r->n == 0 || cx_image_sniff(r->body, r->n) != 3)
        return send_error(S, c, r, 415, NULL, "not a DICOM file: POST a DICOM X-ray here");
    inference f;
    char msg[1200];
    unsigned code = infer(S, r->body, r->n, -2, &f, msg, sizeof msg);
    if (code != 200) {
        inference_free(&f);
        return send_error(S, c, r, code, NULL, "%s", msg);
    }
    cx_err err = {0};
    cx_image ov = {0};
    uint8_t *sc = NULL, *sr = NULL;
    size_t scn = 0, srn = 0;
    float *prob = malloc(sizeof(float) * (size_t)S->nc);
    const char **names = malloc(sizeof(char *) * (size_t)S->nc);
    const char **warn = malloc(sizeof(char *) * (CX_IMAGE_MAX_WARNINGS + 1));
    char (*lines)[160] = malloc(sizeof *lines * (size_t)(S->nc + 4 + CX_IMAGE_MAX_WARNINGS));
    const char **lp = malloc(sizeof(char *) * (size_t)(S->nc + 4 + CX_IMAGE_MAX_WARNINGS));
    enum MHD_Result ret;
    cx_status st = prob && names && warn && lines && lp ? CX_OK : CX_ENOMEM;
    /* the overlay without the legend band: the Secondary Capture keeps the
     * X-ray's rows and columns (its labels are burned in at the top) */
    cx_cam_style sty;
    cx_cam_style_default(&sty);
    sty.alpha = CAM_ALPHA;
    sty.legend = 0;
    sty.scale = S->cam_scale;
    if (!st && S->cam_scale == CX_CAM_SCALE_MODEL) {
        sty.lo = S->cam_lo[f.cam_used];
        sty.hi = S->cam_hi[f.cam_used];
    }
    if (!st)
        st = cx_cam_overlay_ex(&f.im, f.cam, S->cam_h, S->cam_w, &sty, &ov, NULL, &err);
    if (st) {
        ret = send_error(S, c, r, st == CX_ENOMEM ? 503 : 500, NULL, "heat map: %s",
                         st == CX_ENOMEM ? "out of memory" : err.msg);
        goto out;
    }
    int nl = 0;
    snprintf(lines[nl++], 160, "RESEARCH USE ONLY - NOT A MEDICAL DEVICE");
    snprintf(lines[nl++], 160, "chexnet %s, model %.100s", CX_VERSION, S->model_name);
    for (int k = 0; k < S->nc; k++) {
        names[k] = cx_model_class_name(S->m, k);
        prob[k] = cx_model_probability(S->m, k, f.logits[k]);
        snprintf(lines[nl++], 160, "%-20s %.3f%s", names[k], prob[k],
                 prob[k] >= S->thresholds[k] ? "  (at or above threshold)" : "");
    }
    snprintf(lines[nl++], 160, "heat map: %s (colour scale: %s)", names[f.cam_used],
             S->cam_scale == CX_CAM_SCALE_MODEL ? "the model's fixed range"
                                                 : "this image's min-max");
    for (int w = 0; w < f.info.n_warnings; w++) {
        warn[w] = f.info.warnings[w];
        snprintf(lines[nl++], 160, "WARNING: %s", f.info.warnings[w]);
    }
    for (int i = 0; i < nl; i++)
        lp[i] = lines[i];
    serve_burn_text(&ov, lp, nl);
    cx_dicom_result res = {0};
    res.model = S->model_name;
    res.n_classes = S->nc;
    res.classes = names;
    res.probabilities = prob;
    res.thresholds = S->thresholds;
    res.cam_class = f.cam_used;
    res.image = &ov;
    res.n_warnings = f.info.n_warnings;
    res.warnings = warn;
    if ((st = cx_dicom_write_results(r->body, r->n, &res, &sc, &scn, &sr, &srn, &err))) {
        ret = send_error(S, c, r, st == CX_EMISSING ? 400 : http_status(st), NULL, "%s",
                         err.msg);
        goto out;
    }
    /* a boundary found in neither object */
    char boundary[48];
    for (int tries = 0;; tries++) {
        char u[65];
        cx_dicom_new_uid(u);
        snprintf(boundary, sizeof boundary, "chexnet-%.30s", u + 5);
        if (!memmem(sc, scn, boundary, strlen(boundary)) &&
            !memmem(sr, srn, boundary, strlen(boundary)))
            break;
        if (tries > 8) {
            ret = send_error(S, c, r, 500, NULL, "no multipart boundary found");
            goto out;
        }
    }
    sbuf o = {0};
    const uint8_t *part[2] = {sc, sr};
    size_t part_n[2] = {scn, srn};
    for (int i = 0; i < 2; i++) {
        sb_printf(&o, "--%s\r\nContent-Type: application/dicom\r\nContent-Length: %zu\r\n\r\n",
                  boundary, part_n[i]);
        sb_put(&o, part[i], part_n[i]);
        sb_puts(&o, "\r\n");
    }
    sb_printf(&o, "--%s--\r\n", boundary);
    if (o.oom) {
        free(o.p);
        ret = send_error(S, c, r, 503, NULL, "out of memory");
        goto out;
    }
    char ctype[160];
    snprintf(ctype, sizeof ctype, "multipart/related; type=\"application/dicom\"; boundary=%s",
             boundary);
    ret = send_buf(S, c, r, 200, ctype, o.p, o.n, 1, NULL);
out:
    inference_free(&f);
    cx_image_free(&ov);
    free(sc);
    free(sr);
    free(prob);
    free(names);
    free(warn);
    free(lines);
    free(lp);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    server *S = cls;
    req *r = *con_cls;
    (void)version;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r)
            return MHD_NO;
        r->t0 = now_s();
        r->route = route_of(url);
        *con_cls = r;
        pthread_mutex_lock(&S->mu);
        S->inflight++;
        pthread_mutex_unlock(&S->mu);
        serve_metrics_inflight(1);

        int is_get = !strcmp(method, MHD_HTTP_METHOD_GET) || !strcmp(method, MHD_HTTP_METHOD_HEAD);
        int is_post = !strcmp(method, MHD_HTTP_METHOD_POST);
        int wants_post = r->route == SERVE_ROUTE_PREDICT || r->route == SERVE_ROUTE_DICOM;
        if (r->route == SERVE_ROUTE_OTHER)
            return send_error(S, c, r, 404, NULL, "no such resource: %s", url);
        if (wants_post ? !is_post : !is_get) {
            static const char *const allow_post[] = {MHD_HTTP_HEADER_ALLOW, "POST", NULL};
            static const char *const allow_get[] = {MHD_HTTP_HEADER_ALLOW, "GET, HEAD", NULL};
            return send_error(S, c, r, 405, wants_post ? allow_post : allow_get,
                              "%s does not take %s", url, method);
        }
        if (atomic_load(&S->stopping) && r->route != SERVE_ROUTE_VIEWER)
            return send_error(S, c, r, 503, NULL, "shutting down");
        if ((r->route == SERVE_ROUTE_PREDICT || r->route == SERVE_ROUTE_DICOM ||
             r->route == SERVE_ROUTE_MODEL || r->route == SERVE_ROUTE_METRICS) &&
            !token_ok(S, c)) {
            static const char *const www[] = {MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                                              "Bearer realm=\"chexnet\"", NULL};
            return send_error(S, c, r, 401, www,
                              "a valid 'Authorization: Bearer TOKEN' header is required");
        }
        switch (r->route) {
        case SERVE_ROUTE_VIEWER: {
            static const char *const csp[] = {
                "Content-Security-Policy",
                "default-src 'self'; img-src 'self' data: blob:; style-src 'unsafe-inline'; "
                "script-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'",
                NULL};
            return send_buf(S, c, r, 200, "text/html; charset=utf-8", (void *)SERVE_VIEWER_HTML,
                            SERVE_VIEWER_HTML_LEN, 0, csp);
        }
        case SERVE_ROUTE_HEALTHZ: {
            static char ok[] = "ok\n";
            return send_buf(S, c, r, 200, "text/plain; charset=utf-8", ok, 3, 0, NULL);
        }
        case SERVE_ROUTE_METRICS: {
            char *t = serve_metrics_text(serve_batcher_queue_length(S->b));
            if (!t)
                return send_error(S, c, r, 503, NULL, "out of memory");
            return send_buf(S, c, r, 200, "text/plain; version=0.0.4; charset=utf-8", t,
                            strlen(t), 1, NULL);
        }
        case SERVE_ROUTE_MODEL:
            return handle_model(S, c, r);
        default:
            break;
        }
        /* a POST: refuse a declared body beyond the limit before reading it */
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl) {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(cl, &end, 10);
            if (!errno && *end == 0 && v > S->o->max_body)
                return send_error(S, c, r, 413, NULL,
                                  "body of %llu bytes is beyond the limit of %zu (--max-body)",
                                  v, S->o->max_body);
            if (!errno && *end == 0 && v > 0) {
                r->body = malloc((size_t)v);
                r->cap = r->body ? (size_t)v : 0;
            }
        }
        return MHD_YES;
    }
    if (r->status) { /* answered already: discard the rest of the body */
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t add = *upload_data_size;
        *upload_data_size = 0;
        if (r->too_large)
            return MHD_YES;
        if (r->n + add > S->o->max_body) {
            r->too_large = 1;
            free(r->body);
            r->body = NULL;
            r->n = r->cap = 0;
            return MHD_YES;
        }
        if (r->n + add > r->cap) {
            size_t cap = r->cap ? r->cap : 65536;
            while (cap < r->n + add)
                cap *= 2;
            if (cap > S->o->max_body)
                cap = S->o->max_body;
            uint8_t *p = realloc(r->body, cap);
            if (!p)
                return send_error(S, c, r, 503, NULL, "out of memory for the body");
            r->body = p;
            r->cap = cap;
        }
        memcpy(r->body + r->n, upload_data, add);
        r->n += add;
        return MHD_YES;
    }
    if (r->too_large)
        return send_error(S, c, r, 413, NULL, "body beyond the limit of %zu bytes (--max-body)",
                          S->o->max_body);
    if (r->route == SERVE_ROUTE_DICOM)
        return handle_dicom(S, c, r);
    return handle_predict(S, c, r);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    server *S = cls;
    req *r = *con_cls;
    (void)c;
    if (!r)
        return;
    /* a request the client gave up on before an answer counts as 499 */
    serve_metrics_request(r->route, r->status ? r->status : 499, now_s() - r->t0);
    (void)toe;
    free(r->body);
    free(r);
    *con_cls = NULL;
    serve_metrics_inflight(-1);
    pthread_mutex_lock(&S->mu);
    if (--S->inflight == 0)
        pthread_cond_broadcast(&S->idle);
    pthread_mutex_unlock(&S->mu);
}

/* ------------------------------------------------------------ start/stop */

static int is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_LOOPBACK(a))
            return 1;
        if (IN6_IS_ADDR_V4MAPPED(a))
            return a->s6_addr[12] == 127;
    }
    return 0;
}

/* operating thresholds: the model's "thresholds" (one per class), else the
 * number that starts its "operating_point" metadata (e.g. "0.5: sensitivity
 * ..."), else 0.5 */
static void read_thresholds(server *S)
{
    if (cx_model_thresholds(S->m, S->thresholds))
        return;
    double t = 0.5;
    const char *op = cx_model_meta(S->m, "operating_point");
    if (op) {
        char *end;
        double v = strtod(op, &end);
        if (end != op && isfinite(v) && v > 0 && v < 1)
            t = v;
    }
    for (int k = 0; k < S->nc; k++)
        S->thresholds[k] = (float)t;
}

struct serve_server {
    server S;
    struct MHD_Daemon *d;
    struct addrinfo *ai;
    int port;
};

void serve_stop(serve_server *h, const char *why)
{
    if (!h)
        return;
    server *S = &h->S;
    if (h->d) {
        atomic_store(&S->stopping, 1);
        MHD_socket ls = MHD_quiesce_daemon(h->d);
        if (ls != MHD_INVALID_SOCKET)
            close(ls);
        pthread_mutex_lock(&S->mu);
        if (why)
            fprintf(stderr, "chexnet serve: %s: no new connections; answering %ld request%s in "
                            "flight\n",
                    why, S->inflight, S->inflight == 1 ? "" : "s");
        double until = now_s() + S->o->drain_s;
        while (S->inflight > 0 && now_s() < until) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 50 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&S->idle, &S->mu, &ts);
        }
        long left = S->inflight;
        pthread_mutex_unlock(&S->mu);
        if (left)
            fprintf(stderr, "chexnet serve: %ld request%s still running after %.0f s: closed\n",
                    left, left == 1 ? "" : "s", S->o->drain_s);
        MHD_stop_daemon(h->d);
        pthread_mutex_destroy(&S->mu);
        pthread_cond_destroy(&S->idle);
    }
    serve_batcher_free(S->b);
    cx_model_free(S->m);
    free(S->thresholds);
    free(S->cam_lo);
    free(S->cam_hi);
    if (h->ai)
        freeaddrinfo(h->ai);
    free(h);
}

int serve_start(const serve_opts *o, serve_server **out)
{
    *out = NULL;
    serve_server *h = calloc(1, sizeof *h);
    if (!h) {
        fprintf(stderr, "chexnet serve: out of memory\n");
        return 1;
    }
    server *S = &h->S;
    S->o = o;
    cx_err err = {0};
    if (!o->no_listen) {
        struct addrinfo hints = {0};
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_PASSIVE;
        int gai = getaddrinfo(o->host, NULL, &hints, &h->ai);
        if (gai || !h->ai) {
            fprintf(stderr, "chexnet serve: --host %s: %s\n", o->host, gai_strerror(gai));
            h->ai = NULL;
            serve_stop(h, NULL);
            return 2;
        }
        if (!is_loopback(h->ai->ai_addr) && !o->token) {
            fprintf(stderr, "chexnet serve: --host %s is not a loopback address: give a bearer "
                            "token with --token-file FILE\n", o->host);
            serve_stop(h, NULL);
            return 2;
        }
        if (h->ai->ai_family == AF_INET)
            ((struct sockaddr_in *)h->ai->ai_addr)->sin_port = htons((uint16_t)o->port);
        else
            ((struct sockaddr_in6 *)h->ai->ai_addr)->sin6_port = htons((uint16_t)o->port);
    }
    if (cx_model_load(o->model_path, &S->m, &err)) {
        fprintf(stderr, "chexnet serve: %s\n", err.msg);
        serve_stop(h, NULL);
        return 1;
    }
    const char *base = strrchr(o->model_path, '/');
    snprintf(S->model_name, sizeof S->model_name, "%s", base ? base + 1 : o->model_path);
    S->nc = cx_model_num_classes(S->m);
    S->thresholds = calloc((size_t)S->nc, sizeof(float));
    if (!S->thresholds) {
        fprintf(stderr, "chexnet serve: out of memory\n");
        serve_stop(h, NULL);
        return 1;
    }
    read_thresholds(S);
    cx_set_threads(o->threads);
    if (serve_batcher_new(S->m, o->max_batch, o->max_wait_ms, o->precision, &S->b, &err)) {
        fprintf(stderr, "chexnet serve: %s\n", err.msg);
        serve_stop(h, NULL);
        return 1;
    }
    serve_batcher_cam_size(S->b, &S->cam_h, &S->cam_w);
    /* the heat maps' colour scale: the model's cam_range when it has one */
    S->cam_lo = malloc(sizeof(float) * (size_t)S->nc);
    S->cam_hi = malloc(sizeof(float) * (size_t)S->nc);
    int found = 0;
    if (!S->cam_lo || !S->cam_hi ||
        cx_model_cam_range(S->m, o->model_path, S->cam_lo, S->cam_hi, &found, &err)) {
        fprintf(stderr, "chexnet serve: %s\n", S->cam_lo && S->cam_hi ? err.msg : "out of memory");
        serve_stop(h, NULL);
        return 1;
    }
    S->cam_scale = found ? CX_CAM_SCALE_MODEL : CX_CAM_SCALE_IMAGE;
    if (!found) {
        free(S->cam_lo);
        free(S->cam_hi);
        S->cam_lo = S->cam_hi = NULL;
        fprintf(stderr, "chexnet serve: warning: %s has no \"cam_range\" metadata: heat maps "
                        "use each image's own min-max (cam_scale=image); chexnet calibrate "
                        "adds the range\n",
                o->model_path);
    }
    pthread_mutex_init(&S->mu, NULL);
    pthread_cond_init(&S->idle, NULL);

    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                     MHD_USE_POLL | MHD_USE_ITC;
    if (o->no_listen)
        flags |= MHD_USE_NO_LISTEN_SOCKET;
    else if (h->ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    if (o->no_listen)
        h->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, S,
                                MHD_OPTION_NOTIFY_COMPLETED, on_completed, S,
                                MHD_OPTION_CONNECTION_LIMIT, (unsigned)o->max_connections,
                                MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60, MHD_OPTION_END);
    else
        h->d = MHD_start_daemon(flags, (uint16_t)o->port, NULL, NULL, on_request, S,
                                MHD_OPTION_SOCK_ADDR, h->ai->ai_addr,
                                MHD_OPTION_NOTIFY_COMPLETED, on_completed, S,
                                MHD_OPTION_CONNECTION_LIMIT, (unsigned)o->max_connections,
                                MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60,
                                MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)128, MHD_OPTION_END);
    if (!h->d) {
        fprintf(stderr, "chexnet serve: cannot listen on %s port %d: %s\n", o->host, o->port,
                errno ? strerror(errno) : "libmicrohttpd failed to start");
        pthread_mutex_destroy(&S->mu);
        pthread_cond_destroy(&S->idle);
        serve_stop(h, NULL);
        return 1;
    }
    if (!o->no_listen) {
        const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
        h->port = di ? di->port : o->port;
    }
    *out = h;
    return 0;
}

int serve_add_connection(serve_server *h, int fd)
{
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return MHD_add_connection(h->d, fd, (const struct sockaddr *)&a, sizeof a) == MHD_YES ? 0
                                                                                         : -1;
}

int serve_main(const serve_opts *o)
{
    /* Request buffers (bodies, decoded X-rays, tensors, PNGs) are large and
     * short-lived, on many threads. With glibc's adaptive mmap threshold they
     * would end up in per-thread heaps that keep growing; a fixed threshold
     * gives them back to the system when freed, so the resident size stays
     * flat under load. */
    mallopt(M_MMAP_THRESHOLD, 256 * 1024);
    mallopt(M_ARENA_MAX, 4);

    /* signals are taken by sigwait below: block them in every thread */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    serve_server *h = NULL;
    int rc = serve_start(o, &h);
    if (rc)
        return rc;
    server *S = &h->S;
    int v6 = h->ai->ai_family == AF_INET6;
    printf("listening on http://%s%s%s:%d\n", v6 ? "[" : "", o->host, v6 ? "]" : "", h->port);
    fflush(stdout);
    fprintf(stderr, "chexnet serve: model %s (%d class%s), batches of up to %d, waiting up to "
                    "%d ms, %d thread%s for the forward pass%s\n",
            S->model_name, S->nc, S->nc == 1 ? "" : "es", o->max_batch, o->max_wait_ms,
            cx_get_threads(), cx_get_threads() == 1 ? "" : "s",
            o->token ? ", bearer token required" : "");
    int sig = 0;
    while (sigwait(&sigs, &sig) != 0)
        ;
    serve_stop(h, sig == SIGTERM ? "SIGTERM" : "SIGINT");
    fprintf(stderr, "chexnet serve: stopped\n");
    return 0;
}
