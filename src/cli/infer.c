/* The inference batch loop of the CLI (predict on files and on packs,
 * evaluate --model): inputs decoded in parallel a batch at a time (or taken
 * from a loader), one forward pass per batch, the model's probabilities
 * (sigmoid of the logit over the class's temperature) averaged over the
 * crops, handed to the caller batch by batch in input order. */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

cli_infer_status cli_infer_run(const cli_infer *o, cx_err *err)
{
    const cx_model *m = o->m;
    const int nc = cx_model_num_classes(m);
    const int crops = o->ten_crop ? 10 : 1;
    const int per = o->per_pass;
    const size_t in_floats = cx_image_input_floats(m, o->ten_crop);
    const size_t plain_floats = cx_image_input_floats(m, 0);
    const int plain_too = o->plain_too && o->ten_crop && !o->loader;
    cli_infer_status rc = CLI_INFER_NOMEM;
    float *input = malloc(sizeof(float) * in_floats * (size_t)per);
    float *plain = plain_too ? malloc(sizeof(float) * plain_floats * (size_t)per) : NULL;
    float *logits = malloc(sizeof(float) * (size_t)nc * per * crops);
    double *prob = malloc(sizeof(double) * (size_t)nc * per);
    size_t *index = malloc(sizeof(size_t) * (size_t)per);
    int *ids = malloc(sizeof(int) * (size_t)per);
    cx_image *keep = calloc((size_t)per, sizeof *keep);
    cx_image_info *infos = calloc((size_t)per, sizeof *infos);
    cx_status *status = calloc((size_t)per, sizeof *status);
    cx_err *errs = calloc((size_t)per, sizeof *errs);
    if (!input || (plain_too && !plain) || !logits || !prob || !index || !ids || !keep ||
        !infos || !status || !errs) {
        cx_seterr(err, CX_ENOMEM, "out of memory for a batch of %d", per);
        goto out;
    }
    for (size_t start = 0;; start += (size_t)per) {
        int nb = 0, ng = 0;
        if (o->loader) {
            cx_status st = cx_loader_next(o->loader, input, NULL, ids, &nb, err);
            if (st) {
                rc = CLI_INFER_SOURCE;
                goto out;
            }
            for (int i = 0; i < nb; i++)
                index[i] = (size_t)ids[i];
            ng = nb;
        } else {
            if (start >= o->n_files)
                break;
            nb = (int)(o->n_files - start < (size_t)per ? o->n_files - start : (size_t)per);
            const int full = o->keep_images || o->want_info || plain_too;
            /* decode + preprocess in parallel */
#pragma omp parallel for schedule(dynamic, 1)
            for (int i = 0; i < nb; i++) {
                const char *path = o->files[start + i];
                errs[i].msg[0] = 0;
                if (full)
                    status[i] = cx_image_load_input_info(m, path, o->ten_crop,
                                                         input + (size_t)i * in_floats,
                                                         &keep[i], &infos[i], &errs[i]);
                else
                    status[i] = cx_image_load_input(m, path, o->ten_crop,
                                                    input + (size_t)i * in_floats, NULL,
                                                    &errs[i]);
                if (!status[i] && plain)
                    status[i] = cx_image_preprocess(m, &keep[i], 0,
                                                    plain + (size_t)i * plain_floats, &errs[i]);
            }
            /* the unreadable ones: reported (or the first stops the run), the
             * others compacted to the front, input order kept */
            for (int i = 0; i < nb; i++) {
                if (status[i]) {
                    cx_image_free(&keep[i]);
                    if (o->stop_on_bad) {
                        cx_seterr(err, status[i], "%s",
                                  errs[i].msg[0] ? errs[i].msg : o->files[start + i]);
                        rc = CLI_INFER_BAD_INPUT;
                        goto out;
                    }
                    if (o->on_bad)
                        o->on_bad(o->user, start + (size_t)i, &errs[i]);
                    continue;
                }
                if (ng != i) {
                    memmove(input + (size_t)ng * in_floats, input + (size_t)i * in_floats,
                            sizeof(float) * in_floats);
                    if (plain)
                        memmove(plain + (size_t)ng * plain_floats,
                                plain + (size_t)i * plain_floats, sizeof(float) * plain_floats);
                    keep[ng] = keep[i];
                    memset(&keep[i], 0, sizeof keep[i]);
                    infos[ng] = infos[i];
                }
                index[ng++] = start + (size_t)i;
            }
        }
        if (o->loader && nb == 0)
            break;
        if (ng > 0) {
            if (cx_forward(o->ctx, input, ng * crops, logits, err)) {
                rc = CLI_INFER_FORWARD;
                goto out;
            }
            for (int j = 0; j < ng; j++)
                for (int c = 0; c < nc; c++) {
                    double s = 0;
                    for (int k = 0; k < crops; k++)
                        s += cx_model_probability(m, c, logits[((size_t)j * crops + k) * nc + c]);
                    prob[(size_t)j * nc + c] = s / crops;
                }
            cli_batch b = {ng, index, prob, keep, infos, plain, logits};
            int stop = o->on_batch(o->user, &b);
            for (int j = 0; j < ng; j++)
                cx_image_free(&keep[j]);
            if (stop) {
                rc = CLI_INFER_STOPPED;
                goto out;
            }
        }
        if (o->done) {
            *o->done += nb;
            if (o->progress)
                cli_progress_update(o->progress, *o->done);
        }
    }
    rc = CLI_INFER_OK;
out:
    if (keep)
        for (int i = 0; i < per; i++)
            cx_image_free(&keep[i]);
    free(input);
    free(plain);
    free(logits);
    free(prob);
    free(index);
    free(ids);
    free(keep);
    free(infos);
    free(status);
    free(errs);
    return rc;
}
