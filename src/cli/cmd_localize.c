/* chexnet localize: the heat maps against radiologists' boxes.
 *
 *   chexnet localize [--model FILE] --boxes FILE --images DIR
 *                    [--threshold T] [--bootstrap N] [--seed S]
 *                    [--json FILE] [--csv FILE] [--batch N] [--threads T]
 *
 * For every image of the box list found in DIR and every class of the model
 * with boxes on it: the pointing game and the IoU of the thresholded map
 * (cx_localize), per class and overall, with bootstrap CIs over images.
 */
#define _GNU_SOURCE
#include "cli.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define CMD "localize"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: chexnet localize [--model FILE] --boxes FILE --images DIR\n"
            "                        [--threshold T] [--bootstrap N] [--seed S]\n"
            "                        [--json FILE] [--csv FILE] [--batch N] [--threads T]\n\n"
            "How well the class activation maps point at radiologists' boxes.\n\n"
            "  --model FILE      safetensors model (default: the bundled model)\n"
            "  --boxes FILE      box list, BBox_List_2017.csv[.gz] of ChestX-ray14:\n"
            "                    Image Index,Finding Label,x,y,w,h in the original\n"
            "                    image's pixels (Infiltrate = Infiltration)\n"
            "  --images DIR      the images, DIR/<Image Index>; images not there are\n"
            "                    left out (counted on stderr)\n"
            "  --threshold T     the map is thresholded at min + T (max - min) for the\n"
            "                    IoU, T in [0, 1] (default 0.5)\n"
            "  --bootstrap N     resamples of images for the 95%% CIs (default 10000;\n"
            "                    0: none)\n"
            "  --seed S          bootstrap seed (default 0)\n"
            "  --json FILE       write the figures, per class and per item, as JSON\n"
            "  --csv FILE        write the per-class table as CSV\n"
            "  --batch N         network batch (default 8)\n"
            "  --threads T       threads (default: all)\n\n"
            "Each (image, class with boxes) is an item. Its map is upsampled to the\n"
            "original image's size. Pointing game: the map's peak lies in one of the\n"
            "item's boxes (with tied peaks, the share of them that do). IoU: the\n"
            "pixels at or above the threshold against the union of the boxes (a pixel\n"
            "is in a box when its centre is). Classes of the list the model does not\n"
            "have are left out, with a note.\n\n"
            "%s\n",
            cli_limits_help());
}

typedef struct {
    int image;       /* index into the image list */
    int cls;
    int first, n;    /* boxes: entries [first, first + n) of the sorted list */
} pair;

typedef struct {
    const cx_model *m;
    cx_ctx *ctx;
    int nc;
    int *first_pair, *n_pairs; /* [images]: that image's pairs */
    const pair *pairs;
    float *maps;               /* [pairs][h * w] */
    int *width, *height;       /* [images] */
    float *prob;               /* [pairs] */
    int h, w;
    cx_err err;
} run_ctx;

static int on_batch(void *user, const cli_batch *b)
{
    run_ctx *r = user;
    for (int j = 0; j < b->n; j++) {
        size_t i = b->index[j];
        r->width[i] = b->keep[j].width;
        r->height[i] = b->keep[j].height;
        for (int q = r->first_pair[i]; q < r->first_pair[i] + r->n_pairs[i]; q++) {
            int c = r->pairs[q].cls;
            r->prob[q] = (float)b->prob[(size_t)j * r->nc + c];
            if (cx_cam_compute(r->ctx, r->m, j, c, r->maps + (size_t)q * r->h * r->w, NULL,
                               NULL, &r->err))
                return 1;
        }
    }
    return 0;
}

typedef struct {
    const cx_box_entry *e;
    int cls;
} entry_ref;

static int cmp_entry(const void *a, const void *b)
{
    const entry_ref *x = a, *y = b;
    int c = strcmp(x->e->image, y->e->image);
    if (c)
        return c;
    if (x->cls != y->cls)
        return x->cls < y->cls ? -1 : 1;
    return x->e->line < y->e->line ? -1 : x->e->line > y->e->line;
}

static void put_num(FILE *f, double v)
{
    if (isfinite(v))
        fprintf(f, "%.17g", v);
    else
        fputs("null", f);
}

static void put_stat(FILE *f, const cx_stat *s)
{
    fputs("{\"value\": ", f);
    put_num(f, s->value);
    fputs(", \"ci95\": [", f);
    put_num(f, s->lo);
    fputs(", ", f);
    put_num(f, s->hi);
    fputs("]}", f);
}

static void put_group(FILE *f, const cx_loc_stat *g)
{
    fprintf(f, "{\"n_items\": %d, \"n_images\": %d, \"pointing\": ", g->n_items, g->n_images);
    put_stat(f, &g->pointing);
    fputs(", \"iou\": ", f);
    put_stat(f, &g->iou);
    fputs("}", f);
}

static void csv_num(FILE *f, double v)
{
    if (isfinite(v))
        fprintf(f, ",%.17g", v);
    else
        fputs(",", f);
}

static void csv_group(FILE *f, const char *name, const cx_loc_stat *g)
{
    cx_csv_field(f, name);
    fprintf(f, ",%d,%d", g->n_items, g->n_images);
    csv_num(f, g->pointing.value);
    csv_num(f, g->pointing.lo);
    csv_num(f, g->pointing.hi);
    csv_num(f, g->iou.value);
    csv_num(f, g->iou.lo);
    csv_num(f, g->iou.hi);
    fputc('\n', f);
}

static void table_stat(const cx_stat *s, int boot)
{
    char b[64];
    if (!isfinite(s->value))
        snprintf(b, sizeof b, "-");
    else if (boot && isfinite(s->lo))
        snprintf(b, sizeof b, "%.3f (%.3f-%.3f)", s->value, s->lo, s->hi);
    else
        snprintf(b, sizeof b, "%.3f", s->value);
    printf("  %-21s", b);
}

static int write_text(const char *path, char *buf, size_t n)
{
    cx_err err = {0};
    if (cx_write_file_atomic(path, buf, n, &err))
        return cli_fail(CMD, &err);
    return 0;
}

int cmd_localize(int argc, char **argv)
{
    enum { O_MODEL = CLI_OPT_FIRST_FREE, O_BOXES, O_IMAGES, O_THRESHOLD, O_BOOTSTRAP, O_SEED,
           O_JSON, O_CSV, O_BATCH, O_THREADS };
    static const struct option opts[] = {
        {"model", required_argument, 0, O_MODEL},
        {"boxes", required_argument, 0, O_BOXES},
        {"images", required_argument, 0, O_IMAGES},
        {"threshold", required_argument, 0, O_THRESHOLD},
        {"bootstrap", required_argument, 0, O_BOOTSTRAP},
        {"seed", required_argument, 0, O_SEED},
        {"json", required_argument, 0, O_JSON},
        {"csv", required_argument, 0, O_CSV},
        {"batch", required_argument, 0, O_BATCH},
        {"threads", required_argument, 0, O_THREADS},
        {0, 0, 0, 0}};
    const char *model_path = NULL, *boxes_path = NULL, *dir = NULL, *json_path = NULL,
               *csv_path = NULL;
    cx_loc_opts lo;
    cx_loc_opts_default(&lo);
    long batch = 8, threads = 0, nboot = lo.n_bootstrap, seed = 0;
    cli_getopt g;
    int opt;
    cli_getopt_init(&g, CMD, argc, argv, "", opts, CLI_LIMITS, usage);
    while ((opt = cli_getopt_next(&g)) != -1) {
        switch (opt) {
        case CLI_OPT_EXIT:
            return g.exit_code;
        case O_MODEL:
            model_path = optarg;
            break;
        case O_BOXES:
            boxes_path = optarg;
            break;
        case O_IMAGES:
            dir = optarg;
            break;
        case O_THRESHOLD:
            if (cli_parse_double(optarg, &lo.threshold) || !(lo.threshold >= 0) ||
                !(lo.threshold <= 1)) {
                cli_error(CMD, "--threshold must be a number in [0, 1], not '%s'", optarg);
                return 2;
            }
            break;
        case O_BOOTSTRAP:
            if (cli_opt_int(&g, 0, 1000000, &nboot))
                return 2;
            break;
        case O_SEED:
            if (cli_opt_int(&g, 0, LONG_MAX, &seed))
                return 2;
            break;
        case O_JSON:
            json_path = optarg;
            break;
        case O_CSV:
            csv_path = optarg;
            break;
        case O_BATCH:
            if (cli_opt_int(&g, 1, 1024, &batch))
                return 2;
            break;
        case O_THREADS:
            if (cli_opt_int(&g, 0, 4096, &threads))
                return 2;
            break;
        default:
            return 2;
        }
    }
    if (optind < argc) {
        cli_error(CMD, "unexpected argument '%s'", argv[optind]);
        return 2;
    }
    if (!boxes_path || !dir) {
        cli_error(CMD, "--boxes FILE and --images DIR are required (see --help)");
        return 2;
    }
    if (!model_path && !(model_path = cli_default_model())) {
        cli_error(CMD, "no --model given and no default model found (set CHEXNET_MODEL or "
                       "install chexnet's models)");
        return 2;
    }
    lo.n_bootstrap = (int)nboot;
    lo.seed = (uint64_t)seed;
    cx_set_threads((int)threads);

    cx_err err = {0};
    cx_model *m = NULL;
    cx_box_list bl = {0};
    if (cx_model_load(model_path, &m, &err))
        return cli_fail(CMD, &err);
    if (cx_box_list_read(boxes_path, &bl, &err)) {
        cx_model_free(m);
        return cli_fail(CMD, &err);
    }
    const int nc = cx_model_num_classes(m);
    int rc = 1;
    entry_ref *refs = malloc(sizeof *refs * (size_t)(bl.n ? bl.n : 1));
    pair *pairs = malloc(sizeof *pairs * (size_t)(bl.n ? bl.n : 1));
    cx_box *boxes = malloc(sizeof *boxes * (size_t)(bl.n ? bl.n : 1));
    cli_strvec files = {0};
    cx_ctx *ctx = NULL;
    run_ctx r = {0};
    cx_loc_item *items = NULL;
    cx_loc_result res = {0};
    const char **img_name = NULL;
    if (!refs || !pairs || !boxes) {
        cli_error(CMD, "out of memory");
        goto out;
    }
    /* the boxes of the model's classes; the others are counted */
    int nref = 0, n_other = 0;
    for (int i = 0; i < bl.n; i++) {
        int c = -1;
        for (int k = 0; k < nc && c < 0; k++)
            if (cx_class_name_eq(bl.v[i].label, cx_model_class_name(m, k)))
                c = k;
        if (c < 0) {
            n_other++;
            continue;
        }
        refs[nref].e = &bl.v[i];
        refs[nref].cls = c;
        nref++;
    }
    if (n_other) {
        /* one note naming the labels left out */
        fprintf(stderr, "chexnet localize: note: %d of %d boxes are of findings the model does "
                        "not have, left out:", n_other, bl.n);
        for (int i = 0; i < bl.n; i++) {
            int seen = 0, known = 0;
            for (int k = 0; k < nc; k++)
                known |= cx_class_name_eq(bl.v[i].label, cx_model_class_name(m, k));
            for (int j = 0; j < i && !seen; j++)
                seen = cx_class_name_eq(bl.v[j].label, bl.v[i].label);
            if (!known && !seen)
                fprintf(stderr, " %s", bl.v[i].label);
        }
        fputc('\n', stderr);
    }
    qsort(refs, (size_t)nref, sizeof *refs, cmp_entry);
    /* images (distinct names, in sorted order) found in DIR; pairs per image */
    int n_img = 0, n_missing = 0, npair = 0;
    const char *first_missing = NULL;
    img_name = malloc(sizeof(char *) * (size_t)(nref ? nref : 1));
    if (!img_name) {
        cli_error(CMD, "out of memory");
        goto out;
    }
    for (int i = 0; i < nref;) {
        int j = i;
        while (j < nref && !strcmp(refs[j].e->image, refs[i].e->image))
            j++;
        char *path = cli_path_join(dir, refs[i].e->image);
        struct stat sb;
        if (!path) {
            cli_error(CMD, "out of memory");
            goto out;
        }
        if (stat(path, &sb) || !S_ISREG(sb.st_mode)) {
            n_missing++;
            if (!first_missing)
                first_missing = refs[i].e->image;
            free(path);
            i = j;
            continue;
        }
        if (cli_strvec_push(&files, path)) {
            cli_error(CMD, "out of memory");
            goto out;
        }
        img_name[n_img] = refs[i].e->image;
        for (int k = i; k < j;) {
            int l = k;
            pairs[npair].image = n_img;
            pairs[npair].cls = refs[k].cls;
            pairs[npair].first = k;
            while (l < j && refs[l].cls == refs[k].cls) {
                boxes[l] = refs[l].e->box;
                l++;
            }
            pairs[npair].n = l - k;
            npair++;
            k = l;
        }
        n_img++;
        i = j;
    }
    if (n_missing)
        fprintf(stderr, "chexnet localize: note: %d of %d images with boxes are not in %s (e.g. "
                        "%s), left out\n", n_missing, n_missing + n_img, dir, first_missing);
    if (!n_img) {
        cli_error(CMD, "no image of %s with boxes of the model's classes (%s%s) is in %s",
                  boxes_path, cx_model_class_name(m, 0), nc > 1 ? ", ..." : "", dir);
        goto out;
    }

    /* the maps */
    const int S = cx_model_input_size(m);
    int per_pass = (int)(batch < n_img ? batch : n_img);
    if (cx_ctx_new(m, per_pass, S, S, CX_BACKEND_CPU, &ctx, &err)) {
        cli_fail(CMD, &err);
        goto out;
    }
    cx_cam_compute(ctx, m, 0, 0, NULL, &r.h, &r.w, NULL);
    r.m = m;
    r.ctx = ctx;
    r.nc = nc;
    r.pairs = pairs;
    r.first_pair = calloc((size_t)n_img, sizeof(int));
    r.n_pairs = calloc((size_t)n_img, sizeof(int));
    r.width = calloc((size_t)n_img, sizeof(int));
    r.height = calloc((size_t)n_img, sizeof(int));
    r.prob = calloc((size_t)npair, sizeof(float));
    r.maps = malloc(sizeof(float) * (size_t)npair * (size_t)(r.h > 0 ? r.h : 1) *
                    (size_t)(r.w > 0 ? r.w : 1));
    items = calloc((size_t)npair, sizeof *items);
    if (!r.first_pair || !r.n_pairs || !r.width || !r.height || !r.prob || !r.maps || !items) {
        cli_error(CMD, "out of memory");
        goto out;
    }
    for (int q = npair - 1; q >= 0; q--) {
        r.first_pair[pairs[q].image] = q;
        r.n_pairs[pairs[q].image]++;
    }
    cli_progress pr;
    cli_progress_start(&pr, "localize", "img", n_img);
    long done = 0;
    cli_infer in = {0};
    in.m = m;
    in.ctx = ctx;
    in.per_pass = per_pass;
    in.files = files.v;
    in.n_files = files.n;
    in.keep_images = 1;
    in.stop_on_bad = 1;
    in.on_batch = on_batch;
    in.user = &r;
    in.done = &done;
    in.progress = &pr;
    cli_infer_status is = cli_infer_run(&in, &err);
    if (is == CLI_INFER_STOPPED)
        err = r.err;
    if (is) {
        cli_progress_end(&pr);
        cli_fail(CMD, &err);
        goto out;
    }
    cli_progress_end(&pr);
    for (int q = 0; q < npair; q++) {
        items[q].image = pairs[q].image;
        items[q].cls = pairs[q].cls;
        items[q].map = r.maps + (size_t)q * r.h * r.w;
        items[q].h = r.h;
        items[q].w = r.w;
        items[q].width = r.width[pairs[q].image];
        items[q].height = r.height[pairs[q].image];
        items[q].n_boxes = pairs[q].n;
        items[q].boxes = boxes + pairs[q].first;
    }
    if (cx_localize(items, npair, nc, &lo, &res, &err)) {
        cli_fail(CMD, &err);
        goto out;
    }

    /* the table */
    int boot = lo.n_bootstrap > 0;
    printf("%s, ", cli_plural(n_img, "image", "images"));
    printf("%s; IoU at %g of each map's range%s\n", cli_plural(npair, "item", "items"),
           lo.threshold, boot ? "; 95% bootstrap CIs over images" : "");
    printf("%-20s %5s  %-21s  %-21s\n", "class", "items", "pointing game", "IoU");
    for (int k = 0; k < nc; k++) {
        const cx_loc_stat *s = &res.per_class[k];
        printf("%-20s %5d", cx_model_class_name(m, k), s->n_items);
        table_stat(&s->pointing, boot);
        table_stat(&s->iou, boot);
        putchar('\n');
    }
    printf("%-20s %5d", "overall", res.overall.n_items);
    table_stat(&res.overall.pointing, boot);
    table_stat(&res.overall.iou, boot);
    putchar('\n');
    fflush(stdout);

    if (json_path) {
        char *buf = NULL;
        size_t n = 0;
        FILE *f = open_memstream(&buf, &n);
        if (!f) {
            cli_error(CMD, "out of memory");
            goto out;
        }
        fputs("{\"model\": ", f);
        cx_json_escape(f, model_path);
        fputs(", \"boxes\": ", f);
        cx_json_escape(f, boxes_path);
        fprintf(f, ", \"threshold\": %.17g, \"n_bootstrap\": %d, \"seed\": %lu, \"n_images\": %d",
                lo.threshold, lo.n_bootstrap, (unsigned long)lo.seed, n_img);
        fprintf(f, ", \"n_images_missing\": %d, \"classes\": {", n_missing);
        for (int k = 0; k < nc; k++) {
            if (k)
                fputs(", ", f);
            cx_json_escape(f, cx_model_class_name(m, k));
            fputs(": ", f);
            put_group(f, &res.per_class[k]);
        }
        fputs("}, \"overall\": ", f);
        put_group(f, &res.overall);
        fputs(", \"items\": [", f);
        for (int q = 0; q < npair; q++) {
            fputs(q ? ",\n  {\"image\": " : "\n  {\"image\": ", f);
            cx_json_escape(f, img_name[pairs[q].image]);
            fputs(", \"class\": ", f);
            cx_json_escape(f, cx_model_class_name(m, pairs[q].cls));
            fprintf(f, ", \"width\": %d, \"height\": %d, \"probability\": %.9g, \"boxes\": [",
                    items[q].width, items[q].height, r.prob[q]);
            for (int b = 0; b < items[q].n_boxes; b++)
                fprintf(f, "%s[%.17g, %.17g, %.17g, %.17g]", b ? ", " : "",
                        items[q].boxes[b].x, items[q].boxes[b].y, items[q].boxes[b].w,
                        items[q].boxes[b].h);
            fprintf(f, "], \"pointing\": %.17g, \"iou\": %.17g}", res.hit[q], res.iou[q]);
        }
        fputs("]}\n", f);
        fclose(f);
        int wr = write_text(json_path, buf, n);
        free(buf);
        if (wr)
            goto out;
    }
    if (csv_path) {
        char *buf = NULL;
        size_t n = 0;
        FILE *f = open_memstream(&buf, &n);
        if (!f) {
            cli_error(CMD, "out of memory");
            goto out;
        }
        fputs("class,n_items,n_images,pointing,pointing_lo,pointing_hi,iou,iou_lo,iou_hi\n", f);
        for (int k = 0; k < nc; k++)
            csv_group(f, cx_model_class_name(m, k), &res.per_class[k]);
        csv_group(f, "overall", &res.overall);
        fclose(f);
        int wr = write_text(csv_path, buf, n);
        free(buf);
        if (wr)
            goto out;
    }
    rc = 0;
out:
    cx_loc_result_free(&res);
    free(items);
    free(r.first_pair);
    free(r.n_pairs);
    free(r.width);
    free(r.height);
    free(r.prob);
    free(r.maps);
    cx_ctx_free(ctx);
    cli_strvec_free(&files);
    free(img_name);
    free(refs);
    free(pairs);
    free(boxes);
    cx_box_list_free(&bl);
    cx_model_free(m);
    return rc;
}
