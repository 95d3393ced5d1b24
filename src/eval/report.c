/* JSON and self-contained HTML reports of evaluations and reader studies,
 * with ROC curves drawn as SVG by chexnet itself. All files are written
 * atomically (cx_write_file_atomic). */
#define _GNU_SOURCE
#include "eval/eval_internal.h"
#include "eval/textbuf.h"
#include "io/fileutil.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static const char *PRNG_DOC =
    "xoshiro256** per resample b, state = 4 outputs of splitmix64 from seed ^ "
    "(0x9E3779B97F4A7C15*(b+1)); Lemire unbiased bounded draws";

static cx_status write_tb(cx_tb *b, const char *path, cx_err *err)
{
    if (b->oom) {
        cx_tb_free(b);
        return cx_seterr(err, CX_ENOMEM, "out of memory writing %s", path);
    }
    cx_status st = cx_write_file_atomic(path, b->s ? b->s : "", b->n, err);
    cx_tb_free(b);
    return st;
}

static cx_status make_dir(const char *dir, cx_err *err) { return cx_mkdir_p(dir, err); }

static void json_stat(cx_tb *b, const cx_stat *s)
{
    cx_tb_puts(b, "{\"value\": ");
    cx_tb_json_num(b, s->value);
    cx_tb_puts(b, ", \"ci95\": [");
    cx_tb_json_num(b, s->lo);
    cx_tb_puts(b, ", ");
    cx_tb_json_num(b, s->hi);
    cx_tb_puts(b, "]");
}

static void json_bootstrap(cx_tb *b, int n, uint64_t seed, double secs, int threads)
{
    cx_tb_printf(b, "{\"resamples\": %d, \"seed\": %llu, \"ci\": \"percentile 2.5/97.5 "
                    "(numpy linear interpolation)\", \"prng\": ",
                 n, (unsigned long long)seed);
    cx_tb_json_str(b, PRNG_DOC);
    if (secs >= 0) {
        cx_tb_puts(b, ", \"seconds\": ");
        cx_tb_json_num(b, secs);
        cx_tb_printf(b, ", \"threads\": %d", threads);
    }
    cx_tb_puts(b, "}");
}

static void json_warnings(cx_tb *b, int n, char **w)
{
    cx_tb_puts(b, "[");
    for (int i = 0; i < n; i++) {
        if (i)
            cx_tb_puts(b, ", ");
        cx_tb_json_str(b, w[i]);
    }
    cx_tb_puts(b, "]");
}

/* "provenance": {...} (without a leading comma or newline). */
static const char *base_name(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

static void json_provenance(cx_tb *b, const cx_provenance *p)
{
    cx_tb_puts(b, "{\"chexnet_version\": ");
    cx_tb_json_str(b, p->version);
    cx_tb_puts(b, ", \"created\": ");
    cx_tb_json_str(b, p->created);
    cx_tb_puts(b, ", \"command_line\": ");
    cx_tb_json_str(b, p->command_line ? p->command_line : "");
    cx_tb_puts(b, ", \"inputs\": [");
    for (int i = 0; i < p->n_inputs; i++) {
        const cx_prov_input *x = &p->inputs[i];
        cx_tb_puts(b, i ? ",\n      {\"role\": " : "\n      {\"role\": ");
        cx_tb_json_str(b, x->role);
        cx_tb_puts(b, ", \"path\": ");
        cx_tb_json_str(b, x->path);
        cx_tb_puts(b, ", \"name\": ");
        cx_tb_json_str(b, base_name(x->path));
        cx_tb_printf(b, ", \"bytes\": %lld, \"sha256\": \"%s\"}", x->size, x->sha256);
    }
    cx_tb_puts(b, "]}");
}

static void json_array(cx_tb *b, const double *v, size_t n)
{
    cx_tb_puts(b, "[");
    for (size_t j = 0; j < n; j++) {
        if (j)
            cx_tb_puts(b, ",");
        if (isfinite(v[j]))
            cx_tb_printf(b, "%.17g", v[j]);
        else
            cx_tb_puts(b, "null");
    }
    cx_tb_puts(b, "]");
}

static const char *CALIB_DOC =
    "equal-width bins of [0,1] with edges i/B: bin i holds scores in (i/B, (i+1)/B], the first "
    "also 0 (sklearn.calibration.calibration_curve, strategy='uniform'); labelled images only; "
    "ECE = sum over bins of n_b/N * |mean score - fraction positive|; CI: percentile bootstrap "
    "over the same image resamples as the AUROC";
static const char *BAND_DOC =
    "TPR of the ROC curve at each FPR of the grid (the highest TPR of the curve's points at that "
    "FPR, else linear between the neighbouring points), for the full data and for each bootstrap "
    "resample of the images (the resamples of the AUROC CIs); band: the 2.5th and 97.5th "
    "percentiles per grid point over the resamples with positives and negatives";

static void json_calibration(cx_tb *b, const cx_eval_result *r)
{
    cx_tb_printf(b, "{\"n_bins\": %d, \"method\": ", r->calib_bins);
    cx_tb_json_str(b, CALIB_DOC);
    cx_tb_puts(b, ", \"classes\": {");
    for (int k = 0; k < r->n_classes; k++) {
        const cx_class_eval *c = &r->cls[k];
        cx_tb_puts(b, k ? ",\n    " : "\n    ");
        cx_tb_json_str(b, c->name);
        cx_tb_printf(b, ": {\"defined\": %s, \"ece\": ", c->calib_defined ? "true" : "false");
        json_stat(b, &c->ece);
        cx_tb_puts(b, "}, \"bins\": [");
        for (int q = 0; q < c->n_bins; q++) {
            const cx_calib_bin *x = &c->bins[q];
            cx_tb_puts(b, q ? ", {\"lo\": " : "{\"lo\": ");
            cx_tb_json_num(b, x->lo);
            cx_tb_puts(b, ", \"hi\": ");
            cx_tb_json_num(b, x->hi);
            cx_tb_printf(b, ", \"n\": %ld, \"n_pos\": %ld, \"mean_predicted\": ", x->n, x->n_pos);
            cx_tb_json_num(b, x->mean_pred);
            cx_tb_puts(b, ", \"fraction_positive\": ");
            cx_tb_json_num(b, x->frac_pos);
            cx_tb_puts(b, "}");
        }
        cx_tb_puts(b, "]}");
    }
    cx_tb_puts(b, "\n  }}");
}

static void json_bands(cx_tb *b, const cx_eval_result *r)
{
    cx_tb_printf(b, "{\"grid_points\": %d, \"resamples\": %d, \"method\": ", r->band_points,
                 r->n_bootstrap);
    cx_tb_json_str(b, BAND_DOC);
    cx_tb_puts(b, ", \"classes\": {");
    for (int k = 0; k < r->n_classes; k++) {
        const cx_class_eval *c = &r->cls[k];
        cx_tb_puts(b, k ? ",\n    " : "\n    ");
        cx_tb_json_str(b, c->name);
        cx_tb_puts(b, ": {\"fpr\": ");
        json_array(b, c->band_fpr, (size_t)c->band_n);
        cx_tb_puts(b, ", \"tpr\": ");
        json_array(b, c->band_tpr, (size_t)c->band_n);
        cx_tb_puts(b, ", \"lo\": ");
        json_array(b, c->band_lo, (size_t)c->band_n);
        cx_tb_puts(b, ", \"hi\": ");
        json_array(b, c->band_hi, (size_t)c->band_n);
        cx_tb_printf(b, ", \"bootstrap_skipped\": %ld}", c->band_skipped);
    }
    cx_tb_puts(b, "\n  }}");
}

static const char *ZD_NAMES[5] = {"sensitivity", "specificity", "ppv", "npv", "f1"};

cx_status cx_eval_write_json(const cx_eval_result *r, const char *path, cx_err *err)
{
    cx_tb b;
    cx_tb_init(&b);
    cx_tb_printf(&b, "{\n  \"n_images\": %d,\n  \"classes\": [", r->n_images);
    for (int k = 0; k < r->n_classes; k++) {
        if (k)
            cx_tb_puts(&b, ", ");
        cx_tb_json_str(&b, r->cls[k].name);
    }
    cx_tb_puts(&b, "],\n  \"auroc\": {");
    for (int k = 0; k < r->n_classes; k++) {
        const cx_class_eval *c = &r->cls[k];
        cx_tb_puts(&b, k ? ",\n    " : "\n    ");
        cx_tb_json_str(&b, c->name);
        cx_tb_puts(&b, ": ");
        json_stat(&b, &c->auroc);
        cx_tb_printf(&b, ", \"defined\": %s, \"n\": %d, \"n_pos\": %d, \"n_neg\": %d, "
                         "\"n_missing\": %d, \"bootstrap_skipped\": %ld}",
                     c->defined ? "true" : "false", c->n, c->n_pos, c->n_neg, c->n_missing,
                     c->boot_skipped);
    }
    cx_tb_puts(&b, "\n  },\n  \"mean_auroc\": ");
    json_stat(&b, &r->mean_auroc);
    cx_tb_printf(&b, ", \"n_classes\": %d, \"bootstrap_skipped\": %ld},\n", r->n_mean_classes,
                 r->mean_skipped);
    cx_tb_puts(&b, "  \"operating_points\": {");
    for (int k = 0; k < r->n_classes; k++) {
        const cx_class_eval *c = &r->cls[k];
        cx_tb_puts(&b, k ? ",\n    " : "\n    ");
        cx_tb_json_str(&b, c->name);
        cx_tb_puts(&b, ": {\"rule\": ");
        cx_tb_json_str(&b, c->threshold_from_val ? cx_op_rule_name(r->rule) : "threshold");
        cx_tb_printf(&b, ", \"chosen_on\": \"%s\", \"threshold\": ",
                     c->threshold_from_val ? "validation" : "fixed");
        cx_tb_json_num(&b, c->threshold);
        cx_tb_printf(&b, ", \"tp\": %.0f, \"fp\": %.0f, \"tn\": %.0f, \"fn\": %.0f",
                     c->conf.tp, c->conf.fp, c->conf.tn, c->conf.fn);
        const cx_stat *ms[5] = {&c->sens, &c->spec, &c->ppv, &c->npv, &c->f1};
        for (int q = 0; q < 5; q++) {
            cx_tb_printf(&b, ", \"%s\": ", ZD_NAMES[q]);
            json_stat(&b, ms[q]);
            cx_tb_puts(&b, "}");
        }
        cx_tb_puts(&b, ", \"zero_division\": [");
        int first = 1;
        for (int q = 0; q < 5; q++)
            if (c->point.zero_division & (1u << q)) {
                cx_tb_printf(&b, "%s\"%s\"", first ? "" : ", ", ZD_NAMES[q]);
                first = 0;
            }
        cx_tb_puts(&b, "], \"bootstrap_zero_division\": {");
        for (int q = 0; q < 5; q++)
            cx_tb_printf(&b, "%s\"%s\": %ld", q ? ", " : "", ZD_NAMES[q], c->boot_zero_div[q]);
        cx_tb_puts(&b, "}}");
    }
    cx_tb_puts(&b, "\n  },\n  \"bootstrap\": ");
    json_bootstrap(&b, r->n_bootstrap, r->seed, r->n_bootstrap ? r->boot_seconds : -1,
                   r->threads);
    cx_tb_puts(&b, ",\n  \"roc\": {");
    for (int k = 0; k < r->n_classes; k++) {
        const cx_class_eval *c = &r->cls[k];
        cx_tb_puts(&b, k ? ",\n    " : "\n    ");
        cx_tb_json_str(&b, c->name);
        const double *arr[3] = {c->roc_fpr, c->roc_tpr, c->roc_thr};
        const char *nm[3] = {"fpr", "tpr", "thresholds"};
        cx_tb_puts(&b, ": {");
        for (int a = 0; a < 3; a++) {
            cx_tb_printf(&b, "%s\"%s\": [", a ? ", " : "", nm[a]);
            for (size_t j = 0; j < c->roc_n; j++) {
                if (j)
                    cx_tb_puts(&b, ",");
                if (isfinite(arr[a][j]))
                    cx_tb_printf(&b, "%.10g", arr[a][j]);
                else
                    cx_tb_puts(&b, "null");
            }
            cx_tb_puts(&b, "]");
        }
        cx_tb_puts(&b, "}");
    }
    cx_tb_puts(&b, "\n  },\n  \"warnings\": ");
    json_warnings(&b, r->n_warnings, r->warnings);
    cx_tb_puts(&b, ",\n  \"calibration\": ");
    json_calibration(&b, r);
    if (r->json_roc_bands) {
        cx_tb_puts(&b, ",\n  \"roc_band\": ");
        json_bands(&b, r);
    }
    if (r->provenance) {
        cx_tb_puts(&b, ",\n  \"provenance\": ");
        json_provenance(&b, r->provenance);
    }
    cx_tb_puts(&b, "\n}\n");
    return write_tb(&b, path, err);
}

/* ------------------------------------------------------------------- SVG */

static const char *PALETTE[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f",
                                "#393b79", "#7b4173", "#637939", "#000000", "#5254a3"};
#define N_PALETTE (int)(sizeof PALETTE / sizeof PALETTE[0])

/* Axes box at (x0, y0) of size w x h with ticks, labels and the diagonal. */
static void svg_axes_l(cx_tb *b, double x0, double y0, double w, double h, const char *title,
                       int font, const char *xlabel, const char *ylabel)
{
    cx_tb_printf(b, "<rect class=\"plotarea\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
                    "height=\"%.1f\" fill=\"#fff\" stroke=\"#333\" stroke-width=\"1\"/>\n",
                 x0, y0, w, h);
    for (int t = 0; t <= 5; t++) {
        double f = t / 5.0, x = x0 + f * w, y = y0 + h - f * h;
        if (t > 0 && t < 5) {
            cx_tb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>\n",
                         x, y0, x, y0 + h);
            cx_tb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>\n",
                         x0, y, x0 + w, y);
        }
        cx_tb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>\n",
                     x, y0 + h, x, y0 + h + 4);
        cx_tb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>\n",
                     x0 - 4, y, x0, y);
        cx_tb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"%d\" text-anchor=\"middle\">%.1f</text>\n",
                     x, y0 + h + 6 + font, font, f);
        cx_tb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"%d\" text-anchor=\"end\">%.1f</text>\n",
                     x0 - 6, y + font * 0.35, font, f);
    }
    cx_tb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#999\" "
                    "stroke-dasharray=\"4 3\"/>\n",
                 x0, y0 + h, x0 + w, y0);
    cx_tb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"%d\" text-anchor=\"middle\">%s</text>\n",
                 x0 + w / 2, y0 + h + 2 * font + 10, font, xlabel);
    cx_tb_printf(b, "<text transform=\"translate(%.1f,%.1f) rotate(-90)\" font-size=\"%d\" "
                    "text-anchor=\"middle\">%s</text>\n",
                 x0 - 2.2 * font - 10, y0 + h / 2, font, ylabel);
    if (title) {
        cx_tb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"%d\" font-weight=\"bold\" "
                        "text-anchor=\"middle\">",
                     x0 + w / 2, y0 - 6, font + 2);
        cx_tb_html(b, title);
        cx_tb_puts(b, "</text>\n");
    }
}

static void svg_axes(cx_tb *b, double x0, double y0, double w, double h, const char *title,
                     int font)
{
    svg_axes_l(b, x0, y0, w, h, title, font, "1 - specificity (false positive rate)",
               "sensitivity (true positive rate)");
}

/* The bootstrap band of a class's ROC as a filled polygon: the upper
 * percentiles left to right, the lower ones back. */
static void svg_band(cx_tb *b, const cx_class_eval *c, double x0, double y0, double w, double h,
                     const char *color)
{
    if (!c->defined || c->band_n < 2 || !isfinite(c->band_lo[0]))
        return;
    cx_tb_printf(b, "<polygon class=\"roc-band\" fill=\"%s\" fill-opacity=\"0.18\" "
                    "stroke=\"none\" points=\"",
                 color);
    for (int g = 0; g < c->band_n; g++)
        if (isfinite(c->band_hi[g]))
            cx_tb_printf(b, "%.1f,%.1f ", x0 + c->band_fpr[g] * w, y0 + h - c->band_hi[g] * h);
    for (int g = c->band_n - 1; g >= 0; g--)
        if (isfinite(c->band_lo[g]))
            cx_tb_printf(b, "%.1f,%.1f ", x0 + c->band_fpr[g] * w, y0 + h - c->band_lo[g] * h);
    cx_tb_puts(b, "\"/>\n");
}

static void svg_curve(cx_tb *b, const cx_class_eval *c, double x0, double y0, double w,
                      double h, const char *color, double width)
{
    if (!c->defined || c->roc_n < 2)
        return;
    cx_tb_printf(b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"%.1f\" points=\"", color,
                 width);
    double lx = -1, ly = -1;
    for (size_t j = 0; j < c->roc_n; j++) {
        double x = x0 + c->roc_fpr[j] * w, y = y0 + h - c->roc_tpr[j] * h;
        if (j + 1 < c->roc_n && j > 0 && fabs(x - lx) < 0.4 && fabs(y - ly) < 0.4)
            continue;
        cx_tb_printf(b, "%.1f,%.1f ", x, y);
        lx = x;
        ly = y;
    }
    cx_tb_puts(b, "\"/>\n");
}

static void svg_op_point(cx_tb *b, const cx_class_eval *c, double x0, double y0, double w,
                         double h, const char *color)
{
    if (!c->defined)
        return;
    double fpr = 1 - c->point.specificity, tpr = c->point.sensitivity;
    cx_tb_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\" stroke=\"#000\"/>\n",
                 x0 + fpr * w, y0 + h - tpr * h, color);
}

/* All classes in one plot with a legend. */
static void svg_all(cx_tb *b, const cx_eval_result *r)
{
    int W = 760, H = 560;
    double x0 = 70, y0 = 40, w = 440, h = 440;
    cx_tb_printf(b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
                    "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\">\n",
                 W, H, W, H);
    cx_tb_printf(b, "<rect width=\"%d\" height=\"%d\" fill=\"#fff\"/>\n", W, H);
    svg_axes(b, x0, y0, w, h, "ROC curves", 12);
    for (int k = 0; k < r->n_classes; k++)
        svg_curve(b, &r->cls[k], x0, y0, w, h, PALETTE[k % N_PALETTE], 1.5);
    double lx = x0 + w + 20, ly = y0 + 10;
    cx_tb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" font-weight=\"bold\">class "
                    "(AUROC)</text>\n",
                 lx, ly);
    for (int k = 0; k < r->n_classes; k++) {
        double yy = ly + 18 * (k + 1);
        cx_tb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                        "stroke-width=\"3\"/>\n",
                     lx, yy - 4, lx + 22, yy - 4, PALETTE[k % N_PALETTE]);
        cx_tb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\">", lx + 28, yy);
        cx_tb_html(b, r->cls[k].name);
        if (r->cls[k].defined)
            cx_tb_printf(b, " (%.3f)", r->cls[k].auroc.value);
        else
            cx_tb_puts(b, " (undefined)");
        cx_tb_puts(b, "</text>\n");
    }
    cx_tb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" fill=\"#555\">dashed: chance "
                    "(AUROC 0.5)</text>\n",
                 lx, ly + 18 * (r->n_classes + 2));
    cx_tb_puts(b, "</svg>\n");
}

/* A grid of square panels, at most 4 per row, one per class: the SVG
 * element and its white background; svg_grid_origin gives panel k's plot
 * origin (room for the axis labels left of and above it). */
enum { PANEL_PITCH = 270, PANEL_W = 190 };
static int svg_grid_open(cx_tb *b, int n)
{
    int cols = n < 4 ? n : 4;
    int rows = (n + cols - 1) / cols;
    int W = cols * PANEL_PITCH, H = rows * PANEL_PITCH;
    cx_tb_printf(b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
                    "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\">\n",
                 W, H, W, H);
    cx_tb_printf(b, "<rect width=\"%d\" height=\"%d\" fill=\"#fff\"/>\n", W, H);
    return cols;
}

static void svg_grid_origin(int cols, int k, double *x0, double *y0)
{
    *x0 = (k % cols) * (double)PANEL_PITCH + 58;
    *y0 = (k / cols) * (double)PANEL_PITCH + 26;
}

/* One small ROC panel per class. */
static void svg_panels(cx_tb *b, const cx_eval_result *r)
{
    const double w = PANEL_W, h = PANEL_W;
    int cols = svg_grid_open(b, r->n_classes);
    for (int k = 0; k < r->n_classes; k++) {
        const cx_class_eval *c = &r->cls[k];
        double x0, y0;
        svg_grid_origin(cols, k, &x0, &y0);
        svg_axes(b, x0, y0, w, h, c->name, 10);
        const char *col = PALETTE[k % N_PALETTE];
        svg_band(b, c, x0, y0, w, h, col);
        svg_curve(b, c, x0, y0, w, h, col, 1.6);
        svg_op_point(b, c, x0, y0, w, h, col);
        /* legend inside the panel */
        cx_tb_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"118\" height=\"%d\" fill=\"#fff\" "
                        "fill-opacity=\"0.85\" stroke=\"#ccc\"/>\n",
                     x0 + w - 122, y0 + h - 40, 36);
        cx_tb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                        "stroke-width=\"2\"/>\n",
                     x0 + w - 117, y0 + h - 29, x0 + w - 103, y0 + h - 29, col);
        if (c->defined)
            cx_tb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"9\">AUROC %.3f</text>\n",
                         x0 + w - 99, y0 + h - 26, c->auroc.value);
        else
            cx_tb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"9\">AUROC undefined</text>\n",
                         x0 + w - 99, y0 + h - 26);
        cx_tb_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\" stroke=\"#000\"/>\n",
                     x0 + w - 110, y0 + h - 13, col);
        cx_tb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"9\">t = %.3g</text>\n",
                     x0 + w - 99, y0 + h - 10, c->threshold);
    }
    cx_tb_puts(b, "</svg>\n");
}

/* Reliability diagrams, one panel per class: the fraction of positives
 * against the mean score of each non-empty bin (the diagonal is perfect
 * calibration), over a grey histogram of the bins' image counts. */
static void svg_reliability(cx_tb *b, const cx_eval_result *r)
{
    const double w = PANEL_W, h = PANEL_W;
    int cols = svg_grid_open(b, r->n_classes);
    for (int k = 0; k < r->n_classes; k++) {
        const cx_class_eval *c = &r->cls[k];
        double x0, y0;
        svg_grid_origin(cols, k, &x0, &y0);
        svg_axes_l(b, x0, y0, w, h, c->name, 10, "mean predicted probability",
                   "fraction positive");
        const char *col = PALETTE[k % N_PALETTE];
        if (!c->calib_defined) {
            cx_tb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\" text-anchor=\"middle\" "
                            "fill=\"#8a4b00\">no calibration (scores not in [0,1])</text>\n",
                         x0 + w / 2, y0 + h / 2);
            continue;
        }
        long nmax = 0;
        for (int q = 0; q < c->n_bins; q++)
            if (c->bins[q].n > nmax)
                nmax = c->bins[q].n;
        for (int q = 0; q < c->n_bins && nmax; q++) {
            const cx_calib_bin *x = &c->bins[q];
            if (!x->n)
                continue;
            double bh = 0.25 * h * (double)x->n / (double)nmax;
            cx_tb_printf(b, "<rect class=\"calib-count\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
                            "height=\"%.1f\" fill=\"#bbb\" fill-opacity=\"0.6\"/>\n",
                         x0 + x->lo * w, y0 + h - bh, (x->hi - x->lo) * w, bh);
        }
        cx_tb_printf(b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.6\" points=\"", col);
        for (int q = 0; q < c->n_bins; q++)
            if (c->bins[q].n)
                cx_tb_printf(b, "%.1f,%.1f ", x0 + c->bins[q].mean_pred * w,
                             y0 + h - c->bins[q].frac_pos * h);
        cx_tb_puts(b, "\"/>\n");
        for (int q = 0; q < c->n_bins; q++)
            if (c->bins[q].n)
                cx_tb_printf(b, "<circle class=\"calib-bin\" cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" "
                                "fill=\"%s\"/>\n",
                             x0 + c->bins[q].mean_pred * w, y0 + h - c->bins[q].frac_pos * h, col);
        cx_tb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"9\">ECE %.3f", x0 + 6, y0 + 14,
                     c->ece.value);
        if (isfinite(c->ece.lo))
            cx_tb_printf(b, " (%.3f, %.3f)", c->ece.lo, c->ece.hi);
        cx_tb_puts(b, "</text>\n");
    }
    cx_tb_puts(b, "</svg>\n");
}

/* ------------------------------------------------------------------ HTML */

static const char *CSS =
    "body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;"
    "max-width:1150px}"
    "table{border-collapse:collapse;margin:12px 0;font-size:13px}"
    "th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}"
    "th{background:#f0f3f7}td.l,th.l{text-align:left}"
    "tr.mean td{font-weight:bold;background:#fafafa}"
    "td.paper{color:#555;background:#fbfbf4}"
    "caption{caption-side:bottom;text-align:left;font-size:12px;color:#555;padding-top:6px;"
    "max-width:1100px}"
    ".warn{color:#8a4b00}.ci{color:#666;font-size:11px}.sig{color:#0a6b0a;font-weight:bold}"
    ".nsig{color:#8a4b00;font-weight:bold}table.prov td{font-size:12px}code{font-size:12px}";

static void html_head(cx_tb *b, const char *title)
{
    cx_tb_puts(b, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>");
    cx_tb_html(b, title);
    cx_tb_printf(b, "</title><style>%s</style></head><body>\n<h1>", CSS);
    cx_tb_html(b, title);
    cx_tb_puts(b, "</h1>\n");
}

static void html_provenance(cx_tb *b, const cx_provenance *p)
{
    if (!p)
        return;
    cx_tb_puts(b, "<h2>Provenance</h2>\n<table class=\"prov\"><tr><th class=\"l\">chexnet</th>"
                  "<td class=\"l\">");
    cx_tb_html(b, p->version);
    cx_tb_puts(b, "</td></tr>\n<tr><th class=\"l\">created (UTC)</th><td class=\"l\">");
    cx_tb_html(b, p->created);
    cx_tb_puts(b, "</td></tr>\n<tr><th class=\"l\">command line</th><td class=\"l\"><code>");
    cx_tb_html(b, p->command_line ? p->command_line : "");
    cx_tb_puts(b, "</code></td></tr>\n</table>\n");
    if (p->n_inputs > 20)
        cx_tb_printf(b, "<details><summary>%d input files</summary>\n", p->n_inputs);
    cx_tb_puts(b, "<table class=\"prov\"><tr><th class=\"l\">input</th><th class=\"l\">file</th>"
                  "<th>bytes</th><th class=\"l\">SHA-256</th></tr>\n");
    for (int i = 0; i < p->n_inputs; i++) {
        const cx_prov_input *x = &p->inputs[i];
        cx_tb_puts(b, "<tr><td class=\"l\">");
        cx_tb_html(b, x->role);
        cx_tb_puts(b, "</td><td class=\"l\">");
        cx_tb_html(b, x->path);
        cx_tb_printf(b, "</td><td>%lld</td><td class=\"l\"><code>%s</code></td></tr>\n", x->size,
                     x->sha256);
    }
    cx_tb_puts(b, "</table>\n");
    if (p->n_inputs > 20)
        cx_tb_puts(b, "</details>\n");
}

static void html_stat(cx_tb *b, const cx_stat *s, int digits)
{
    if (!isfinite(s->value)) {
        cx_tb_puts(b, "<td>undefined</td>");
        return;
    }
    cx_tb_printf(b, "<td>%.*f", digits, s->value);
    if (isfinite(s->lo))
        cx_tb_printf(b, " <span class=\"ci\">(%.*f, %.*f)</span>", digits, s->lo, digits, s->hi);
    cx_tb_puts(b, "</td>");
}

/* CheXNet paper (Rajpurkar et al. 2017, arXiv:1711.05225), Table 2. */
static const struct {
    const char *name;
    double wang, yao, chexnet;
} PAPER_T2[14] = {
    {"Atelectasis", 0.716, 0.772, 0.8094},   {"Cardiomegaly", 0.807, 0.904, 0.9248},
    {"Effusion", 0.784, 0.859, 0.8638},      {"Infiltration", 0.609, 0.695, 0.7345},
    {"Mass", 0.706, 0.792, 0.8676},          {"Nodule", 0.671, 0.717, 0.7802},
    {"Pneumonia", 0.633, 0.713, 0.7680},     {"Pneumothorax", 0.806, 0.841, 0.8887},
    {"Consolidation", 0.708, 0.788, 0.7901}, {"Edema", 0.835, 0.882, 0.8878},
    {"Emphysema", 0.815, 0.829, 0.9371},     {"Fibrosis", 0.769, 0.767, 0.8047},
    {"Pleural_Thickening", 0.708, 0.765, 0.8062}, {"Hernia", 0.767, 0.914, 0.9164},
};

static int paper_row(const char *name)
{
    for (int i = 0; i < 14; i++)
        if (cx_class_name_eq(PAPER_T2[i].name, name))
            return i;
    return -1;
}

cx_status cx_eval_write_report(const cx_eval_result *r, const char *dir, const char *title,
                               cx_err *err)
{
    cx_status st = make_dir(dir, err);
    if (st)
        return st;
    if (!title)
        title = "chexnet evaluation";
    char path[4200];
    /* the combined ROC plot as its own file */
    cx_tb s;
    cx_tb_init(&s);
    cx_tb_puts(&s, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    svg_all(&s, r);
    cx_path_join(path, sizeof path, dir, "roc.svg");
    st = write_tb(&s, path, err);
    if (st)
        return st;
    cx_tb_init(&s);
    svg_panels(&s, r);
    cx_path_join(path, sizeof path, dir, "roc_panels.svg");
    st = write_tb(&s, path, err);
    if (st)
        return st;
    cx_tb_init(&s);
    svg_reliability(&s, r);
    cx_path_join(path, sizeof path, dir, "reliability.svg");
    st = write_tb(&s, path, err);
    if (st)
        return st;

    /* the paper's columns beside a multi-finding evaluation of ChestX-ray14
     * classes (not beside a one-class model, e.g. paediatric pneumonia) */
    int nih = r->n_classes >= 2;
    for (int k = 0; k < r->n_classes; k++)
        if (paper_row(r->cls[k].name) < 0)
            nih = 0;
    cx_tb b;
    cx_tb_init(&b);
    html_head(&b, title);
    char when[64] = "";
    time_t now = time(NULL);
    struct tm tmv;
    if (gmtime_r(&now, &tmv))
        strftime(when, sizeof when, "%Y-%m-%d %H:%M UTC", &tmv);
    cx_tb_printf(&b, "<p>%d image%s, %d class%s. ", r->n_images, r->n_images == 1 ? "" : "s",
                 r->n_classes, r->n_classes == 1 ? "" : "es");
    if (r->n_bootstrap)
        cx_tb_printf(&b, "95%% confidence intervals (grey) from %d percentile-bootstrap resamples "
                         "of the images (seed %llu). ",
                     r->n_bootstrap, (unsigned long long)r->seed);
    else
        cx_tb_puts(&b, "No bootstrap: no confidence intervals. ");
    cx_tb_printf(&b, "Written by chexnet %s, %s.</p>\n", CX_VERSION, when);

    cx_tb_puts(&b, "<h2>AUROC per class</h2>\n<table><tr><th class=\"l\">class</th><th>positives</th>"
                   "<th>negatives</th><th>AUROC (95% CI)</th>");
    if (nih)
        cx_tb_puts(&b, "<th>Wang et al. 2017</th><th>Yao et al. 2017</th><th>CheXNet (paper)</th>");
    cx_tb_puts(&b, "</tr>\n");
    double pw = 0, py = 0, pc = 0;
    for (int k = 0; k < r->n_classes; k++) {
        const cx_class_eval *c = &r->cls[k];
        cx_tb_puts(&b, "<tr><td class=\"l\">");
        cx_tb_html(&b, c->name);
        cx_tb_printf(&b, "</td><td>%d</td><td>%d</td>", c->n_pos, c->n_neg);
        html_stat(&b, &c->auroc, 4);
        if (nih) {
            int i = paper_row(c->name);
            cx_tb_printf(&b, "<td class=\"paper\">%.3f</td><td class=\"paper\">%.3f</td>"
                             "<td class=\"paper\">%.4f</td>",
                         PAPER_T2[i].wang, PAPER_T2[i].yao, PAPER_T2[i].chexnet);
            pw += PAPER_T2[i].wang;
            py += PAPER_T2[i].yao;
            pc += PAPER_T2[i].chexnet;
        }
        cx_tb_puts(&b, "</tr>\n");
    }
    cx_tb_printf(&b, "<tr class=\"mean\"><td class=\"l\">mean (%d class%s)</td><td></td><td></td>",
                 r->n_mean_classes, r->n_mean_classes == 1 ? "" : "es");
    html_stat(&b, &r->mean_auroc, 4);
    if (nih)
        cx_tb_printf(&b, "<td class=\"paper\">%.3f</td><td class=\"paper\">%.3f</td>"
                         "<td class=\"paper\">%.4f</td>",
                     pw / r->n_classes, py / r->n_classes, pc / r->n_classes);
    cx_tb_puts(&b, "</tr>\n");
    if (nih)
        cx_tb_puts(&b,
                   "<caption>Wang et al., Yao et al. and CheXNet columns: Table 2 of P. Rajpurkar, "
                   "J. Irvin, K. Zhu et al., &ldquo;CheXNet: Radiologist-Level Pneumonia Detection on "
                   "Chest X-Rays with Deep Learning&rdquo;, arXiv:1711.05225 (2017), which compares "
                   "CheXNet with X. Wang et al. (CVPR 2017) and L. Yao et al. (arXiv:1710.10501, "
                   "2017). The mean row is the simple average of the rows shown. Those figures were "
                   "measured on other test sets (Wang et al.: the official split; CheXNet: its own "
                   "patient-level split), so the comparison with this evaluation is indicative "
                   "only.</caption>\n");
    cx_tb_puts(&b, "</table>\n");

    /* operating points */
    cx_tb_printf(&b, "<h2>Operating points</h2>\n<p>Threshold per class %s; an image is called "
                     "positive when its score &ge; the threshold. Sensitivity, specificity, PPV, "
                     "NPV and F1 as scikit-learn defines them (0 where a denominator is 0, marked "
                     "&dagger;).</p>\n",
                 r->rule == CX_OP_THRESHOLD ? "fixed"
                 : r->rule == CX_OP_MAXF1   ? "chosen on the validation predictions to maximise F1"
                                            : "chosen on the validation predictions to maximise "
                                              "Youden's J");
    cx_tb_puts(&b, "<table><tr><th class=\"l\">class</th><th>threshold</th><th>TP</th><th>FP</th>"
                   "<th>TN</th><th>FN</th><th>sensitivity</th><th>specificity</th><th>PPV</th>"
                   "<th>NPV</th><th>F1</th></tr>\n");
    for (int k = 0; k < r->n_classes; k++) {
        const cx_class_eval *c = &r->cls[k];
        cx_tb_puts(&b, "<tr><td class=\"l\">");
        cx_tb_html(&b, c->name);
        cx_tb_printf(&b, "</td><td>%.4g</td><td>%.0f</td><td>%.0f</td><td>%.0f</td><td>%.0f</td>",
                     c->threshold, c->conf.tp, c->conf.fp, c->conf.tn, c->conf.fn);
        const cx_stat *ms[5] = {&c->sens, &c->spec, &c->ppv, &c->npv, &c->f1};
        for (int q = 0; q < 5; q++) {
            html_stat(&b, ms[q], 3);
            if (c->point.zero_division & (1u << q)) {
                b.n -= 5; /* before "</td>" */
                b.s[b.n] = 0;
                cx_tb_puts(&b, "&dagger;</td>");
            }
        }
        cx_tb_puts(&b, "</tr>\n");
    }
    cx_tb_puts(&b, "</table>\n");

    cx_tb_puts(&b, "<h2>ROC curves</h2>\n<p>One panel per class; the dot marks the operating point, "
                   "the dashed diagonal a classifier at chance");
    if (r->n_bootstrap)
        cx_tb_puts(&b, ", the shaded band the 95% bootstrap band of the curve (see Method)");
    cx_tb_puts(&b, ".</p>\n");
    svg_panels(&b, r);
    cx_tb_puts(&b, "<p>All classes together:</p>\n");
    svg_all(&b, r);

    cx_tb_printf(&b, "<h2>Calibration</h2>\n<p>Reliability diagrams: the images' scores in %d "
                     "equal-width bins of [0,1]; each point is a non-empty bin's mean score against "
                     "the fraction of its images that are positive, the grey bars the bins' image "
                     "counts. A calibrated model lies on the diagonal. ECE (expected calibration "
                     "error): the sum over bins of (images in the bin / images) &times; |mean score "
                     "&minus; fraction positive|.</p>\n",
                 r->calib_bins);
    cx_tb_puts(&b, "<table><tr><th class=\"l\">class</th><th>images</th><th>ECE (95% CI)</th></tr>\n");
    for (int k = 0; k < r->n_classes; k++) {
        const cx_class_eval *c = &r->cls[k];
        cx_tb_puts(&b, "<tr><td class=\"l\">");
        cx_tb_html(&b, c->name);
        cx_tb_printf(&b, "</td><td>%d</td>", c->n);
        if (c->calib_defined)
            html_stat(&b, &c->ece, 4);
        else
            cx_tb_puts(&b, "<td>undefined (scores not in [0,1])</td>");
        cx_tb_puts(&b, "</tr>\n");
    }
    cx_tb_puts(&b, "</table>\n");
    svg_reliability(&b, r);
    if (r->n_warnings) {
        cx_tb_puts(&b, "<h2>Warnings</h2>\n<ul class=\"warn\">\n");
        for (int i = 0; i < r->n_warnings; i++) {
            cx_tb_puts(&b, "<li>");
            cx_tb_html(&b, r->warnings[i]);
            cx_tb_puts(&b, "</li>\n");
        }
        cx_tb_puts(&b, "</ul>\n");
    }
    cx_tb_printf(&b, "<h2>Method</h2>\n<p>AUROC: the exact Mann-Whitney statistic with tied scores "
                     "counted one half (identical to scikit-learn's roc_auc_score). CIs: the 2.5th "
                     "and 97.5th percentiles (numpy's linear interpolation) over %d resamples of the "
                     "images drawn with replacement; a resample where a class has no positives or no "
                     "negatives is skipped for that class (and for the mean). PRNG: ",
                 r->n_bootstrap);
    cx_tb_html(&b, PRNG_DOC);
    cx_tb_printf(&b, ".</p>\n<p>ROC band: on the grid of %d false positive rates 0, %.3g, ..., 1, ",
                 r->band_points, 1.0 / (r->band_points - 1));
    cx_tb_html(&b, BAND_DOC);
    cx_tb_puts(&b, ". It is a pointwise band (each FPR on its own), not a simultaneous one.</p>\n"
                   "<p>Calibration: ");
    cx_tb_html(&b, CALIB_DOC);
    cx_tb_puts(&b, ".</p>\n");
    html_provenance(&b, r->provenance);
    cx_tb_puts(&b, "</body></html>\n");
    cx_path_join(path, sizeof path, dir, "report.html");
    return write_tb(&b, path, err);
}

/* ----------------------------------------------------------- reader study */

cx_status cx_readers_write_json(const cx_readers_result *r, const char *path, cx_err *err)
{
    cx_tb b;
    cx_tb_init(&b);
    int K = r->n_readers, M = r->n_models;
    cx_tb_puts(&b, "{\n  \"class\": ");
    cx_tb_json_str(&b, r->class_name);
    cx_tb_printf(&b, ",\n  \"n_images\": %d,\n  \"protocol\": \"F1 of each reader against each "
                     "other reader as ground truth (mean of %d), of each model against every "
                     "reader (mean of %d); CheXNet Table 1\",\n",
                 r->n_images, K - 1, K);
    for (int part = 0; part < 2; part++) {
        cx_tb_printf(&b, "  \"%s\": {", part ? "models" : "readers");
        int first = 1;
        for (int a = part ? K : 0; a < (part ? K + M : K); a++) {
            const cx_rater_result *x = &r->raters[a];
            cx_tb_puts(&b, first ? "\n    " : ",\n    ");
            first = 0;
            cx_tb_json_str(&b, x->name);
            cx_tb_puts(&b, ": {\"f1\": ");
            json_stat(&b, &x->f1);
            cx_tb_puts(&b, "}, \"f1_vs\": {");
            int f2 = 1;
            for (int g = 0; g < K; g++) {
                if (g == a)
                    continue;
                cx_tb_puts(&b, f2 ? "" : ", ");
                f2 = 0;
                cx_tb_json_str(&b, r->raters[g].name);
                cx_tb_puts(&b, ": ");
                cx_tb_json_num(&b, x->pair_f1[g]);
            }
            cx_tb_printf(&b, "}, \"n_positive\": %d", x->n_pos);
            if (r->has_truth) {
                cx_tb_puts(&b, ", \"f1_vs_truth\": ");
                json_stat(&b, &x->f1_truth);
                cx_tb_puts(&b, "}");
            }
            cx_tb_puts(&b, "}");
        }
        cx_tb_puts(&b, "\n  },\n");
    }
    cx_tb_puts(&b, "  \"reader_average\": ");
    json_stat(&b, &r->reader_avg);
    cx_tb_puts(&b, "},\n");
    if (r->has_truth) {
        cx_tb_puts(&b, "  \"reader_average_vs_truth\": ");
        json_stat(&b, &r->reader_avg_truth);
        cx_tb_puts(&b, "},\n");
    }
    cx_tb_puts(&b, "  \"difference\": {");
    for (int m = 0; m < M; m++) {
        cx_tb_puts(&b, m ? ",\n    " : "\n    ");
        cx_tb_json_str(&b, r->raters[K + m].name);
        cx_tb_puts(&b, ": ");
        json_stat(&b, &r->diff[m]);
        cx_tb_printf(&b, ", \"significant\": %s}", r->significant[m] ? "true" : "false");
    }
    cx_tb_puts(&b, "\n  },\n  \"threshold\": ");
    cx_tb_json_num(&b, r->threshold);
    cx_tb_puts(&b, ",\n  \"bootstrap\": ");
    json_bootstrap(&b, r->n_bootstrap, r->seed, -1, 0);
    cx_tb_puts(&b, ",\n  \"warnings\": ");
    json_warnings(&b, r->n_warnings, r->warnings);
    if (r->has_truth) {
        /* operating points against the truth, the readers' mean, the models' ROC */
        cx_tb_puts(&b, ",\n  \"vs_truth\": {");
        for (int part = 0; part < 2; part++) {
            cx_tb_printf(&b, "%s\n    \"%s\": {", part ? "," : "", part ? "models" : "readers");
            for (int a = part ? K : 0; a < (part ? K + M : K); a++) {
                const cx_rater_result *x = &r->raters[a];
                cx_tb_puts(&b, a == (part ? K : 0) ? "\n      " : ",\n      ");
                cx_tb_json_str(&b, x->name);
                cx_tb_puts(&b, ": {\"sensitivity\": ");
                cx_tb_json_num(&b, x->sens_truth);
                cx_tb_puts(&b, ", \"specificity\": ");
                cx_tb_json_num(&b, x->spec_truth);
                cx_tb_puts(&b, ", \"fpr\": ");
                cx_tb_json_num(&b, 1 - x->spec_truth);
                cx_tb_puts(&b, ", \"tpr\": ");
                cx_tb_json_num(&b, x->sens_truth);
                cx_tb_printf(&b, ", \"tp\": %.0f, \"fp\": %.0f, \"tn\": %.0f, \"fn\": %.0f",
                             x->conf_truth.tp, x->conf_truth.fp, x->conf_truth.tn, x->conf_truth.fn);
                if (x->is_model) {
                    cx_tb_puts(&b, ", \"auroc\": ");
                    cx_tb_json_num(&b, x->auroc_truth);
                    cx_tb_puts(&b, ", \"roc\": {\"fpr\": ");
                    json_array(&b, x->roc_fpr, x->roc_n);
                    cx_tb_puts(&b, ", \"tpr\": ");
                    json_array(&b, x->roc_tpr, x->roc_n);
                    cx_tb_puts(&b, ", \"thresholds\": ");
                    json_array(&b, x->roc_thr, x->roc_n);
                    cx_tb_puts(&b, "}");
                }
                cx_tb_puts(&b, "}");
            }
            cx_tb_puts(&b, "\n    }");
        }
        cx_tb_puts(&b, ",\n    \"reader_mean\": {\"fpr\": ");
        cx_tb_json_num(&b, r->reader_mean_fpr);
        cx_tb_puts(&b, ", \"tpr\": ");
        cx_tb_json_num(&b, r->reader_mean_tpr);
        cx_tb_puts(&b, ", \"sensitivity\": ");
        cx_tb_json_num(&b, r->reader_mean_tpr);
        cx_tb_puts(&b, ", \"specificity\": ");
        cx_tb_json_num(&b, 1 - r->reader_mean_fpr);
        cx_tb_puts(&b, "}\n  }");
    }
    if (r->provenance) {
        cx_tb_puts(&b, ",\n  \"provenance\": ");
        json_provenance(&b, r->provenance);
    }
    cx_tb_puts(&b, "\n}\n");
    return write_tb(&b, path, err);
}

/* The reader-comparison figure: each model's ROC against the truth, each
 * reader as a point (1 - specificity, sensitivity), the readers' mean point
 * (a cross), each model's operating point (a square). */
static void svg_readers(cx_tb *b, const cx_readers_result *r)
{
    int K = r->n_readers, M = r->n_models;
    int W = 760, H = 560;
    double x0 = 70, y0 = 40, w = 440, h = 440;
    cx_tb_printf(b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
                    "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\">\n",
                 W, H, W, H);
    cx_tb_printf(b, "<rect width=\"%d\" height=\"%d\" fill=\"#fff\"/>\n", W, H);
    char title[160];
    snprintf(title, sizeof title, "%s: models and readers against the ground truth", r->class_name);
    svg_axes(b, x0, y0, w, h, title, 12);
    double lx = x0 + w + 20, ly = y0 + 10;
    int row = 0;
    for (int m = 0; m < M; m++) {
        const cx_rater_result *x = &r->raters[K + m];
        const char *col = PALETTE[m % N_PALETTE];
        if (x->roc_n >= 2 && isfinite(x->roc_fpr[1]) && isfinite(x->roc_tpr[1])) {
            cx_tb_printf(b, "<polyline class=\"model-roc\" fill=\"none\" stroke=\"%s\" "
                            "stroke-width=\"1.8\" points=\"",
                         col);
            for (size_t j = 0; j < x->roc_n; j++)
                cx_tb_printf(b, "%.1f,%.1f ", x0 + x->roc_fpr[j] * w, y0 + h - x->roc_tpr[j] * h);
            cx_tb_puts(b, "\"/>\n");
        }
        if (isfinite(x->sens_truth) && isfinite(x->spec_truth)) {
            double px = x0 + (1 - x->spec_truth) * w, py = y0 + h - x->sens_truth * h;
            cx_tb_printf(b, "<rect class=\"model-point\" x=\"%.1f\" y=\"%.1f\" width=\"8\" "
                            "height=\"8\" fill=\"%s\" stroke=\"#000\"/>\n",
                         px - 4, py - 4, col);
        }
        cx_tb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                        "stroke-width=\"3\"/>\n",
                     lx, ly + 18 * row - 4, lx + 22, ly + 18 * row - 4, col);
        cx_tb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\">model ", lx + 28,
                     ly + 18 * row);
        cx_tb_html(b, x->name);
        if (isfinite(x->auroc_truth))
            cx_tb_printf(b, " (AUROC %.3f)", x->auroc_truth);
        cx_tb_puts(b, "</text>\n");
        row++;
    }
    for (int a = 0; a < K; a++) {
        const cx_rater_result *x = &r->raters[a];
        if (!isfinite(x->sens_truth) || !isfinite(x->spec_truth))
            continue;
        double fpr = 1 - x->spec_truth, tpr = x->sens_truth;
        double px = x0 + fpr * w, py = y0 + h - tpr * h;
        cx_tb_puts(b, "<circle class=\"reader\" data-name=\"");
        cx_tb_html(b, x->name);
        cx_tb_printf(b, "\" data-fpr=\"%.17g\" data-tpr=\"%.17g\" cx=\"%.2f\" cy=\"%.2f\" r=\"5\" "
                        "fill=\"#fff\" stroke=\"#000\" stroke-width=\"1.5\"/>\n",
                     fpr, tpr, px, py);
        cx_tb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\">", px + 7, py - 5);
        cx_tb_html(b, x->name);
        cx_tb_puts(b, "</text>\n");
    }
    if (isfinite(r->reader_mean_fpr) && isfinite(r->reader_mean_tpr)) {
        double px = x0 + r->reader_mean_fpr * w, py = y0 + h - r->reader_mean_tpr * h;
        cx_tb_printf(b, "<g class=\"reader-mean\" data-fpr=\"%.17g\" data-tpr=\"%.17g\">"
                        "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#000\" "
                        "stroke-width=\"2\"/><line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" "
                        "stroke=\"#000\" stroke-width=\"2\"/></g>\n",
                     r->reader_mean_fpr, r->reader_mean_tpr, px - 6, py - 6, px + 6, py + 6,
                     px - 6, py + 6, px + 6, py - 6);
    }
    double yy = ly + 18 * row;
    cx_tb_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"5\" fill=\"#fff\" stroke=\"#000\" "
                    "stroke-width=\"1.5\"/><text x=\"%.1f\" y=\"%.1f\" font-size=\"12\">a reader"
                    "</text>\n",
                 lx + 11, yy - 4, lx + 28, yy);
    yy += 18;
    cx_tb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#000\" "
                    "stroke-width=\"2\"/><line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                    "stroke=\"#000\" stroke-width=\"2\"/><text x=\"%.1f\" y=\"%.1f\" "
                    "font-size=\"12\">the readers' mean</text>\n",
                 lx + 5, yy - 10, lx + 17, yy + 2, lx + 5, yy + 2, lx + 17, yy - 10, lx + 28, yy);
    yy += 18;
    cx_tb_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"8\" height=\"8\" fill=\"#ccc\" "
                    "stroke=\"#000\"/><text x=\"%.1f\" y=\"%.1f\" font-size=\"12\">a model's "
                    "operating point</text>\n",
                 lx + 7, yy - 8, lx + 28, yy);
    cx_tb_puts(b, "</svg>\n");
}

cx_status cx_readers_write_report(const cx_readers_result *r, const char *dir, cx_err *err)
{
    cx_status st = make_dir(dir, err);
    if (st)
        return st;
    int K = r->n_readers, M = r->n_models;
    cx_tb b;
    cx_tb_init(&b);
    char title[160];
    snprintf(title, sizeof title, "Reader study: %s", r->class_name);
    html_head(&b, title);
    cx_tb_printf(&b, "<p>%d image%s, %d readers, %d model%s. F1 of each reader against each of "
                     "the other %d reader%s as ground truth and of each model against all %d "
                     "readers, averaged (the protocol of CheXNet's Table 1). ",
                 r->n_images, r->n_images == 1 ? "" : "s", K, M, M > 1 ? "s" : "", K - 1,
                 K - 1 == 1 ? "" : "s", K);
    if (r->n_bootstrap)
        cx_tb_printf(&b, "95%% CIs from %d bootstrap resamples of the images (seed %llu), the same "
                         "resamples for every figure.",
                     r->n_bootstrap, (unsigned long long)r->seed);
    cx_tb_puts(&b, "</p>\n<table><tr><th class=\"l\"></th><th>F1 (95% CI)</th>");
    if (r->has_truth)
        cx_tb_puts(&b, "<th>F1 vs ground truth (95% CI)</th>");
    cx_tb_puts(&b, "<th>positive calls</th></tr>\n");
    for (int a = 0; a < K + M; a++) {
        if (a == K) {
            cx_tb_puts(&b, "<tr class=\"mean\"><td class=\"l\">reader average</td>");
            html_stat(&b, &r->reader_avg, 3);
            if (r->has_truth)
                html_stat(&b, &r->reader_avg_truth, 3);
            cx_tb_puts(&b, "<td></td></tr>\n");
        }
        const cx_rater_result *x = &r->raters[a];
        cx_tb_printf(&b, "<tr><td class=\"l\">%s", x->is_model ? "model " : "");
        cx_tb_html(&b, x->name);
        cx_tb_puts(&b, "</td>");
        html_stat(&b, &x->f1, 3);
        if (r->has_truth)
            html_stat(&b, &x->f1_truth, 3);
        cx_tb_printf(&b, "<td>%d</td></tr>\n", x->n_pos);
    }
    cx_tb_puts(&b, "</table>\n<h2>Model &minus; reader average</h2>\n<table><tr><th class=\"l\">"
                   "model</th><th>difference in F1 (95% CI)</th><th class=\"l\">conclusion</th></tr>\n");
    for (int m = 0; m < M; m++) {
        cx_tb_puts(&b, "<tr><td class=\"l\">");
        cx_tb_html(&b, r->raters[K + m].name);
        cx_tb_puts(&b, "</td>");
        html_stat(&b, &r->diff[m], 3);
        if (!r->n_bootstrap)
            cx_tb_puts(&b, "<td class=\"l\">no bootstrap</td>");
        else if (r->significant[m])
            cx_tb_printf(&b, "<td class=\"l sig\">significantly %s than the readers (CI excludes 0)</td>",
                         r->diff[m].value > 0 ? "higher" : "lower");
        else
            cx_tb_puts(&b, "<td class=\"l nsig\">no significant difference (CI contains 0)</td>");
        cx_tb_puts(&b, "</tr>\n");
    }
    cx_tb_puts(&b, "</table>\n<h2>Pairwise F1</h2>\n<p>Row labeller against column reader as "
                   "ground truth (F1 is symmetric).</p>\n<table><tr><th></th>");
    for (int g = 0; g < K; g++) {
        cx_tb_puts(&b, "<th>");
        cx_tb_html(&b, r->raters[g].name);
        cx_tb_puts(&b, "</th>");
    }
    cx_tb_puts(&b, "</tr>\n");
    for (int a = 0; a < K + M; a++) {
        cx_tb_puts(&b, "<tr><td class=\"l\">");
        cx_tb_html(&b, r->raters[a].name);
        cx_tb_puts(&b, "</td>");
        for (int g = 0; g < K; g++) {
            if (g == a)
                cx_tb_puts(&b, "<td>&mdash;</td>");
            else
                cx_tb_printf(&b, "<td>%.3f</td>", r->raters[a].pair_f1[g]);
        }
        cx_tb_puts(&b, "</tr>\n");
    }
    cx_tb_puts(&b,
               "</table>\n<p class=\"ci\">For reference: on 420 frontal chest X-rays "
               "annotated by 4 radiologists, CheXNet's F1 for pneumonia was 0.435 (95% CI "
               "0.387, 0.481) and the radiologists' average 0.387 (95% CI 0.330, 0.442) "
               "(P. Rajpurkar, J. Irvin et al., &ldquo;CheXNet: Radiologist-Level Pneumonia "
               "Detection on Chest X-Rays with Deep Learning&rdquo;, arXiv:1711.05225, 2017).</p>\n");
    if (r->has_truth) {
        cx_tb_puts(&b, "<h2>Against the ground truth</h2>\n<p>Each model's ROC curve from its "
                       "scores, each reader's operating point (1 &minus; specificity, sensitivity) "
                       "and the readers' mean point (the means of their false positive rates and "
                       "of their sensitivities), all against the ground-truth file, as CheXpert's "
                       "reader comparison draws them.</p>\n<table><tr><th class=\"l\"></th>"
                       "<th>sensitivity</th><th>specificity</th><th>TP</th><th>FP</th><th>TN</th>"
                       "<th>FN</th><th>AUROC</th></tr>\n");
        for (int a = 0; a < K + M; a++) {
            const cx_rater_result *x = &r->raters[a];
            cx_tb_printf(&b, "<tr><td class=\"l\">%s", x->is_model ? "model " : "");
            cx_tb_html(&b, x->name);
            cx_tb_puts(&b, "</td>");
            const double v[2] = {x->sens_truth, x->spec_truth};
            for (int q = 0; q < 2; q++) {
                if (isfinite(v[q]))
                    cx_tb_printf(&b, "<td>%.3f</td>", v[q]);
                else
                    cx_tb_puts(&b, "<td>undefined</td>");
            }
            cx_tb_printf(&b, "<td>%.0f</td><td>%.0f</td><td>%.0f</td><td>%.0f</td>",
                         x->conf_truth.tp, x->conf_truth.fp, x->conf_truth.tn, x->conf_truth.fn);
            if (x->is_model && isfinite(x->auroc_truth))
                cx_tb_printf(&b, "<td>%.4f</td>", x->auroc_truth);
            else
                cx_tb_puts(&b, "<td></td>");
            cx_tb_puts(&b, "</tr>\n");
        }
        if (isfinite(r->reader_mean_fpr))
            cx_tb_printf(&b, "<tr class=\"mean\"><td class=\"l\">readers' mean</td><td>%.3f</td>"
                             "<td>%.3f</td><td></td><td></td><td></td><td></td><td></td></tr>\n",
                         r->reader_mean_tpr, 1 - r->reader_mean_fpr);
        cx_tb_puts(&b, "</table>\n");
        svg_readers(&b, r);
    } else {
        cx_tb_puts(&b, "<p>No ground truth given (--truth): the figure of the models' ROC curves "
                       "with the readers' operating points needs one.</p>\n");
    }
    if (r->n_warnings) {
        cx_tb_puts(&b, "<h2>Warnings</h2>\n<ul class=\"warn\">\n");
        for (int i = 0; i < r->n_warnings; i++) {
            cx_tb_puts(&b, "<li>");
            cx_tb_html(&b, r->warnings[i]);
            cx_tb_puts(&b, "</li>\n");
        }
        cx_tb_puts(&b, "</ul>\n");
    }
    html_provenance(&b, r->provenance);
    cx_tb_puts(&b, "</body></html>\n");
    char path[4200];
    if (r->has_truth) {
        cx_tb s;
        cx_tb_init(&s);
        cx_tb_puts(&s, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        svg_readers(&s, r);
        cx_path_join(path, sizeof path, dir, "roc_readers.svg");
        cx_status st2 = write_tb(&s, path, err);
        if (st2) {
            cx_tb_free(&b);
            return st2;
        }
    }
    cx_path_join(path, sizeof path, dir, "report.html");
    return write_tb(&b, path, err);
}
