/* The one option parser of every subcommand: getopt_long with the command's
 * own options plus the common ones (see cli.h). */
#define _GNU_SOURCE
#include "cli.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

static const struct option COMMON[] = {
    {"help", no_argument, 0, 'h'},
    {"version", no_argument, 0, CLI_OPT_VERSION},
    {0, 0, 0, 0}};

static const struct option LIMITS[] = {
    {"max-pixels", required_argument, 0, CLI_OPT_MAX_PIXELS},
    {"max-rows", required_argument, 0, CLI_OPT_MAX_ROWS},
    {"max-bytes", required_argument, 0, CLI_OPT_MAX_BYTES},
    {0, 0, 0, 0}};

static void append(cli_getopt *g, const struct option *o, int *n)
{
    for (; o->name; o++) {
        int dup = 0;
        for (int i = 0; i < *n; i++)
            dup |= !strcmp(g->longopts[i].name, o->name);
        if (!dup && *n < CLI_GETOPT_MAX - 1)
            g->longopts[(*n)++] = *o;
    }
}

void cli_getopt_init(cli_getopt *g, const char *cmd, int argc, char **argv,
                     const char *shortopts, const struct option *longopts, int flags,
                     void (*usage)(FILE *))
{
    memset(g, 0, sizeof *g);
    g->cmd = cmd;
    g->argc = argc;
    g->argv = argv;
    g->usage = usage;
    /* ':' first: a missing value is reported as such, by us */
    snprintf(g->shortopts, sizeof g->shortopts, ":%s%s", shortopts ? shortopts : "",
             shortopts && strchr(shortopts, 'h') ? "" : "h");
    int n = 0;
    if (longopts)
        append(g, longopts, &n);
    append(g, COMMON, &n);
    if (flags & CLI_LIMITS)
        append(g, LIMITS, &n);
    memset(&g->longopts[n], 0, sizeof g->longopts[n]);
    optind = 1;
    opterr = 0;
}

static int set_limit(cli_getopt *g, int which, const char *val)
{
    long v;
    const char *name = which == CLI_OPT_MAX_PIXELS ? "--max-pixels"
                       : which == CLI_OPT_MAX_ROWS ? "--max-rows"
                                                   : "--max-bytes";
    long hi = which == CLI_OPT_MAX_ROWS ? (long)CX_LIMIT_MAX_ROWS : 0x7fffffffffffffffL;
    if (cli_parse_int(val, 1, hi, &v)) {
        cli_error(g->cmd, "%s wants a positive integer (at most %ld), not '%s'", name, hi, val);
        return -1;
    }
    cx_limits l;
    cx_limits_get(&l);
    if (which == CLI_OPT_MAX_PIXELS)
        l.max_pixels = (uint64_t)v;
    else if (which == CLI_OPT_MAX_ROWS)
        l.max_rows = (uint64_t)v;
    else
        l.max_bytes = (uint64_t)v;
    cx_err err = {0};
    if (cx_limits_set(&l, &err)) {
        cli_error(g->cmd, "%s", err.msg);
        return -1;
    }
    return 0;
}

int cli_getopt_next(cli_getopt *g)
{
    for (;;) {
        int prev = optind;
        int c = getopt_long(g->argc, g->argv, g->shortopts, g->longopts, NULL);
        switch (c) {
        case 'h':
            if (g->usage)
                g->usage(stdout);
            g->exit_code = 0;
            return CLI_OPT_EXIT;
        case CLI_OPT_VERSION:
            cli_print_version();
            g->exit_code = 0;
            return CLI_OPT_EXIT;
        case CLI_OPT_MAX_PIXELS:
        case CLI_OPT_MAX_ROWS:
        case CLI_OPT_MAX_BYTES:
            if (set_limit(g, c, optarg)) {
                g->exit_code = 2;
                return CLI_OPT_EXIT;
            }
            continue;
        case ':': {
            const char *a = optind - 1 >= 0 && optind - 1 < g->argc ? g->argv[optind - 1] : "";
            if (optopt && optopt < 256)
                cli_error(g->cmd, "option -%c needs a value (see chexnet %s --help)", optopt,
                          g->cmd);
            else
                cli_error(g->cmd, "%s needs a value (see chexnet %s --help)", a, g->cmd);
            g->exit_code = 2;
            return CLI_OPT_EXIT;
        }
        case '?': {
            /* the argument getopt stopped at (past a long option it has
             * moved on) */
            const char *a = g->argv[optind > prev ? optind - 1 : prev];
            if (strncmp(a, "--", 2) && optopt > 0 && optopt < 256)
                cli_error(g->cmd, "unknown option '-%c' (see chexnet %s --help)", optopt, g->cmd);
            else {
                const char *eq = strchr(a, '=');
                int flag = 0;
                for (int i = 0; eq && g->longopts[i].name; i++)
                    if (g->longopts[i].has_arg == no_argument &&
                        strlen(g->longopts[i].name) == (size_t)(eq - a - 2) &&
                        !strncmp(g->longopts[i].name, a + 2, (size_t)(eq - a - 2)))
                        flag = 1;
                if (flag)
                    cli_error(g->cmd, "option '%.*s' takes no value (see chexnet %s --help)",
                              (int)(eq - a), a, g->cmd);
                else
                    cli_error(g->cmd, "unknown or ambiguous option '%s' (see chexnet %s --help)",
                              a, g->cmd);
            }
            g->exit_code = 2;
            return CLI_OPT_EXIT;
        }
        default:
            g->opt = c;
            return c;
        }
    }
}

void cli_opt_bad(const cli_getopt *g, const char *want)
{
    char name[64] = "an option";
    for (int i = 0; g->longopts[i].name; i++)
        if (g->longopts[i].val == g->opt) {
            snprintf(name, sizeof name, "--%s", g->longopts[i].name);
            break;
        }
    if (!strcmp(name, "an option") && g->opt > 0 && g->opt < 256)
        snprintf(name, sizeof name, "-%c", g->opt);
    if (want)
        cli_error(g->cmd, "invalid value '%s' for %s: want %s (see chexnet %s --help)",
                  optarg ? optarg : "", name, want, g->cmd);
    else
        cli_error(g->cmd, "invalid value '%s' for %s (see chexnet %s --help)",
                  optarg ? optarg : "", name, g->cmd);
}

int cli_opt_int(cli_getopt *g, long lo, long hi, long *out)
{
    if (optarg && !cli_parse_int(optarg, lo, hi, out))
        return 0;
    char want[96];
    if (hi == LONG_MAX && lo == 0)
        snprintf(want, sizeof want, "a non-negative integer");
    else if (hi == LONG_MAX && lo == 1)
        snprintf(want, sizeof want, "a positive integer");
    else if (hi == LONG_MAX)
        snprintf(want, sizeof want, "an integer >= %ld", lo);
    else
        snprintf(want, sizeof want, "an integer in %ld..%ld", lo, hi);
    cli_opt_bad(g, want);
    g->exit_code = 2;
    return 1;
}

const char *cli_limits_help(void)
{
    return "limits (input beyond one is refused early, naming the limit):\n"
           "  --max-pixels N       pixels of one image, width x height (default 67108864,\n"
           "                       8192 x 8192; images wider or taller than 16384 are\n"
           "                       always refused)\n"
           "  --max-rows N         lines of one CSV or list file, a header not counted\n"
           "                       (default 10000000)\n"
           "  --max-bytes N        bytes of one CSV or list file after gzip\n"
           "                       decompression (default 1073741824, 1 GiB)\n";
}
