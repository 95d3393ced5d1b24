/* Shared declarations of the chexnet command-line tool (a thin client of
 * libchexnet). Each subcommand lives in its own cmd_*.c file and has the
 * signature int cmd_NAME(int argc, char **argv) with argv[0] the command name;
 * it returns the process exit status. Only the CLI prints and exits. */
#ifndef CX_CLI_H
#define CX_CLI_H

#include "chexnet.h"
#include <getopt.h>
#include <limits.h>
#include <stdio.h>

int cmd_info(int argc, char **argv);
int cmd_init(int argc, char **argv);
int cmd_predict(int argc, char **argv);
int cmd_evaluate(int argc, char **argv);
int cmd_calibrate(int argc, char **argv);
int cmd_readers(int argc, char **argv);
int cmd_split(int argc, char **argv);
int cmd_prepare(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_localize(int argc, char **argv);

/* The option parser of every subcommand: getopt_long (GNU conventions:
 * --opt value and --opt=value, unambiguous abbreviations, options and
 * operands in any order, -- ends the options) over the command's options
 * plus the common ones: -h/--help (prints usage), --version, and with
 * CLI_LIMITS --max-pixels, --max-rows, --max-bytes (set cx_limits).
 *
 *   cli_getopt g;
 *   cli_getopt_init(&g, "predict", argc, argv, "o:", opts, CLI_LIMITS, usage);
 *   while ((c = cli_getopt_next(&g)) != -1)
 *       switch (c) { case CLI_OPT_EXIT: return g.exit_code; ... optarg ... }
 *   operands: argv[optind .. argc)
 *
 * CLI_OPT_EXIT: help or the version was printed (exit status 0), or a usage
 * error (unknown option, missing value, bad limit) was (status 2). */
enum { CLI_OPT_VERSION = 0x1000, CLI_OPT_MAX_PIXELS, CLI_OPT_MAX_ROWS, CLI_OPT_MAX_BYTES,
       CLI_OPT_EXIT, CLI_OPT_FIRST_FREE = 0x1100 };
enum { CLI_LIMITS = 1 };
#define CLI_GETOPT_MAX 96
typedef struct {
    const char *cmd;
    int argc;
    char **argv;
    char shortopts[64];
    struct option longopts[CLI_GETOPT_MAX];
    void (*usage)(FILE *);
    int exit_code;
    int opt; /* the option cli_getopt_next returned last */
} cli_getopt;
void cli_getopt_init(cli_getopt *g, const char *cmd, int argc, char **argv,
                     const char *shortopts, const struct option *longopts, int flags,
                     void (*usage)(FILE *));
int cli_getopt_next(cli_getopt *g);
/* The value of the option just returned (optarg) as an integer in lo..hi.
 * On a bad value it prints "invalid value 'V' for --NAME: want an integer
 * in LO..HI (see chexnet CMD --help)" and returns nonzero (exit status 2):
 *   case O_BATCH: if (cli_opt_int(&g, 1, 1024, &batch)) return 2; break; */
int cli_opt_int(cli_getopt *g, long lo, long hi, long *out);
/* That message for the option just returned, with "want WANT" if given. */
void cli_opt_bad(const cli_getopt *g, const char *want);
/* What --version prints (every command): the version and the kernels. */
void cli_print_version(void);
/* Help text of the limit options. */
const char *cli_limits_help(void);

/* "N thing" / "N things" (plural with s, or the given plural). */
const char *cli_plural(long n, const char *one, const char *many);
/* dir joined with name by one '/' (trailing slashes of dir dropped), into a
 * static buffer (for messages). */
const char *cli_path_in(const char *dir, const char *name);

/* --ten-crop on a model whose "augmentation" metadata shows it was trained
 * without random crops: one warning on stderr (the crops are views at a
 * scale it never saw). Nothing for models without that key. */
void cli_ten_crop_warn(const char *cmd, const cx_model *m);

/* Prints "chexnet CMD: message" to stderr. */
void cli_error(const char *cmd, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Prints an error from the library and returns 1. */
int cli_fail(const char *cmd, const cx_err *err);
/* Parses integers/floats strictly; return 0 on success. */
int cli_parse_int(const char *s, long lo, long hi, long *out);
int cli_parse_double(const char *s, double *out);

/* Progress bar on stderr with rate and ETA; silent unless stderr is a
 * terminal (or CHEXNET_PROGRESS=1), and only once the work runs > 1 s. */
typedef struct {
    const char *label;
    const char *unit;
    long total;
    long done;
    double t0, last_draw;
    int enabled;
    int drawn;
} cli_progress;
void cli_progress_start(cli_progress *p, const char *label, const char *unit, long total);
void cli_progress_update(cli_progress *p, long done);
void cli_progress_end(cli_progress *p);
double cli_now(void);

/* Default model shipped with chexnet: found next to the installed binary
 * (../share/chexnet/models), in the install data dir, or in the source tree.
 * Returns NULL if none is found. */
const char *cli_default_model(void);

/* A growable list of malloc'd strings. */
typedef struct {
    char **v;
    size_t n, cap;
} cli_strvec;
/* Appends str (taking ownership; NULL or out of memory: -1). */
int cli_strvec_push(cli_strvec *s, char *str);
void cli_strvec_free(cli_strvec *s);
/* "dir/name" (malloc'd; NULL when out of memory). */
char *cli_path_join(const char *dir, const char *name);
/* qsort comparator of char * strings. */
int cli_cmp_str(const void *a, const void *b);
/* .png, .jpg, .jpeg, .jpe, .dcm, .dicom (any case). */
int cli_is_image_name(const char *name);
/* Adds one INPUT to out: an image file (kept as given, even if missing: its
 * error comes when it is read), a folder (PNG/JPEG/DICOM files below it,
 * recursively, sorted; hidden files skipped) or, when allow_list, @LIST (one
 * input per line; blank lines and # comments skipped). Problems are printed
 * as "chexnet CMD: ..." and counted in *nerr. Returns -1 when out of memory. */
int cli_add_input(const char *cmd, const char *arg, int allow_list, cli_strvec *out, int *nerr);

/* The inference batch loop (predict on files and packs, evaluate --model).
 * Inputs are image files, decoded in parallel per_pass at a time (as
 * cx_image_load_input, or cx_image_load_input_info when images or infos are
 * wanted), or the batches of a loader; each batch of readable inputs goes
 * through one forward pass of ctx (made for per_pass * crops images) and
 * on_batch gets its probabilities (cx_model_probability: with the model's
 * temperature), averaged over the crops, in input order, and the raw
 * logits. */
typedef struct {
    int n;                      /* readable inputs in this batch */
    const size_t *index;        /* [n] file index, or dataset index (loader) */
    const double *prob;         /* [n][classes] */
    cx_image *keep;             /* [n] decoded images (keep_images), freed after */
    const cx_image_info *info;  /* [n] what the loader saw (keep_images/want_info) */
    const float *plain;         /* [n] single-crop inputs (plain_too and ten_crop) */
    const float *logits;        /* [n][crops][classes] the network's outputs */
} cli_batch;
typedef struct {
    const cx_model *m;
    cx_ctx *ctx;
    int per_pass, ten_crop;
    char *const *files;         /* the inputs: files ... */
    size_t n_files;
    cx_loader *loader;          /* ... or a loader (one crop; files unused) */
    int keep_images, want_info, plain_too;
    /* an unreadable file: 1 stops the run (CLI_INFER_BAD_INPUT, err set),
     * 0 reports it to on_bad (may be NULL) and goes on */
    int stop_on_bad;
    void (*on_bad)(void *user, size_t i, const cx_err *e);
    int (*on_batch)(void *user, const cli_batch *b); /* nonzero stops */
    void *user;
    long *done;                 /* inputs done, counted up (may be NULL) */
    cli_progress *progress;     /* updated with *done (may be NULL) */
} cli_infer;
typedef enum {
    CLI_INFER_OK = 0,
    CLI_INFER_NOMEM,            /* err set */
    CLI_INFER_SOURCE,           /* the loader failed: err set */
    CLI_INFER_BAD_INPUT,        /* stop_on_bad: err says which file and why */
    CLI_INFER_FORWARD,          /* the forward pass failed: err set */
    CLI_INFER_STOPPED           /* on_batch asked to stop */
} cli_infer_status;
cli_infer_status cli_infer_run(const cli_infer *o, cx_err *err);

#endif
