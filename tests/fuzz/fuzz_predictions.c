/* fuzz_predictions: cx_pred_load (image column, score columns named by
 * class, numbers, duplicates), then an evaluation of what loads against
 * labels made from it. */
#include "fuzz_common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_setup();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = fuzz_file(data, size, "pred.csv");
    cx_pred_table *t = NULL;
    cx_err err;
    if (cx_pred_load(p, &t, &err) != CX_OK)
        return 0;
    for (int i = 0; i < t->n_warnings; i++)
        if (!t->warnings[i])
            abort();
    /* AUROC and ROC of each class against labels score >= median */
    if (t->n_images > 0 && t->n_images <= 4096) {
        double *s = malloc(sizeof(double) * t->n_images);
        int8_t *y = malloc((size_t)t->n_images);
        for (int k = 0; s && y && k < t->n_classes && k < 8; k++) {
            for (int i = 0; i < t->n_images; i++) {
                s[i] = t->scores[(size_t)i * t->n_classes + k];
                y[i] = (int8_t)(s[i] >= t->scores[k]);
            }
            double auc;
            (void)cx_auroc(s, y, (size_t)t->n_images, &auc);
            double *fpr, *tpr, *thr;
            size_t np;
            if (cx_roc_curve(s, y, (size_t)t->n_images, 1, &fpr, &tpr, &thr, &np, &err) ==
                CX_OK) {
                free(fpr);
                free(tpr);
                free(thr);
            }
        }
        free(s);
        free(y);
    }
    cx_pred_free(t);
    return 0;
}
