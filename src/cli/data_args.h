/* data_args.h - dataset/split command-line options shared by chexnet split,
 * prepare (and usable by train): parsing, loading, splitting. */
#ifndef CX_CLI_DATA_ARGS_H
#define CX_CLI_DATA_ARGS_H

#include "cli.h"

#define DATA_MAX_CLASSES 64

typedef struct {
    const char *labels;         /* --labels / --manifest / --pack */
    const char *pack;
    const char *lists[3];       /* --train --val --test */
    const char *image_dir;      /* --image-dir */
    const char *task;           /* --task */
    const char *classes_arg;    /* --classes a,b,c */
    const char *patient_column; /* --patient-column */
    double fractions[3];        /* --fractions */
    double val_fraction;        /* --val-fraction (lists without --val) */
    long seed;                  /* --seed */
    /* parsed */
    int n_classes;
    char *class_buf;
    const char *classes[DATA_MAX_CLASSES];
} data_args;

void data_args_init(data_args *a);
void data_args_free(data_args *a);
/* The dataset options, for a command's cli_getopt option table (their codes
 * start at DATA_O_FIRST; the command's own must stay below it). */
enum { DATA_O_FIRST = CLI_OPT_FIRST_FREE + 0x80 };
#define DATA_ARGS_OPTIONS                                                          \
    {"labels", required_argument, 0, DATA_O_FIRST + 0},                          \
    {"manifest", required_argument, 0, DATA_O_FIRST + 1},                        \
    {"pack", required_argument, 0, DATA_O_FIRST + 2},                            \
    {"train", required_argument, 0, DATA_O_FIRST + 3},                           \
    {"val", required_argument, 0, DATA_O_FIRST + 4},                             \
    {"test", required_argument, 0, DATA_O_FIRST + 5},                            \
    {"image-dir", required_argument, 0, DATA_O_FIRST + 6},                       \
    {"task", required_argument, 0, DATA_O_FIRST + 7},                            \
    {"classes", required_argument, 0, DATA_O_FIRST + 8},                         \
    {"patient-column", required_argument, 0, DATA_O_FIRST + 9},                  \
    {"fractions", required_argument, 0, DATA_O_FIRST + 10},                      \
    {"seed", required_argument, 0, DATA_O_FIRST + 11},                           \
    {"val-fraction", required_argument, 0, DATA_O_FIRST + 12}
/* Handles option code (from cli_getopt_next) with value val if it is a
 * dataset option: returns 1, 0 if not one, -1 after printing an error. */
int data_args_option(const char *cmd, int code, const char *val, data_args *a);
/* The option help text. */
const char *data_args_help(void);
/* Loads the dataset named by the options (prints the error; returns 1). */
int data_args_load(const char *cmd, data_args *a, cx_dataset **ds);
/* Makes the split: from lists when --train is given, else random. */
int data_args_split(const char *cmd, const data_args *a, const cx_dataset *ds, cx_split *sp);
/* Prints the dataset's and the split's warnings to stderr. */
void data_print_warnings(const char *cmd, const cx_dataset *ds, const cx_split *sp);

#endif
