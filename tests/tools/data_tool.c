/* data_tool: drives the dataset loader for the Python oracle tests and for
 * timing.
 *   data_tool batch SOURCE [opts] --idx 0,5,7 --out x.f32
 *       one loader batch of those images (no shuffle), x as raw float32
 *       [n][C][S][S] in --out; prints lines "ids ...", "flips ...",
 *       "labels ...", "n N", and "names ..." / "paths ..." of the --idx
 *       images in --idx order.
 *   data_tool bench SOURCE [opts] [--batches N]
 *       prints images/s of the loader alone (shuffled, augmented).
 * SOURCE: --labels FILE [--image-dir DIR] | --pack FILE.
 * opts: --size S --channels C --augment 0|1 --seed S --epoch E --threads T
 *       --batch B --task T --shuffle 0|1
 *       --crop-scale LO,HI --crop-ratio LO,HI --rotate D --brightness X
 *       --contrast X --gamma X (cx_augment), --raw 1 (mean 0, std 1: the
 *       pixel values in [0, 1]), --shard K --shards N (a part of each batch) */
#include "chexnet.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: data_tool batch|bench ...\n");
        return 2;
    }
    const char *mode = argv[1], *labels = NULL, *pack = NULL, *dir = NULL, *idxs = NULL,
               *out = NULL, *task = NULL;
    cx_loader_opts lo;
    cx_loader_opts_default(&lo);
    lo.shuffle = 0;
    int epoch = 0, batches = 50, shuffle = -1;
    lo.batch = 0;
    for (int i = 2; i + 1 < argc; i += 2) {
        const char *o = argv[i], *v = argv[i + 1];
        if (!strcmp(o, "--labels")) labels = v;
        else if (!strcmp(o, "--pack")) pack = v;
        else if (!strcmp(o, "--image-dir")) dir = v;
        else if (!strcmp(o, "--idx")) idxs = v;
        else if (!strcmp(o, "--out")) out = v;
        else if (!strcmp(o, "--task")) task = v;
        else if (!strcmp(o, "--size")) lo.size = atoi(v);
        else if (!strcmp(o, "--channels")) lo.channels = atoi(v);
        else if (!strcmp(o, "--augment")) lo.augment = atoi(v);
        else if (!strcmp(o, "--seed")) lo.seed = strtoull(v, NULL, 10);
        else if (!strcmp(o, "--epoch")) epoch = atoi(v);
        else if (!strcmp(o, "--threads")) lo.threads = atoi(v);
        else if (!strcmp(o, "--batch")) lo.batch = atoi(v);
        else if (!strcmp(o, "--batches")) batches = atoi(v);
        else if (!strcmp(o, "--shuffle")) shuffle = atoi(v);
        else if (!strcmp(o, "--crop-scale"))
            sscanf(v, "%lf,%lf", &lo.aug.crop_scale[0], &lo.aug.crop_scale[1]);
        else if (!strcmp(o, "--crop-ratio"))
            sscanf(v, "%lf,%lf", &lo.aug.crop_ratio[0], &lo.aug.crop_ratio[1]);
        else if (!strcmp(o, "--rotate")) lo.aug.rotate = atof(v);
        else if (!strcmp(o, "--shard")) lo.shard = atoi(v);
        else if (!strcmp(o, "--shards")) lo.shards = atoi(v);
        else if (!strcmp(o, "--brightness")) lo.aug.brightness = atof(v);
        else if (!strcmp(o, "--contrast")) lo.aug.contrast = atof(v);
        else if (!strcmp(o, "--gamma")) lo.aug.gamma = atof(v);
        else if (!strcmp(o, "--raw")) {
            for (int c = 0; c < 3 && atoi(v); c++)
                lo.mean[c] = 0, lo.std[c] = 1;
        }
        else {
            fprintf(stderr, "data_tool: unknown option %s\n", o);
            return 2;
        }
    }
    cx_err err = {0};
    cx_dataset *ds = NULL;
    if (pack) {
        if (cx_pack_open(pack, &ds, &err)) {
            fprintf(stderr, "data_tool: %s\n", err.msg);
            return 1;
        }
    } else {
        cx_dataset_opts o;
        cx_dataset_opts_default(&o);
        o.labels = labels;
        o.image_dir = dir;
        o.task = task;
        if (cx_dataset_load(&o, &ds, &err)) {
            fprintf(stderr, "data_tool: %s\n", err.msg);
            return 1;
        }
    }
    int N = cx_dataset_size(ds), K = cx_dataset_num_classes(ds);
    int *idx = malloc((size_t)N * sizeof *idx), n = 0;
    if (idxs) {
        for (const char *s = idxs; *s;) {
            idx[n++] = atoi(s);
            const char *c = strchr(s, ',');
            if (!c)
                break;
            s = c + 1;
        }
    } else {
        for (int i = 0; i < N; i++)
            idx[n++] = i;
    }
    if (!strcmp(mode, "batch")) {
        if (!lo.batch)
            lo.batch = n;
        if (shuffle >= 0)
            lo.shuffle = shuffle;
    } else {
        if (!lo.batch)
            lo.batch = 16;
        lo.shuffle = shuffle >= 0 ? shuffle : 1;
    }
    cx_loader *l;
    if (cx_loader_new(ds, idx, n, &lo, &l, &err)) {
        fprintf(stderr, "data_tool: %s\n", err.msg);
        return 1;
    }
    size_t img = (size_t)lo.channels * lo.size * lo.size;
    float *x = malloc((size_t)lo.batch * img * sizeof(float));
    float *y = malloc((size_t)lo.batch * (K ? K : 1) * sizeof(float));
    int *ids = malloc((size_t)lo.batch * sizeof(int));
    if (cx_loader_start_epoch(l, epoch, 0, &err)) {
        fprintf(stderr, "data_tool: %s\n", err.msg);
        return 1;
    }
    int got;
    if (!strcmp(mode, "batch")) {
        FILE *f = out ? fopen(out, "wb") : NULL;
        printf("ids");
        int total = 0;
        char flips[65536] = "", labs[65536] = "";
        size_t fu = 0, lu = 0;
        while (1) {
            if (cx_loader_next(l, x, y, ids, &got, &err)) {
                fprintf(stderr, "data_tool: %s\n", err.msg);
                return 1;
            }
            if (!got)
                break;
            if (f)
                fwrite(x, sizeof(float), (size_t)got * img, f);
            for (int j = 0; j < got; j++) {
                printf(" %d", ids[j]);
                if (fu + 8 < sizeof flips)
                    fu += (size_t)sprintf(flips + fu, " %d", cx_loader_flips(&lo, epoch, ids[j]));
                for (int k = 0; k < K && lu + 8 < sizeof labs; k++)
                    lu += (size_t)sprintf(labs + lu, " %g", y[j * K + k]);
            }
            total += got;
        }
        if (f)
            fclose(f);
        printf("\nflips%s\nlabels%s\nn %d\nnames", flips, labs, total);
        for (int j = 0; j < n; j++)
            printf(" %s", cx_dataset_name(ds, idx[j]));
        printf("\npaths");
        for (int j = 0; j < n; j++)
            printf(" %s", cx_dataset_path(ds, idx[j]) ? cx_dataset_path(ds, idx[j]) : "-");
        printf("\n");
    } else {
        double t0 = now();
        long images = 0;
        for (int b = 0; b < batches; b++) {
            if (cx_loader_next(l, x, y, NULL, &got, &err)) {
                fprintf(stderr, "data_tool: %s\n", err.msg);
                return 1;
            }
            if (!got) {
                if (cx_loader_start_epoch(l, ++epoch, 0, &err))
                    return 1;
                b--;
                continue;
            }
            images += got;
        }
        double dt = now() - t0;
        printf("loader: %ld images in %.3f s: %.1f images/s (threads %d, batch %d, size %d, "
               "%s)\n",
               images, dt, images / dt, lo.threads, lo.batch, lo.size, pack ? "pack" : "files");
    }
    cx_loader_free(l);
    cx_dataset_free(ds);
    free(idx);
    free(x);
    free(y);
    free(ids);
    return 0;
}
