/* Shared declarations of the chexnet command-line tool (a thin client of
 * libchexnet). Each subcommand lives in its own cmd_*.c file and has the
 * signature int cmd_NAME(int argc, char **argv) with argv[0] the command name;
 * it returns the process exit status. Only the CLI prints and exits. */
#ifndef CX_CLI_H
#define CX_CLI_H

#include "chexnet.h"
#include <stdio.h>

int cmd_info(int argc, char **argv);
int cmd_init(int argc, char **argv);
int cmd_predict(int argc, char **argv);
int cmd_evaluate(int argc, char **argv);
int cmd_readers(int argc, char **argv);
int cmd_split(int argc, char **argv);
int cmd_prepare(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_serve(int argc, char **argv);

/* Prints "chexnet CMD: message" to stderr. */
void cli_error(const char *cmd, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Prints an error from the library and returns 1. */
int cli_fail(const char *cmd, const cx_err *err);
/* True when argv has -h or --help. */
int cli_wants_help(int argc, char **argv);
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

#endif
