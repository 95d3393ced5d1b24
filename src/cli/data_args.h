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
/* Consumes argv[*i] (and its value) if it is a dataset option: returns 1,
 * 0 if not one, -1 after printing an error. */
int data_args_parse(const char *cmd, int argc, char **argv, int *i, data_args *a);
/* The option help text. */
const char *data_args_help(void);
/* Loads the dataset named by the options (prints the error; returns 1). */
int data_args_load(const char *cmd, data_args *a, cx_dataset **ds);
/* Makes the split: from lists when --train is given, else random. */
int data_args_split(const char *cmd, const data_args *a, const cx_dataset *ds, cx_split *sp);
/* Prints the dataset's and the split's warnings to stderr. */
void data_print_warnings(const char *cmd, const cx_dataset *ds, const cx_split *sp);

#endif
