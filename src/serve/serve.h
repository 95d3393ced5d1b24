/* serve.h - `chexnet serve`: the HTTP service (libmicrohttpd), its dynamic
 * batching of forward passes, metrics, the embedded viewer and the DICOM
 * results. The server is part of the chexnet program, not of libchexnet: it
 * is a client of the public API (include/chexnet.h) like the other commands.
 *
 *   server.c    routes, requests, responses, token, graceful shutdown
 *   batcher.c   the queue that gathers concurrent requests into one forward
 *   metrics.c   counters and histograms in Prometheus' text format
 *   encode.c    PNG (libpng, in memory), base64 and JSON string helpers
 *   burnin.c    labels burned into the Secondary Capture (libgd's fonts)
 *   viewer/     the page served at GET / (embedded at build time)
 */
#ifndef CX_SERVE_H
#define CX_SERVE_H

#include "chexnet.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *model_path;
    const char *host;        /* "127.0.0.1" */
    int port;                /* 0: a free port (printed) */
    int threads;             /* network threads; 0: all cores */
    int max_batch;           /* images per forward pass (16) */
    int max_wait_ms;         /* how long a request waits for others (10) */
    size_t max_body;         /* bytes (64 MiB) */
    int max_connections;     /* concurrent connections (64) */
    const char *token;       /* bearer token (from --token-file); NULL: none */
    int precision;           /* cx_precision */
    double drain_s;          /* on SIGTERM, how long in-flight requests may take */
    int no_listen;           /* no socket: connections come from serve_add_connection */
} serve_opts;

/* Runs the server until SIGTERM or SIGINT; returns the exit status. */
int serve_main(const serve_opts *o);

/* The same in parts (the HTTP fuzzer drives it without a socket): start
 * (0, or an exit status after a message on stderr), hand over a connected
 * socket (the server owns it), stop (drains requests in flight; why, if not
 * NULL, is printed). o must outlive the server. */
typedef struct serve_server serve_server;
int serve_start(const serve_opts *o, serve_server **out);
int serve_add_connection(serve_server *h, int fd);
void serve_stop(serve_server *h, const char *why);

/* ------------------------------------------------------------- batcher */

typedef struct serve_job {
    const float *input;      /* [C][S][S], normalised */
    int cam_class;           /* -1: no map; -2: the most probable class; else a class */
    float *logits;           /* [classes], filled */
    float *cam;              /* [cam_h][cam_w] when cam_class != -1, filled */
    int cam_used;            /* the class of the map */
    cx_status status;
    char err[1024];
    int done;
    pthread_cond_t cv;
    double t_enqueue;
    struct serve_job *next;
} serve_job;

typedef struct serve_batcher serve_batcher;

cx_status serve_batcher_new(const cx_model *m, int max_batch, int max_wait_ms, int precision,
                            serve_batcher **out, cx_err *err);
/* Drains the queue (every job is answered), then stops the thread. */
void serve_batcher_free(serve_batcher *b);
/* Queues a job and blocks until it is done; returns its status. */
cx_status serve_batcher_run(serve_batcher *b, serve_job *job);
void serve_batcher_cam_size(const serve_batcher *b, int *h, int *w);
int serve_batcher_queue_length(serve_batcher *b);

/* ------------------------------------------------------------- metrics */

enum { SERVE_ROUTE_VIEWER, SERVE_ROUTE_HEALTHZ, SERVE_ROUTE_METRICS, SERVE_ROUTE_MODEL,
       SERVE_ROUTE_PREDICT, SERVE_ROUTE_DICOM, SERVE_ROUTE_OTHER, SERVE_N_ROUTES };
extern const char *const SERVE_ROUTE_NAMES[SERVE_N_ROUTES];

void serve_metrics_request(int route, unsigned status, double seconds);
void serve_metrics_batch(int n, double forward_seconds);
void serve_metrics_inflight(int delta);
/* The Prometheus text exposition (malloc'd, NUL-terminated). */
char *serve_metrics_text(int queue_length);

/* ------------------------------------------------------------- encoding */

typedef struct {
    char *p;
    size_t n, cap;
    int oom;
} sbuf;
void sb_put(sbuf *b, const void *d, size_t n);
void sb_puts(sbuf *b, const char *s);
void sb_printf(sbuf *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
void sb_json_str(sbuf *b, const char *s); /* a JSON string literal */
void sb_base64(sbuf *b, const uint8_t *d, size_t n);

/* PNG of w x h pixels with ch = 1, 3 or 4 channels (HWC) into *out. */
cx_status serve_png_encode(const uint8_t *pix, int w, int h, int ch, uint8_t **out, size_t *n,
                           cx_err *err);

/* ------------------------------------------------------------- burn-in */

/* Draws lines of text (top left, white on a dark band) into an RGB image. */
void serve_burn_text(cx_image *rgb, const char *const *lines, int n);

/* ------------------------------------------------------------- viewer */

extern const unsigned char SERVE_VIEWER_HTML[];
extern const size_t SERVE_VIEWER_HTML_LEN;

#endif
