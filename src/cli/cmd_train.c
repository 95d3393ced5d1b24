/* chexnet train: train a DenseNet on ChestX-ray14, split lists, a manifest
 * or a pack, with the paper's recipe as defaults. */
#define _GNU_SOURCE
#include "cli.h"
#include "cli_mpi.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static void usage(FILE *f)
{
    fprintf(f,
"usage: chexnet train --labels FILE [--images DIR] --out DIR [options]\n"
"\n"
"Trains DenseNet-121 as CheXNet does: Adam (beta 0.9/0.999), batch 16, lr 1e-3\n"
"divided by 10 when the validation loss plateaus, keeping the lowest-validation-\n"
"loss model. Pneumonia (1 class): weighted BCE with w+ = |N|/(|P|+|N|),\n"
"w- = |P|/(|P|+|N|) from the training split; several classes: sum of BCEs.\n"
"\n"
"data:\n"
"  --labels FILE         Data_Entry_2017*.csv(.gz), a split list (IMAGE L1..L14),\n"
"                        a manifest CSV (path + 0/1 class columns), or a pack\n"
"                        from 'chexnet prepare'\n"
"  --images DIR          image folder (searched recursively for ChestX-ray14)\n"
"  --task pneumonia|all14  classes for ChestX-ray14 sources (default all14)\n"
"  --classes A,B,...     explicit class columns\n"
"  --patient-column COL  manifest column with the patient id (patient_key, ...)\n"
"  --fractions T,V,E     random patient-level split (default 0.7,0.1,0.2)\n"
"  --split-dir DIR       use DIR/train.txt, val.txt (and test.txt if present)\n"
"  --train-list F --val-list F [--test-list F]   split from list files\n"
"  --seed S              split, initialisation, shuffling and augmentation\n"
"                        (default 0)\n"
"augmentation (of training images; each drawn per image from (seed, epoch,\n"
"image), so --resume and several processes see the same; stored in the model\n"
"as \"augmentation\"; a resume must use the run's own):\n"
"  --no-augment          no random horizontal flips (the only augmentation by\n"
"                        default: the paper's recipe; the options below are off)\n"
"  --crop-scale LO,HI    random resized crop (torchvision RandomResizedCrop): a\n"
"                        box of LO..HI of the image's area (0 < LO <= HI <= 1),\n"
"                        aspect w/h from --crop-ratio, cut from the decoded\n"
"                        image before the resize to the input size (from a pack:\n"
"                        from its pixels, so a pack at the input size enlarges\n"
"                        the box; prepare it larger for sharper crops)\n"
"  --crop-ratio LO,HI    the box's aspect ratio range, log-uniform (default\n"
"                        0.75,1.3333; needs --crop-scale)\n"
"  --brightness X        x = clamp(f x, 0, 1), f uniform in [max(0, 1-X), 1+X]\n"
"  --contrast X          x = clamp(f x + (1-f) m, 0, 1), f uniform in\n"
"                        [max(0, 1-X), 1+X], m the image's mean grey level\n"
"                        (0.2989 R + 0.587 G + 0.114 B)\n"
"  --gamma X             x = clamp(x^g, 0, 1), g uniform in [1-X, 1+X], 0<=X<1\n"
"                        (x: pixel values v/255 in [0, 1] before Normalize, as\n"
"                        torchvision's functional adjust_brightness/contrast/\n"
"                        gamma on float tensors)\n"
"  --rotate DEG          rotation by an angle uniform in [-DEG, DEG] (0..180),\n"
"                        counter-clockwise, about the centre, bilinear; what\n"
"                        comes from outside the image is black (x = 0), edges\n"
"                        blended as torchvision's rotate on tensors\n"
"                        Order: crop, resize, flip, brightness, contrast, gamma,\n"
"                        rotate, Normalize.\n"
"model:\n"
"  --weights FILE        start from these weights (a head of another size is\n"
"                        replaced by a freshly initialised one)\n"
"  --arch NAME           from scratch: densenet121 (default), densenet169, densenet201\n"
"  --in-channels 3|1     from scratch: input channels (default 3)\n"
"optimisation:\n"
"  --epochs N            (default 10)\n"
"  --batch N             (default 16)\n"
"  --lr X                (default 1e-3)\n"
"  --lr-factor X         plateau decay factor (default 0.1)\n"
"  --patience N          epochs without improvement before decaying (default 0)\n"
"  --threshold X         relative improvement that counts (default 1e-4)\n"
"  --stop-after-decays N  end the run at the end of the epoch where the\n"
"                        stopping condition holds: the learning rate divided N\n"
"                        times (default 2; 0: not part of it) or the validation\n"
"                        loss not below its best for --stop-patience epochs\n"
"  --stop-patience E     (default 3; 0: not part of it). Either option turns the\n"
"                        stop on; without them the condition is only reported:\n"
"                        each epoch's log line has lr_divisions, best_epoch,\n"
"                        best_loss, epochs_since_best, stop_condition_met\n"
"  --weight-decay X      Adam L2 weight decay (default 0)\n"
"  --loss weighted|plain (default: weighted for 1 class, plain otherwise)\n"
"run:\n"
"  --out DIR             best.safetensors, last.safetensors, log.jsonl, split/\n"
"  --resume              continue from DIR/last.safetensors (same options)\n"
"  --checkpoint-every N  also checkpoint every N steps (default 100)\n"
"  --max-steps N         stop after N steps in this run, mid-epoch or at an\n"
"                        epoch's end, with a checkpoint (exit status 0)\n"
"  --threads T           (default: all cores)\n"
"  --loader-threads T    image decoding threads (default: as --threads)\n"
"  --backend B           cpu (default) or ref (plain C, slow: a second summation\n"
"                        order for checking)\n"
"  --json                print each epoch's log line on stdout\n"
"  --log-every N         without a terminal (no progress bar), print the loss\n"
"                        every N steps on stderr (default 50; 0: never)\n"
"  --log-steps           also write every step's loss to log.jsonl (lines\n"
"                        {\"step\": ..., \"loss\": ...} between the epoch lines)\n"
"  --version             print the version\n"
"several processes (mpirun -np K chexnet train ..., srun chexnet train ...):\n"
"                        each rank trains on its shard of every batch; --batch\n"
"                        stays the global batch, rank 0 writes every file\n"
"  --sync-bn             BatchNorm statistics over the global batch (then K\n"
"                        ranks compute the step of one process); without it\n"
"                        each rank normalises its shard with its own statistics\n"
"  --no-overlap          sum the gradients after the backward pass instead of\n"
"                        while it runs (for measuring the overlap)\n"
"\n"
"%s\n"
"Ctrl-C saves a checkpoint and exits with status 130; rerun with --resume to\n"
"continue (it says where it resumes). Under mpirun, SIGUSR1 to mpirun (which\n"
"it forwards) or SIGTERM/SIGINT to the ranks does the same.\n",
            cli_limits_help());
}

static volatile sig_atomic_t g_stop = 0;
static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

typedef struct {
    cli_progress bar;
    int epoch_started;
    int json;
    int quiet;        /* not rank 0: nothing on the terminal */
    cli_mpi *mpi;     /* several processes: the time spent waiting for sums */
    long steps;
    double t_first, w_first, t_last, w_last;
    long log_every;   /* a line every N steps when there is no progress bar */
    int first_batch;  /* batch the epoch started at in this run (resume) */
    int stop_decays, stop_patience, stop_when_met;
    int stopped_at;   /* 1-based epoch where the stopping condition ended the run */
} train_ui;

static int ui_step(void *user, const cx_train_progress *p)
{
    train_ui *u = user;
    u->t_last = cli_now();
    u->w_last = cli_mpi_wait_seconds(u->mpi);
    if (u->steps++ == 0) {
        u->t_first = u->t_last;
        u->w_first = u->w_last;
    }
    if (u->quiet)
        return g_stop != 0;
    if (u->epoch_started != p->epoch + 1) {
        static char label[64];
        snprintf(label, sizeof label, "epoch %d/%d", p->epoch + 1, p->epochs);
        cli_progress_start(&u->bar, label, "batch", p->n_batches);
        u->epoch_started = p->epoch + 1;
        u->first_batch = p->batch - 1;
    }
    cli_progress_update(&u->bar, p->batch);
    if (!u->bar.enabled && u->log_every > 0 && p->step % u->log_every == 0) {
        int done = p->batch - u->first_batch;
        double left = done > 0 ? (double)(p->n_batches - p->batch) * (cli_now() - u->bar.t0) / done
                               : 0;
        long l = (long)(left + 0.5);
        fprintf(stderr,
                "epoch %d/%d batch %d/%d step %ld: loss %.5f (epoch mean %.5f), lr %.3g, "
                "%.1f img/s, epoch ETA %ld:%02ld\n",
                p->epoch + 1, p->epochs, p->batch, p->n_batches, p->step, p->loss, p->avg_loss,
                p->lr, p->images_per_s, l / 60, l % 60);
    }
    return g_stop != 0;
}

static void ui_resume(void *user, const cx_resume_info *r)
{
    if (((train_ui *)user)->quiet)
        return;
    if (r->stopped)
        fprintf(stderr, "resuming from %s: the stopping condition held at the end of epoch %d "
                        "(step %ld)%s\n", r->path, r->epoch, r->step,
                ((train_ui *)user)->stop_when_met ? ": nothing left to run" :
                ": going on (no --stop-after-decays or --stop-patience)");
    else if (r->epoch >= r->epochs)
        fprintf(stderr, "resuming from %s: all %d epochs are done (step %ld)\n", r->path,
                r->epochs, r->step);
    else if (r->batch == 0)
        fprintf(stderr, "resuming from %s: epoch %d/%d from its start, step %ld\n", r->path,
                r->epoch + 1, r->epochs, r->step);
    else
        fprintf(stderr, "resuming from %s: epoch %d/%d at batch %d/%d, step %ld\n", r->path,
                r->epoch + 1, r->epochs, r->batch + 1, r->n_batches, r->step);
}

static void ui_epoch(void *user, const cx_epoch_report *r)
{
    train_ui *u = user;
    if (u->quiet)
        return;
    cli_progress_end(&u->bar);
    u->epoch_started = 0;
    fprintf(stderr,
            "epoch %d: train loss %.5f  val loss %.5f  val mean AUROC %.4f  lr %.3g%s%s  "
            "%.0f s, %.1f img/s, peak RSS %.0f MB\n",
            r->epoch + 1, r->train_loss, r->val_loss, r->mean_val_auroc, r->lr,
            r->next_lr < r->lr ? " (next: reduced)" : "", r->best ? "  [best]" : "", r->seconds,
            r->images_per_s, r->peak_rss_mb);
    char cond[160];
    if (u->stop_decays > 0 && u->stop_patience > 0)
        snprintf(cond, sizeof cond, "lr divided %d times or %d epochs without a lower loss",
                 u->stop_decays, u->stop_patience);
    else if (u->stop_decays > 0)
        snprintf(cond, sizeof cond, "lr divided %d times", u->stop_decays);
    else if (u->stop_patience > 0)
        snprintf(cond, sizeof cond, "%d epochs without a lower loss", u->stop_patience);
    else
        snprintf(cond, sizeof cond, "none");
    fprintf(stderr,
            "epoch %d: lr divided %d time%s; best epoch %d (%s loss %.5f), %d epoch%s since; "
            "stopping condition (%s): %s\n",
            r->epoch + 1, r->lr_divisions, r->lr_divisions == 1 ? "" : "s", r->best_epoch + 1,
            isfinite(r->val_loss) ? "val" : "train", r->best_loss, r->epochs_since_best,
            r->epochs_since_best == 1 ? "" : "s", cond,
            r->stopping ? "met, stopping" : r->stop_met ? "met" : "not met");
    if (r->stopping)
        u->stopped_at = r->epoch + 1;
    if (u->json) {
        printf("%s\n", r->json);
        fflush(stdout);
    }
}

/* "LO,HI": two numbers. */
static int parse_pair(const char *s, double v[2])
{
    char *end;
    v[0] = strtod(s, &end);
    if (end == s || *end != ',')
        return 1;
    s = end + 1;
    v[1] = strtod(s, &end);
    return end == s || *end;
}

/* The command line as a shell would take it back (for the model's metadata). */
static char *command_line(int argc, char **argv)
{
    size_t n = 16;
    for (int i = 0; i < argc; i++)
        n += 4 * strlen(argv[i]) + 3;
    char *s = malloc(n), *p = s;
    if (!s)
        return NULL;
    p += sprintf(p, "chexnet");
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        int plain = *a != 0;
        for (const char *c = a; *c; c++)
            if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                        "-_./=,:+@%", *c))
                plain = 0;
        *p++ = ' ';
        if (plain) {
            p += sprintf(p, "%s", a);
            continue;
        }
        *p++ = '\'';
        for (const char *c = a; *c; c++) {
            if (*c == '\'') {
                memcpy(p, "'\\''", 4);
                p += 4;
            } else {
                *p++ = *c;
            }
        }
        *p++ = '\'';
        *p = 0;
    }
    return s;
}

static int split_list(char *s, const char **out, int max)
{
    int n = 0;
    for (char *tok = strtok(s, ","); tok && n < max; tok = strtok(NULL, ","))
        out[n++] = tok;
    return n;
}

int cmd_train(int argc, char **argv)
{
    enum { O_LABELS = CLI_OPT_FIRST_FREE, O_IMAGES, O_TASK, O_CLASSES, O_PATIENT, O_FRACTIONS, O_SPLITDIR,
           O_TRAINL, O_VALL, O_TESTL, O_SEED, O_NOAUG, O_WEIGHTS, O_ARCH, O_INCH, O_EPOCHS,
           O_BATCH, O_LR, O_FACTOR, O_PATIENCE, O_THRESH, O_WD, O_LOSS, O_OUT, O_RESUME,
           O_CKPT, O_MAXSTEPS, O_THREADS, O_LTHREADS, O_JSON, O_LOGEVERY, O_LOGSTEPS, O_SYNCBN,
           O_NOOVERLAP, O_BACKEND, O_CROPSCALE, O_CROPRATIO, O_ROTATE, O_BRIGHT, O_CONTRAST,
           O_GAMMA, O_STOPDECAYS, O_STOPPAT };
    static const struct option opts[] = {
        {"labels", required_argument, 0, O_LABELS}, {"images", required_argument, 0, O_IMAGES},
        {"task", required_argument, 0, O_TASK}, {"classes", required_argument, 0, O_CLASSES},
        {"patient-column", required_argument, 0, O_PATIENT},
        {"fractions", required_argument, 0, O_FRACTIONS},
        {"split-dir", required_argument, 0, O_SPLITDIR},
        {"train-list", required_argument, 0, O_TRAINL},
        {"val-list", required_argument, 0, O_VALL}, {"test-list", required_argument, 0, O_TESTL},
        {"seed", required_argument, 0, O_SEED}, {"no-augment", no_argument, 0, O_NOAUG},
        {"weights", required_argument, 0, O_WEIGHTS}, {"arch", required_argument, 0, O_ARCH},
        {"in-channels", required_argument, 0, O_INCH},
        {"epochs", required_argument, 0, O_EPOCHS}, {"batch", required_argument, 0, O_BATCH},
        {"lr", required_argument, 0, O_LR}, {"lr-factor", required_argument, 0, O_FACTOR},
        {"patience", required_argument, 0, O_PATIENCE},
        {"threshold", required_argument, 0, O_THRESH},
        {"weight-decay", required_argument, 0, O_WD}, {"loss", required_argument, 0, O_LOSS},
        {"out", required_argument, 0, O_OUT}, {"resume", no_argument, 0, O_RESUME},
        {"checkpoint-every", required_argument, 0, O_CKPT},
        {"max-steps", required_argument, 0, O_MAXSTEPS},
        {"threads", required_argument, 0, O_THREADS},
        {"loader-threads", required_argument, 0, O_LTHREADS},
        {"json", no_argument, 0, O_JSON}, {"log-every", required_argument, 0, O_LOGEVERY},
        {"log-steps", no_argument, 0, O_LOGSTEPS}, {"sync-bn", no_argument, 0, O_SYNCBN},
        {"no-overlap", no_argument, 0, O_NOOVERLAP}, {"backend", required_argument, 0, O_BACKEND},
        {"crop-scale", required_argument, 0, O_CROPSCALE},
        {"crop-ratio", required_argument, 0, O_CROPRATIO},
        {"rotate", required_argument, 0, O_ROTATE}, {"brightness", required_argument, 0, O_BRIGHT},
        {"contrast", required_argument, 0, O_CONTRAST}, {"gamma", required_argument, 0, O_GAMMA},
        {"stop-after-decays", required_argument, 0, O_STOPDECAYS},
        {"stop-patience", required_argument, 0, O_STOPPAT},
        {0, 0, 0, 0}};
    const char *labels = NULL, *images = NULL, *task = NULL, *patient = NULL, *split_dir = NULL;
    const char *train_l = NULL, *val_l = NULL, *test_l = NULL, *weights = NULL;
    const char *arch = "densenet121", *loss_kind = NULL, *out = NULL;
    char *classes_arg = NULL, *fractions_arg = NULL;
    long seed = 0, in_ch = 3, epochs = 10, batch = 16, patience = 0, ckpt = 100, max_steps = 0;
    long threads = 0, lthreads = 0, log_every = 50;
    double lr = 1e-3, factor = 0.1, thresh = 1e-4, wd = 0;
    int augment = 1, resume = 0, json = 0, log_steps = 0, sync_bn = 0, no_overlap = 0, c;
    cx_backend_id backend = CX_BACKEND_CPU;
    cx_augment aug;
    memset(&aug, 0, sizeof aug);
    long stop_decays = 2, stop_patience = 3;
    int stop_when_met = 0;
    const char *why = NULL; /* what a bad value should be */
    char *cmdline = command_line(argc, argv); /* before getopt permutes argv */
    cli_getopt g;
    cli_getopt_init(&g, "train", argc, argv, "", opts, CLI_LIMITS, usage);
    while ((c = cli_getopt_next(&g)) != -1) {
        int bad = 0;
        switch (c) {
        case CLI_OPT_EXIT: free(cmdline); return g.exit_code;
        case O_LABELS: labels = optarg; break;
        case O_IMAGES: images = optarg; break;
        case O_TASK: task = optarg; break;
        case O_CLASSES: classes_arg = optarg; break;
        case O_PATIENT: patient = optarg; break;
        case O_FRACTIONS: fractions_arg = optarg; break;
        case O_SPLITDIR: split_dir = optarg; break;
        case O_TRAINL: train_l = optarg; break;
        case O_VALL: val_l = optarg; break;
        case O_TESTL: test_l = optarg; break;
        case O_SEED: bad = cli_opt_int(&g, 0, LONG_MAX, &seed) ? -1 : 0; break;
        case O_NOAUG: augment = 0; break;
        case O_WEIGHTS: weights = optarg; break;
        case O_ARCH: arch = optarg; break;
        case O_INCH: bad = cli_opt_int(&g, 1, 4, &in_ch) ? -1 : 0; break;
        case O_EPOCHS: bad = cli_opt_int(&g, 1, 100000, &epochs) ? -1 : 0; break;
        case O_BATCH: bad = cli_opt_int(&g, 2, 4096, &batch) ? -1 : 0; break;
        case O_LR: bad = cli_parse_double(optarg, &lr) || !(lr > 0); break;
        case O_FACTOR: bad = cli_parse_double(optarg, &factor) || !(factor > 0 && factor < 1); break;
        case O_PATIENCE: bad = cli_opt_int(&g, 0, 100000, &patience) ? -1 : 0; break;
        case O_THRESH: bad = cli_parse_double(optarg, &thresh) || thresh < 0; break;
        case O_WD: bad = cli_parse_double(optarg, &wd) || wd < 0; break;
        case O_LOSS: loss_kind = optarg; break;
        case O_OUT: out = optarg; break;
        case O_RESUME: resume = 1; break;
        case O_CKPT: bad = cli_opt_int(&g, 0, 100000000, &ckpt) ? -1 : 0; break;
        case O_MAXSTEPS: bad = cli_opt_int(&g, 0, 1000000000, &max_steps) ? -1 : 0; break;
        case O_THREADS: bad = cli_opt_int(&g, 0, 1024, &threads) ? -1 : 0; break;
        case O_LTHREADS: bad = cli_opt_int(&g, 0, 1024, &lthreads) ? -1 : 0; break;
        case O_JSON: json = 1; break;
        case O_LOGEVERY: bad = cli_opt_int(&g, 0, 1000000000, &log_every) ? -1 : 0; break;
        case O_LOGSTEPS: log_steps = 1; break;
        case O_SYNCBN: sync_bn = 1; break;
        case O_NOOVERLAP: no_overlap = 1; break;
        case O_BACKEND:
            if (!strcmp(optarg, "cpu"))
                backend = CX_BACKEND_CPU;
            else if (!strcmp(optarg, "ref"))
                backend = CX_BACKEND_REF;
            else
                bad = 1;
            break;
        case O_CROPSCALE:
            why = "two area fractions LO,HI with 0 < LO <= HI <= 1";
            bad = parse_pair(optarg, aug.crop_scale) || !(aug.crop_scale[0] > 0) ||
                  !(aug.crop_scale[0] <= aug.crop_scale[1]) || !(aug.crop_scale[1] <= 1);
            break;
        case O_CROPRATIO:
            why = "two aspect ratios (width / height) LO,HI with 0 < LO <= HI";
            bad = parse_pair(optarg, aug.crop_ratio) || !(aug.crop_ratio[0] > 0) ||
                  !(aug.crop_ratio[0] <= aug.crop_ratio[1]) || !isfinite(aug.crop_ratio[1]);
            break;
        case O_ROTATE:
            why = "degrees in 0..180";
            bad = cli_parse_double(optarg, &aug.rotate) || !(aug.rotate >= 0 && aug.rotate <= 180);
            break;
        case O_BRIGHT:
        case O_CONTRAST:
            why = "a number >= 0 (the factor is drawn from [max(0, 1-X), 1+X])";
            bad = cli_parse_double(optarg, c == O_BRIGHT ? &aug.brightness : &aug.contrast) ||
                  !(aug.brightness >= 0 && aug.brightness <= 1e6) ||
                  !(aug.contrast >= 0 && aug.contrast <= 1e6);
            break;
        case O_GAMMA:
            why = "a number >= 0 and < 1 (gamma is drawn from [1-X, 1+X])";
            bad = cli_parse_double(optarg, &aug.gamma) || !(aug.gamma >= 0 && aug.gamma < 1);
            break;
        case O_STOPDECAYS:
            bad = cli_opt_int(&g, 0, 100000, &stop_decays) ? -1 : 0;
            stop_when_met = 1;
            break;
        case O_STOPPAT:
            bad = cli_opt_int(&g, 0, 100000, &stop_patience) ? -1 : 0;
            stop_when_met = 1;
            break;
        default: free(cmdline); return 2;
        }
        if (bad) { /* < 0: cli_opt_int has said why */
            if (bad > 0)
                cli_opt_bad(&g, why);
            free(cmdline);
            return 2;
        }
        why = NULL;
    }
    if (!labels || !out || optind != argc) {
        if (optind != argc)
            cli_error("train", "unexpected argument '%s'", argv[optind]);
        else
            cli_error("train", "--labels and --out are required");
        usage(stderr);
        free(cmdline);
        return 2;
    }
    if (loss_kind && strcmp(loss_kind, "weighted") && strcmp(loss_kind, "plain")) {
        cli_error("train", "--loss wants weighted or plain");
        free(cmdline);
        return 2;
    }
    if (aug.crop_ratio[1] > 0 && !(aug.crop_scale[1] > 0)) {
        cli_error("train", "--crop-ratio needs --crop-scale (the crop's area range)");
        free(cmdline);
        return 2;
    }
    double fractions[3] = {0.7, 0.1, 0.2};
    if (fractions_arg) {
        char *s = fractions_arg, *end;
        for (int i = 0; i < 3; i++) {
            fractions[i] = strtod(s, &end);
            if (end == s || (i < 2 && *end != ',') || (i == 2 && *end)) {
                cli_error("train", "--fractions wants three numbers like 0.7,0.1,0.2");
                free(cmdline);
                return 2;
            }
            s = end + 1;
        }
    }
    /* several processes: MPI when a launcher started this one as a rank */
    int rank = 0, ranks = 1;
    int launched = cli_mpi_launched(&rank, &ranks);
    if (launched && ranks > 1 && !cli_mpi_available()) {
        cli_error("train",
                  "started as rank %d of %d processes, but this chexnet was built without MPI: "
                  "rebuild it with MPI (Debian: libopenmpi-dev) to train over several "
                  "processes, or run one process",
                  rank, ranks);
        free(cmdline);
        return 2;
    }
    if (sync_bn && !cli_mpi_available()) {
        cli_error("train", "--sync-bn needs a chexnet built with MPI (Debian: libopenmpi-dev)");
        free(cmdline);
        return 2;
    }
    cx_err err = {0};
    cli_mpi *mpi = NULL;
    if (launched && cli_mpi_available()) {
        if (!(mpi = cli_mpi_init(&argc, &argv, &err))) {
            cli_fail("train", &err);
            free(cmdline);
            return 1;
        }
        rank = cli_mpi_comm(mpi)->rank;
        ranks = cli_mpi_comm(mpi)->size;
        if (threads == 0) /* the machine's cores shared by its ranks */
            threads = cli_mpi_default_threads(mpi);
    }
    const int r0 = rank == 0; /* prints progress and writes files */
    cx_set_threads((int)threads);
    int rc = 1;
    cx_dataset *ds = NULL;
    cx_split sp;
    memset(&sp, 0, sizeof sp);
    int have_split = 0;
    cx_model *m = NULL;
    cx_loader *tr = NULL, *va = NULL;
    float *wpos = NULL, *wneg = NULL;
    const char *cls[128];
    int n_cls = 0;
    if (classes_arg)
        n_cls = split_list(classes_arg, cls, 128);

    /* ---- data ---- */
    cx_dataset_opts dopt;
    cx_dataset_opts_default(&dopt);
    dopt.labels = labels;
    dopt.image_dir = images;
    dopt.task = task;
    dopt.n_classes = n_cls;
    dopt.classes = n_cls ? cls : NULL;
    dopt.patient_column = patient;
    if (cx_dataset_load(&dopt, &ds, &err))
        goto fail;
    for (int i = 0; r0 && i < cx_dataset_num_warnings(ds); i++)
        cli_error("train", "warning: %s", cx_dataset_warning(ds, i));
    int K = cx_dataset_num_classes(ds);
    char pathbuf[4096];
    if (split_dir) {
        char a[4096], b[4096], e[4096];
        snprintf(a, sizeof a, "%s", cli_path_in(split_dir, "train.txt"));
        snprintf(b, sizeof b, "%s", cli_path_in(split_dir, "val.txt"));
        snprintf(e, sizeof e, "%s", cli_path_in(split_dir, "test.txt"));
        struct stat stt;
        if (cx_split_from_lists(ds, a, b, stat(e, &stt) == 0 ? e : NULL, 0.1, (uint64_t)seed,
                                &sp, &err))
            goto fail;
    } else if (train_l) {
        if (cx_split_from_lists(ds, train_l, val_l, test_l, 0.1, (uint64_t)seed, &sp, &err))
            goto fail;
    } else if (cx_split_random(ds, fractions, (uint64_t)seed, &sp, &err)) {
        goto fail;
    }
    have_split = 1;
    for (int i = 0; r0 && i < sp.n_warnings; i++)
        cli_error("train", "warning: %s", sp.warnings[i]);
    if (r0) {
        if (cx_mkdir_p(out, &err))
            goto fail;
        snprintf(pathbuf, sizeof pathbuf, "%s", cli_path_in(out, "split"));
        mkdir(pathbuf, 0777);
        if (cx_split_write(ds, &sp, pathbuf, &err))
            goto fail;
    }
    int ntr = sp.count[CX_SPLIT_TRAIN], nva = sp.count[CX_SPLIT_VAL];
    if (r0)
        fprintf(stderr, "data: %s, %s; train %d (%s), val %d (%s), test %d; split written to %s\n",
            cli_plural(cx_dataset_size(ds), "image", "images"), cli_plural(K, "class", "classes"),
            ntr, cli_plural(sp.patients[0], "patient", "patients"), nva,
            cli_plural(sp.patients[1], "patient", "patients"), sp.count[CX_SPLIT_TEST],
            cli_path_in(out, "split/"));
    if (ntr < 2) {
        cx_seterr(&err, CX_EARG, "the training split has %s (at least 2 are needed)",
                  cli_plural(ntr, "image", "images"));
        goto fail;
    }

    /* every image of the split must exist before any training starts */
    {
        int *all = malloc(sizeof(int) * (size_t)(sp.count[0] + sp.count[1] + sp.count[2] + 1));
        int na = 0;
        for (int part = 0; part < 3; part++)
            for (int i = 0; i < sp.count[part]; i++)
                all[na++] = sp.index[part][i];
        cx_status cs = cx_dataset_check_images(ds, all, na, &err);
        free(all);
        if (cs)
            goto fail;
    }

    /* ---- model ---- */
    if (weights) {
        cx_model *w = NULL;
        if (cx_model_load(weights, &w, &err))
            goto fail;
        if (cx_model_num_classes(w) != K) {
            if (r0)
                fprintf(stderr, "weights: %s has %s; replacing the head with %s\n", weights,
                    cli_plural(cx_model_num_classes(w), "output", "outputs"),
                    cli_plural(K, "fresh one", "fresh ones"));
            if (cx_model_with_head(w, K, (uint64_t)seed, &m, &err)) {
                cx_model_free(w);
                goto fail;
            }
            cx_model_free(w);
        } else {
            m = w;
        }
        /* a calibration belongs to the weights it was fitted on */
        int dropped = 0;
        for (int i = 0; i < 4; i++) {
            dropped |= cx_model_meta(m, CX_MODEL_CALIBRATION_KEYS[i]) != NULL;
            cx_model_remove_meta(m, CX_MODEL_CALIBRATION_KEYS[i]);
        }
        if (dropped && r0)
            fprintf(stderr, "weights: %s's calibration (thresholds, temperature, cam_range) "
                            "is left out of the new model: run chexnet calibrate on it\n",
                    weights);
    } else {
        cx_config cfg;
        if (cx_config_preset(arch, K, (int)in_ch, &cfg, &err) || cx_model_new(&cfg, &m, &err))
            goto fail;
        cx_model_init(m, (uint64_t)seed);
    }
    {
        const char **names = malloc(sizeof(char *) * K);
        for (int k = 0; k < K; k++)
            names[k] = cx_dataset_class(ds, k);
        cx_status s = cx_model_set_class_names(m, K, names, &err);
        free(names);
        if (s)
            goto fail;
    }
    {
        char date[32];
        time_t now = time(NULL);
        strftime(date, sizeof date, "%Y-%m-%d", gmtime(&now));
        cx_model_set_meta(m, "training_data", labels, NULL);
        cx_model_set_meta(m, "training_date", date, NULL);
        cx_model_set_meta(m, "created_by", "chexnet train " CX_VERSION, NULL);
        if (cmdline)
            cx_model_set_meta(m, "training_command", cmdline, NULL);
    }

    /* ---- loss weights ---- */
    int weighted = loss_kind ? !strcmp(loss_kind, "weighted") : K == 1;
    if (weighted) {
        wpos = malloc(sizeof(float) * K);
        wneg = malloc(sizeof(float) * K);
        for (int k = 0; k < K; k++) {
            double P = sp.positives[CX_SPLIT_TRAIN * K + k], N = ntr - P;
            wpos[k] = (float)(N / (P + N));
            wneg[k] = (float)(P / (P + N));
            if (r0)
                fprintf(stderr, "loss: %s w+ = %.4f, w- = %.4f (%d positives of %d)\n",
                        cx_dataset_class(ds, k), wpos[k], wneg[k], (int)P, ntr);
        }
    }

    /* ---- loaders ---- */
    cx_loader_opts lo;
    cx_loader_opts_default(&lo);
    lo.batch = (int)batch;
    lo.size = cx_model_input_size(m);
    lo.channels = cx_model_config(m)->in_channels;
    cx_model_normalization(m, lo.mean, lo.std);
    lo.seed = (uint64_t)seed;
    lo.threads = (int)(lthreads ? lthreads : threads);
    lo.augment = augment;
    lo.aug = aug;
    lo.shuffle = 1;
    lo.shard = rank; /* each rank makes its shard of every batch */
    lo.shards = ranks;
    if (cx_loader_new(ds, sp.index[CX_SPLIT_TRAIN], ntr, &lo, &tr, &err))
        goto fail;
    if (r0 && cx_augment_active(&aug)) {
        char desc[512];
        cx_augment_describe(&lo, desc, sizeof desc);
        fprintf(stderr, "augmentation: %s\n", desc);
        int ps = cx_dataset_pack_size(ds);
        if (aug.crop_scale[1] > 0 && ps > 0 && ps <= lo.size)
            fprintf(stderr,
                    "note: the pack holds %d-pixel images: crops from them are enlarged to the "
                    "input size %d (prepare the pack with a larger --size, or train from the "
                    "image files, for sharper crops)\n",
                    ps, lo.size);
    }
    if (nva > 0) {
        lo.augment = 0;
        memset(&lo.aug, 0, sizeof lo.aug);
        lo.shuffle = 0;
        if (cx_loader_new(ds, sp.index[CX_SPLIT_VAL], nva, &lo, &va, &err))
            goto fail;
    } else if (r0) {
        fprintf(stderr, "warning: no validation split; the best model is chosen on the "
                        "training loss\n");
    }

    /* ---- train ---- */
    cx_trainer_opts to;
    cx_trainer_opts_default(&to);
    to.epochs = (int)epochs;
    to.batch = (int)batch;
    to.image_size = lo.size;
    to.lr = lr;
    to.lr_factor = factor;
    to.patience = (int)patience;
    to.threshold = thresh;
    to.checkpoint_every = (int)ckpt;
    to.max_steps = max_steps;
    to.log_steps = log_steps;
    to.out_dir = out;
    to.resume = resume;
    to.train.weight_decay = (float)wd;
    to.wpos = wpos;
    to.wneg = wneg;
    to.comm = mpi ? cli_mpi_comm(mpi) : NULL;
    to.sync_bn = sync_bn;
    to.backend = backend;
    to.no_overlap = no_overlap;
    to.stop_decays = (int)stop_decays;
    to.stop_patience = (int)stop_patience;
    to.stop_when_met = stop_when_met;
    train_ui ui = {0};
    ui.stop_decays = (int)stop_decays;
    ui.stop_patience = (int)stop_patience;
    ui.stop_when_met = stop_when_met;
    ui.json = json;
    ui.quiet = !r0;
    ui.mpi = mpi;
    if (mpi && r0)
        fprintf(stderr, "ranks: %d (%d on this machine), %s each%s\n", ranks,
                cli_mpi_local_size(mpi), cli_plural(cx_get_threads(), "thread", "threads"),
                sync_bn ? ", BatchNorm across ranks" : "");
    ui.log_every = log_every;
    to.on_step = ui_step;
    to.on_epoch = ui_epoch;
    to.on_resume = ui_resume;
    to.user = &ui;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL); /* what mpirun forwards to the ranks */
    cx_status st = cx_trainer_run(m, tr, va, &to, &err);
    cli_progress_end(&ui.bar);
    if (mpi && r0 && ui.steps > 1 && ui.t_last > ui.t_first)
        fprintf(stderr,
                "gradient sums (%s): waited %.3f s of %.3f s over steps 2..%ld (%.1f%% of a "
                "step)\n",
                no_overlap ? "after the backward pass" : "overlapped with it",
                ui.w_last - ui.w_first, ui.t_last - ui.t_first, ui.steps,
                100.0 * (ui.w_last - ui.w_first) / (ui.t_last - ui.t_first));
    if (st == CX_EINTERRUPTED) { /* every rank stopped at the same step */
        /* Ctrl-C or SIGTERM (on this rank or another), or the step budget */
        if (g_stop || max_steps == 0 || ui.steps < max_steps) {
            if (r0)
                cli_error("train", "%s", err.msg);
            /* rank 0 carries the status: a rank ending non-zero first
             * would make mpirun kill the others, rank 0 writing and
             * printing included */
            rc = r0 ? 130 : 0;
        } else { /* --max-steps: a requested stop is a success */
            if (r0)
                fprintf(stderr, "--max-steps %ld reached: %s\n", max_steps, err.msg);
            rc = 0;
        }
        goto done;
    }
    if (st)
        goto fail;
    if (r0 && ui.stopped_at)
        fprintf(stderr, "the stopping condition held at the end of epoch %d: the run ends there\n",
                ui.stopped_at);
    if (r0)
        fprintf(stderr, "done: best model %s, log %s\n", cli_path_in(out, "best.safetensors"),
                cli_path_in(out, "log.jsonl"));
    rc = 0;
    goto done;
fail:
    if (mpi && ranks > 1) {
        /* the rank at fault says why, and the whole job ends (the others may
         * be waiting for it in a collective operation) */
        cli_error("train", "rank %d of %d: %s", rank, ranks, err.msg[0] ? err.msg : "error");
        cli_mpi_abort(mpi, 1);
    }
    cli_fail("train", &err);
    rc = 1;
done:
    cx_loader_free(tr);
    cx_loader_free(va);
    cx_model_free(m);
    if (have_split)
        cx_split_free(&sp);
    cx_dataset_free(ds);
    free(wpos);
    free(wneg);
    free(cmdline);
    cli_mpi_finalize(mpi);
    return rc;
}
