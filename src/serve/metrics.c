/* metrics.c - the server's counters and histograms, exposed at GET /metrics
 * in Prometheus' text format (version 0.0.4):
 *
 *   chexnet_requests_total{handler,code}        counter
 *   chexnet_request_duration_seconds{handler}   histogram
 *   chexnet_batch_size                          histogram (images per forward)
 *   chexnet_forward_duration_seconds            histogram
 *   chexnet_images_total                        counter
 *   chexnet_queue_length                        gauge (jobs waiting for a batch)
 *   chexnet_inflight_requests                   gauge
 *   process_resident_memory_bytes               gauge
 */
#define _GNU_SOURCE
#include "serve/serve.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *const SERVE_ROUTE_NAMES[SERVE_N_ROUTES] = {
    "/", "/healthz", "/metrics", "/v1/model", "/v1/predict", "/v1/dicom", "other"};

static const double LAT_BUCKETS[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
#define N_LAT (int)(sizeof LAT_BUCKETS / sizeof LAT_BUCKETS[0])
static const double BATCH_BUCKETS[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
#define N_BATCH (int)(sizeof BATCH_BUCKETS / sizeof BATCH_BUCKETS[0])
#define MAX_CODES 16

typedef struct {
    unsigned long long bucket[N_LAT + 1]; /* last: +Inf */
    double sum;
    unsigned long long count;
} hist_lat;

static struct {
    pthread_mutex_t mu;
    unsigned codes[MAX_CODES];
    int n_codes;
    unsigned long long requests[SERVE_N_ROUTES][MAX_CODES];
    hist_lat latency[SERVE_N_ROUTES];
    unsigned long long batch_bucket[N_BATCH + 1];
    double batch_sum;
    unsigned long long batch_count;
    hist_lat forward;
    unsigned long long images;
    long inflight;
} M = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void lat_add(hist_lat *h, double s)
{
    int i = 0;
    while (i < N_LAT && s > LAT_BUCKETS[i])
        i++;
    h->bucket[i]++;
    h->sum += s;
    h->count++;
}

void serve_metrics_request(int route, unsigned status, double seconds)
{
    if (route < 0 || route >= SERVE_N_ROUTES)
        route = SERVE_ROUTE_OTHER;
    pthread_mutex_lock(&M.mu);
    int k = 0;
    while (k < M.n_codes && M.codes[k] != status)
        k++;
    if (k == M.n_codes && k < MAX_CODES)
        M.codes[M.n_codes++] = status;
    if (k < MAX_CODES)
        M.requests[route][k]++;
    lat_add(&M.latency[route], seconds);
    pthread_mutex_unlock(&M.mu);
}

void serve_metrics_batch(int n, double forward_seconds)
{
    pthread_mutex_lock(&M.mu);
    int i = 0;
    while (i < N_BATCH && n > BATCH_BUCKETS[i])
        i++;
    M.batch_bucket[i]++;
    M.batch_sum += n;
    M.batch_count++;
    M.images += (unsigned long long)n;
    lat_add(&M.forward, forward_seconds);
    pthread_mutex_unlock(&M.mu);
}

void serve_metrics_inflight(int delta)
{
    pthread_mutex_lock(&M.mu);
    M.inflight += delta;
    pthread_mutex_unlock(&M.mu);
}

static void hist_text(sbuf *b, const char *name, const char *labels, const double *le, int n,
                      const unsigned long long *bucket, double sum, unsigned long long count)
{
    unsigned long long cum = 0;
    for (int i = 0; i <= n; i++) {
        cum += bucket[i];
        if (i < n)
            sb_printf(b, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, *labels ? "," : "",
                      le[i], cum);
        else
            sb_printf(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, *labels ? "," : "",
                      cum);
    }
    sb_printf(b, "%s_sum%s%s%s %.9g\n", name, *labels ? "{" : "", labels, *labels ? "}" : "",
              sum);
    sb_printf(b, "%s_count%s%s%s %llu\n", name, *labels ? "{" : "", labels, *labels ? "}" : "",
              count);
}

static long rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, rss = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    return rss * sysconf(_SC_PAGESIZE);
}

char *serve_metrics_text(int queue_length)
{
    sbuf b = {0};
    pthread_mutex_lock(&M.mu);
    sb_puts(&b, "# HELP chexnet_requests_total HTTP requests answered, by handler and status "
                "code.\n# TYPE chexnet_requests_total counter\n");
    for (int r = 0; r < SERVE_N_ROUTES; r++)
        for (int k = 0; k < M.n_codes; k++)
            if (M.requests[r][k])
                sb_printf(&b, "chexnet_requests_total{handler=\"%s\",code=\"%u\"} %llu\n",
                          SERVE_ROUTE_NAMES[r], M.codes[k], M.requests[r][k]);
    sb_puts(&b, "# HELP chexnet_request_duration_seconds Time from a request's headers to its "
                "answer.\n# TYPE chexnet_request_duration_seconds histogram\n");
    for (int r = 0; r < SERVE_N_ROUTES; r++) {
        if (!M.latency[r].count)
            continue;
        char labels[64];
        snprintf(labels, sizeof labels, "handler=\"%s\"", SERVE_ROUTE_NAMES[r]);
        hist_text(&b, "chexnet_request_duration_seconds", labels, LAT_BUCKETS, N_LAT,
                  M.latency[r].bucket, M.latency[r].sum, M.latency[r].count);
    }
    sb_puts(&b, "# HELP chexnet_batch_size Images per forward pass (dynamic batching).\n"
                "# TYPE chexnet_batch_size histogram\n");
    hist_text(&b, "chexnet_batch_size", "", BATCH_BUCKETS, N_BATCH, M.batch_bucket, M.batch_sum,
              M.batch_count);
    sb_puts(&b, "# HELP chexnet_forward_duration_seconds Time of one forward pass.\n"
                "# TYPE chexnet_forward_duration_seconds histogram\n");
    hist_text(&b, "chexnet_forward_duration_seconds", "", LAT_BUCKETS, N_LAT, M.forward.bucket,
              M.forward.sum, M.forward.count);
    sb_printf(&b, "# HELP chexnet_images_total Images through the network.\n"
                  "# TYPE chexnet_images_total counter\nchexnet_images_total %llu\n",
              M.images);
    sb_printf(&b, "# HELP chexnet_queue_length Requests waiting for a forward pass.\n"
                  "# TYPE chexnet_queue_length gauge\nchexnet_queue_length %d\n",
              queue_length);
    sb_printf(&b, "# HELP chexnet_inflight_requests Requests being received or answered.\n"
                  "# TYPE chexnet_inflight_requests gauge\nchexnet_inflight_requests %ld\n",
              M.inflight);
    pthread_mutex_unlock(&M.mu);
    sb_printf(&b, "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
                  "# TYPE process_resident_memory_bytes gauge\n"
                  "process_resident_memory_bytes %ld\n",
              rss_bytes());
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}
