/* chexnet serve: the HTTP service (src/serve/). */
#define _GNU_SOURCE
#include "cli.h"
#include "serve/serve.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define CMD "serve"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: chexnet serve --model FILE --port P [--host 127.0.0.1] [--threads T]\n"
            "                     [--max-batch B] [--max-wait-ms W] [--max-body BYTES]\n"
            "                     [--token-file FILE] [--max-connections N]\n"
            "                     [--precision fp32|bf16] [--drain-seconds S]\n\n"
            "An HTTP service for the model, with a viewer for people at its root.\n"
            "Prints 'listening on http://HOST:P' when ready.\n\n"
            "  --model FILE        safetensors model (default: the bundled model, or\n"
            "                      $CHEXNET_MODEL)\n"
            "  --port P            TCP port; 0 picks a free one (printed)\n"
            "  --host H            address to listen on (default 127.0.0.1, loopback);\n"
            "                      any other address needs --token-file\n"
            "  --threads T         threads of the forward pass (default: all cores)\n"
            "  --max-batch B       concurrent requests share one forward pass of up to B\n"
            "                      images (default 16; 1: no batching)\n"
            "  --max-wait-ms W     how long a request waits for others to join its\n"
            "                      batch (default 10)\n"
            "  --max-body BYTES    largest request body (default 64M; K, M, G suffixes)\n"
            "  --token-file FILE   require 'Authorization: Bearer TOKEN' on /v1/ and\n"
            "                      /metrics, TOKEN being the file's first line\n"
            "  --max-connections N concurrent connections (default 64)\n"
            "  --precision P       fp32 (default) or bf16 (see chexnet predict --help)\n"
            "  --drain-seconds S   on SIGTERM/SIGINT, time given to requests in flight\n"
            "                      (default 30)\n"
            "  --version           print the version\n\n"
            "%s\n"
            "Endpoints:\n"
            "  GET  /              the viewer: drop an X-ray, see probabilities and the\n"
            "                      heat map\n"
            "  POST /v1/predict    body: a PNG, JPEG or DICOM file. 200 and\n"
            "                      {\"probabilities\": {CLASS: p, ...}, \"model\": NAME,\n"
            "                       \"warnings\": [...]}; ?cam=CLASS (or auto) adds\n"
            "                      \"cam_png_base64\", the heat map overlay with its\n"
            "                      legend, and \"cam_scale\", \"cam_range\";\n"
            "                      &cam_scale=image|model its colour scale (as\n"
            "                      predict --cam-scale: model when the model has a\n"
            "                      cam_range, else image)\n"
            "  POST /v1/dicom      body: a DICOM X-ray. The results as DICOM objects for\n"
            "                      its study (multipart/related; type=application/dicom):\n"
            "                      a Secondary Capture (heat map, labels) and a\n"
            "                      Structured Report (the probabilities)\n"
            "  GET  /v1/model      classes, thresholds, colour map\n"
            "  GET  /healthz       200 when serving\n"
            "  GET  /metrics       Prometheus text: requests by status, latency, batch\n"
            "                      sizes, queue length, memory\n"
            "Errors: 400 corrupt image, 401 token, 413 too large, 415 not an image,\n"
            "JSON {\"error\": \"...\"}. Research use only, not a medical device.\n",
            cli_limits_help());
}

/* bytes with an optional K, M or G (binary) suffix */
static int parse_size(const char *s, size_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *s == '-')
        return -1;
    unsigned long long mul = 1;
    if (*end == 'K' || *end == 'k')
        mul = 1ull << 10;
    else if (*end == 'M' || *end == 'm')
        mul = 1ull << 20;
    else if (*end == 'G' || *end == 'g')
        mul = 1ull << 30;
    if (mul > 1)
        end++;
    if (*end || v == 0 || v > (1ull << 40) / mul)
        return -1;
    *out = (size_t)(v * mul);
    return 0;
}

/* the token: the file's first line without surrounding blanks */
static char *read_token(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        cli_error(CMD, "--token-file %s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat sb;
    if (fstat(fileno(f), &sb) == 0 && (sb.st_mode & 077))
        cli_error(CMD, "warning: %s is readable by other users (chmod 600 it)", path);
    char line[4096];
    char *tok = NULL;
    if (fgets(line, sizeof line, f)) {
        char *s = line, *e = line + strlen(line);
        while (*s && isspace((unsigned char)*s))
            s++;
        while (e > s && isspace((unsigned char)e[-1]))
            *--e = 0;
        int ok = *s != 0;
        for (char *p = s; *p && ok; p++)
            ok = isgraph((unsigned char)*p);
        if (!ok)
            cli_error(CMD, "--token-file %s: the first line must be a token of printable "
                           "characters without spaces", path);
        else if (strlen(s) < 16)
            cli_error(CMD, "--token-file %s: the token is shorter than 16 characters", path);
        else
            tok = strdup(s);
    } else {
        cli_error(CMD, "--token-file %s: empty file", path);
    }
    fclose(f);
    return tok;
}

int cmd_serve(int argc, char **argv)
{
    enum { O_MODEL = CLI_OPT_FIRST_FREE, O_PORT, O_HOST, O_THREADS, O_MAX_BATCH, O_MAX_WAIT, O_MAX_BODY,
           O_TOKEN, O_MAX_CONN, O_PRECISION, O_DRAIN };
    static const struct option opts[] = {
        {"model", required_argument, 0, O_MODEL},
        {"port", required_argument, 0, O_PORT},
        {"host", required_argument, 0, O_HOST},
        {"threads", required_argument, 0, O_THREADS},
        {"max-batch", required_argument, 0, O_MAX_BATCH},
        {"max-wait-ms", required_argument, 0, O_MAX_WAIT},
        {"max-body", required_argument, 0, O_MAX_BODY},
        {"token-file", required_argument, 0, O_TOKEN},
        {"max-connections", required_argument, 0, O_MAX_CONN},
        {"precision", required_argument, 0, O_PRECISION},
        {"drain-seconds", required_argument, 0, O_DRAIN},
        {0, 0, 0, 0}};
    serve_opts o = {0};
    o.host = "127.0.0.1";
    o.port = -1;
    o.max_batch = 16;
    o.max_wait_ms = 10;
    o.max_body = (size_t)64 << 20;
    o.max_connections = 64;
    o.drain_s = 30;
    const char *token_file = NULL;
    long v;
    int c;
    cli_getopt g;
    cli_getopt_init(&g, CMD, argc, argv, "", opts, CLI_LIMITS, usage);
    while ((c = cli_getopt_next(&g)) != -1) {
        int bad = 0;
        switch (c) {
        case CLI_OPT_EXIT: return g.exit_code;
        case O_MODEL: o.model_path = optarg; break;
        case O_PORT: bad = cli_opt_int(&g, 0, 65535, &v) ? -1 : 0; o.port = (int)v; break;
        case O_HOST: o.host = optarg; break;
        case O_THREADS: bad = cli_opt_int(&g, 0, 4096, &v) ? -1 : 0; o.threads = (int)v; break;
        case O_MAX_BATCH: bad = cli_opt_int(&g, 1, 1024, &v) ? -1 : 0; o.max_batch = (int)v; break;
        case O_MAX_WAIT: bad = cli_opt_int(&g, 0, 60000, &v) ? -1 : 0; o.max_wait_ms = (int)v; break;
        case O_MAX_BODY: bad = parse_size(optarg, &o.max_body); break;
        case O_TOKEN: token_file = optarg; break;
        case O_MAX_CONN:
            bad = cli_opt_int(&g, 1, 100000, &v) ? -1 : 0;
            o.max_connections = (int)v;
            break;
        case O_PRECISION:
            bad = (o.precision = cx_precision_parse(optarg)) < 0;
            break;
        case O_DRAIN: bad = cli_parse_double(optarg, &o.drain_s) || o.drain_s < 0; break;
        default: return 2;
        }
        if (bad) { /* < 0: cli_opt_int has said why */
            if (bad > 0)
                cli_opt_bad(&g, NULL);
            return 2;
        }
    }
    if (optind < argc) {
        cli_error(CMD, "unexpected argument '%s' (see chexnet serve --help)", argv[optind]);
        return 2;
    }
    if (o.port < 0) {
        cli_error(CMD, "--port P is required (0: a free port)");
        return 2;
    }
    if (!o.model_path && !(o.model_path = cli_default_model())) {
        cli_error(CMD, "no --model given and no default model found (set CHEXNET_MODEL or "
                       "install chexnet's models)");
        return 2;
    }
    if (cx_precision_effective(CX_BACKEND_CPU, (cx_precision)o.precision) !=
        (cx_precision)o.precision)
        cli_error(CMD, "warning: this CPU has neither AMX nor AVX512-BF16, where bf16 would be "
                       "slower than fp32: running fp32");
    char *token = NULL;
    if (token_file && !(token = read_token(token_file)))
        return 2;
    o.token = token;
    int rc = serve_main(&o);
    free(token);
    return rc;
}
