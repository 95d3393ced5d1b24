/* Dataset/split options shared by the data commands (see data_args.h). */
#define _GNU_SOURCE
#include "data_args.h"

#include <stdlib.h>
#include <string.h>

void data_args_init(data_args *a)
{
    memset(a, 0, sizeof *a);
    a->fractions[0] = 0.7;
    a->fractions[1] = 0.1;
    a->fractions[2] = 0.2;
    a->val_fraction = 0.125;
}

void data_args_free(data_args *a)
{
    free(a->class_buf);
    a->class_buf = NULL;
}

const char *data_args_help(void)
{
    return "dataset (one of):\n"
           "  --labels FILE        ChestX-ray14 Data_Entry_2017*.csv[.gz], a split list\n"
           "                       (IMAGE L1 ... L14) or a manifest CSV (path, 0/1 class\n"
           "                       columns, optional patient column)\n"
           "  --manifest FILE      the same as --labels\n"
           "  --pack FILE          a packed dataset made by 'chexnet prepare'\n"
           "  --train A [--val B] [--test C]\n"
           "                       split lists (IMAGE [L1 ... L14]; plain names need\n"
           "                       --labels); without --labels they are the dataset\n"
           "  --image-dir DIR      image folder (searched recursively for ChestX-ray14\n"
           "                       names; manifest paths are relative to it, default:\n"
           "                       the manifest's folder)\n"
           "  --task T             pneumonia | all14 (default: all14 for ChestX-ray14,\n"
           "                       every 0/1 column of a manifest)\n"
           "  --classes A,B,...    explicit classes (case-insensitive column names)\n"
           "  --patient-column C   manifest patient column (default: patient,\n"
           "                       patient_key, patient_id, Patient ID)\n"
           "split:\n"
           "  --fractions T,V,E    random patient-level split (default 0.7,0.1,0.2)\n"
           "  --seed S             split seed (default 0)\n"
           "  --val-fraction F     with --train but no --val: this fraction of the train\n"
           "                       images (by patient) becomes val (default 0.125)\n";
}

static int parse_fractions(const char *cmd, const char *s, double f[3])
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    int n = 0;
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (n == 3 || cli_parse_double(t, &f[n]) || f[n] < 0) {
            cli_error(cmd, "--fractions wants three numbers >= 0 like 0.7,0.1,0.2, got '%s'", s);
            return -1;
        }
        n++;
    }
    if (n != 3) {
        cli_error(cmd, "--fractions wants three numbers like 0.7,0.1,0.2, got '%s'", s);
        return -1;
    }
    double sum = f[0] + f[1] + f[2];
    if (sum < 0.999 || sum > 1.001) {
        cli_error(cmd, "--fractions must sum to 1, got '%s'", s);
        return -1;
    }
    for (int i = 0; i < 3; i++) /* exact sum 1 */
        f[i] /= sum;
    return 0;
}

int data_args_option(const char *cmd, int code, const char *val, data_args *a)
{
    int which = code - DATA_O_FIRST;
    if (which < 0 || which > 12)
        return 0;
    switch (which) {
    case 0:
    case 1: a->labels = val; break;
    case 2: a->pack = val; break;
    case 3: a->lists[0] = val; break;
    case 4: a->lists[1] = val; break;
    case 5: a->lists[2] = val; break;
    case 6: a->image_dir = val; break;
    case 7:
        if (strcmp(val, "pneumonia") && strcmp(val, "all14")) {
            cli_error(cmd, "--task wants pneumonia or all14, got '%s'", val);
            return -1;
        }
        a->task = val;
        break;
    case 8: {
        free(a->class_buf);
        a->class_buf = strdup(val);
        a->n_classes = 0;
        char *save = NULL;
        for (char *t = strtok_r(a->class_buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            if (a->n_classes == DATA_MAX_CLASSES) {
                cli_error(cmd, "--classes: at most %d classes", DATA_MAX_CLASSES);
                return -1;
            }
            a->classes[a->n_classes++] = t;
        }
        if (!a->n_classes) {
            cli_error(cmd, "--classes wants a comma-separated list");
            return -1;
        }
        break;
    }
    case 9: a->patient_column = val; break;
    case 10:
        if (parse_fractions(cmd, val, a->fractions))
            return -1;
        break;
    case 11:
        if (cli_parse_int(val, 0, 0x7fffffffffffffffL, &a->seed)) {
            cli_error(cmd, "--seed wants a non-negative integer, got '%s'", val);
            return -1;
        }
        break;
    case 12:
        if (cli_parse_double(val, &a->val_fraction) || a->val_fraction < 0 ||
            a->val_fraction >= 1) {
            cli_error(cmd, "--val-fraction wants a number in [0, 1), got '%s'", val);
            return -1;
        }
        break;
    }
    return 1;
}

int data_args_load(const char *cmd, data_args *a, cx_dataset **ds)
{
    cx_err err = {0};
    *ds = NULL;
    if (a->pack && a->labels) {
        cli_error(cmd, "give --pack or --labels, not both");
        return 1;
    }
    const char *labels = a->pack ? a->pack : a->labels; /* packs load as label sources */
    if (!labels && !a->lists[0]) {
        cli_error(cmd, "no dataset: give --labels FILE, --manifest FILE, --pack FILE or "
                       "--train LIST (see --help)");
        return 1;
    }
    if (!a->lists[0] && (a->lists[1] || a->lists[2])) {
        cli_error(cmd, "--val/--test need --train");
        return 1;
    }
    cx_dataset_opts o;
    cx_dataset_opts_default(&o);
    o.labels = labels;
    const char *lists[3];
    int nl = 0;
    for (int p = 0; p < 3; p++)
        if (a->lists[p])
            lists[nl++] = a->lists[p];
    if (!labels) {
        o.lists = lists;
        o.n_lists = nl;
    }
    o.image_dir = a->image_dir;
    o.task = a->task;
    o.n_classes = a->n_classes;
    o.classes = a->n_classes ? a->classes : NULL;
    o.patient_column = a->patient_column;
    if (cx_dataset_load(&o, ds, &err))
        return cli_fail(cmd, &err);
    return 0;
}

int data_args_split(const char *cmd, const data_args *a, const cx_dataset *ds, cx_split *sp)
{
    cx_err err = {0};
    cx_status st;
    if (a->lists[0])
        st = cx_split_from_lists(ds, a->lists[0], a->lists[1], a->lists[2], a->val_fraction,
                                 (uint64_t)a->seed, sp, &err);
    else
        st = cx_split_random(ds, a->fractions, (uint64_t)a->seed, sp, &err);
    if (st)
        return cli_fail(cmd, &err);
    return 0;
}

void data_print_warnings(const char *cmd, const cx_dataset *ds, const cx_split *sp)
{
    if (ds)
        for (int i = 0; i < cx_dataset_num_warnings(ds); i++)
            fprintf(stderr, "chexnet %s: warning: %s\n", cmd, cx_dataset_warning(ds, i));
    if (sp)
        for (int i = 0; i < sp->n_warnings; i++)
            fprintf(stderr, "chexnet %s: warning: %s\n", cmd, sp->warnings[i]);
}
