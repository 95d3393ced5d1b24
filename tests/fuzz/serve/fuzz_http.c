/* fuzz_http: the HTTP paths of chexnet serve. Each input is the raw bytes a
 * client sends on one connection: libmicrohttpd parses them (Debian's build,
 * not instrumented) and chexnet's handlers (src/serve/, instrumented) route
 * them, check the token and the declared lengths, collect bodies, decode
 * images (PNG, JPEG, DICOM), run a tiny DenseNet through the batcher and
 * answer (JSON, heat maps, DICOM results, metrics, the viewer). The first
 * byte picks one of two servers: without a token, or with one.
 *
 * The connection is a socketpair handed to the server (no network). The
 * harness writes the request, closes its side for writing and reads the
 * answer to the end. The server must answer or close, never crash, hang or
 * leak. */
#define _GNU_SOURCE
#include "chexnet.h"
#include "serve/serve.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static serve_server *g_srv[2];
static serve_opts g_opts[2];
static char g_model[256];

/* The servers run until the process ends. (Stopping them would end the
 * batching thread, whose thread-local GEMM scratch buffers the kernels do
 * not free at thread exit: LeakSanitizer would report those.) */
static void cleanup(void)
{
    unlink(g_model);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    signal(SIGPIPE, SIG_IGN);
    /* a tiny DenseNet (2 classes): fast enough to run per input */
    cx_config cfg = {0};
    snprintf(cfg.arch, sizeof cfg.arch, "densenet");
    cfg.growth_rate = 4;
    cfg.n_blocks = 2;
    cfg.block_config[0] = cfg.block_config[1] = 1;
    cfg.num_init_features = 8;
    cfg.bn_size = 2;
    cfg.num_classes = 2;
    cfg.in_channels = 3;
    cx_model *m = NULL;
    cx_err err = {0};
    static const char *const names[2] = {"Effusion", "Pneumonia"};
    if (cx_model_new(&cfg, &m, &err) || (cx_model_init(m, 1), 0) ||
        cx_model_set_class_names(m, 2, names, &err) ||
        cx_model_set_meta(m, "operating_point", "0.5: fuzz", &err)) {
        fprintf(stderr, "fuzz_http: %s\n", err.msg);
        abort();
    }
    const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(g_model, sizeof g_model, "%s/cxfuzz-http-%ld.safetensors", dir, (long)getpid());
    if (cx_model_save(m, g_model, CX_DT_F32, &err)) {
        fprintf(stderr, "fuzz_http: %s\n", err.msg);
        abort();
    }
    cx_model_free(m);
    for (int i = 0; i < 2; i++) {
        serve_opts *o = &g_opts[i];
        o->model_path = g_model;
        o->host = "127.0.0.1";
        o->threads = 1;
        o->max_batch = 4;
        o->max_wait_ms = 0;
        o->max_body = 1 << 20;
        o->max_connections = 16;
        o->token = i ? "fuzz-token-0123456789abcdef" : NULL;
        o->drain_s = 5;
        o->no_listen = 1;
        if (serve_start(o, &g_srv[i]))
            abort();
    }
    atexit(cleanup);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    serve_server *srv = g_srv[data[0] & 1];
    data++;
    size--;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
        abort();
    if (serve_add_connection(srv, sv[0])) {
        close(sv[1]);
        return 0; /* refused (connection limit): the server closed it */
    }
    /* send and receive at once: the server may answer before reading all */
    size_t sent = 0;
    int wr_open = 1;
    char buf[65536];
    for (;;) {
        struct pollfd p = {sv[1], POLLIN | (wr_open ? POLLOUT : 0), 0};
        int pr = poll(&p, 1, 30000);
        if (pr < 0 && errno == EINTR)
            continue; /* libFuzzer's -timeout timer (SIGALRM) */
        if (pr <= 0)
            abort(); /* no progress for 30 s: a hang */
        if ((p.revents & POLLOUT) && wr_open) {
            ssize_t w = size > sent ? send(sv[1], data + sent, size - sent, MSG_NOSIGNAL) : 0;
            if (w > 0)
                sent += (size_t)w;
            if (w < 0 || sent == size) {
                shutdown(sv[1], SHUT_WR);
                wr_open = 0;
            }
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t r = recv(sv[1], buf, sizeof buf, 0);
            if (r <= 0)
                break;
        }
    }
    close(sv[1]);
    return 0;
}
