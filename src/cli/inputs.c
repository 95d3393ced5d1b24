/* Input lists of the CLI: image files, folders (recursed, sorted) and
 * @list files, shared by predict and evaluate. */
#define _GNU_SOURCE
#include "cli.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/types.h>


int cli_strvec_push(cli_strvec *s, char *str)
{
    if (!str)
        return -1;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        char **q = realloc(s->v, cap * sizeof *q);
        if (!q) {
            free(str);
            return -1;
        }
        s->v = q;
        s->cap = cap;
    }
    s->v[s->n++] = str;
    return 0;
}

void cli_strvec_free(cli_strvec *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
    memset(s, 0, sizeof *s);
}

int cli_cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int cli_is_image_name(const char *name)
{
    const char *dot = strrchr(name, '.');
    if (!dot)
        return 0;
    return !strcasecmp(dot, ".png") || !strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg") ||
           !strcasecmp(dot, ".jpe") || !strcasecmp(dot, ".dcm") || !strcasecmp(dot, ".dicom");
}

char *cli_path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir);
    char *p = NULL;
    if (asprintf(&p, "%s%s%s", dir, n && dir[n - 1] == '/' ? "" : "/", name) < 0)
        return NULL;
    return p;
}

/* Collects image files under dir (recursively) into out. Returns -1 on a
 * fatal error (out of memory), else the number of unreadable subfolders. */
static int scan_dir(const char *cmd, const char *dir, int depth, cli_strvec *out, int *nerr)
{
    if (depth > 64) {
        cli_error(cmd, "%s: folders nested too deeply (symlink loop?)", dir);
        (*nerr)++;
        return 0;
    }
    DIR *d = opendir(dir);
    if (!d) {
        cli_error(cmd, "%s: cannot read folder: %s", dir, strerror(errno));
        (*nerr)++;
        return 0;
    }
    cli_strvec names = {0};
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue; /* ., .., hidden files (e.g. macOS "._x.png") */
        if (cli_strvec_push(&names, strdup(e->d_name))) {
            rc = -1;
            break;
        }
    }
    closedir(d);
    if (rc) {
        cli_strvec_free(&names);
        return rc;
    }
    qsort(names.v, names.n, sizeof(char *), cli_cmp_str);
    for (size_t i = 0; i < names.n && !rc; i++) {
        char *p = cli_path_join(dir, names.v[i]);
        if (!p) {
            rc = -1;
            break;
        }
        struct stat sb;
        if (stat(p, &sb) != 0) {
            free(p);
            continue; /* dangling symlink */
        }
        if (S_ISDIR(sb.st_mode)) {
            rc = scan_dir(cmd, p, depth + 1, out, nerr);
            free(p);
        } else if (S_ISREG(sb.st_mode) && cli_is_image_name(names.v[i])) {
            rc = cli_strvec_push(out, p);
        } else {
            free(p);
        }
    }
    cli_strvec_free(&names);
    return rc;
}

/* Adds one INPUT (file, directory, or @list when allow_list). */
int cli_add_input(const char *cmd, const char *arg, int allow_list, cli_strvec *out, int *nerr)
{
    if (allow_list && arg[0] == '@') {
        const char *lp = arg + 1;
        FILE *f = fopen(lp, "r");
        if (!f) {
            cli_error(cmd, "%s: cannot open list: %s", lp, strerror(errno));
            (*nerr)++;
            return 0;
        }
        char *line = NULL;
        size_t cap = 0;
        ssize_t len;
        int rc = 0;
        cx_limits lim;
        cx_limits_get(&lim);
        uint64_t lines = 0, bytes = 0;
        struct stat lsb;
        if (fstat(fileno(f), &lsb) == 0 && S_ISREG(lsb.st_mode) &&
            (uint64_t)lsb.st_size > lim.max_bytes) {
            cli_error(cmd, "%s: %lld bytes, more than the size limit of %llu (raise it with "
                           "--max-bytes N)",
                      lp, (long long)lsb.st_size, (unsigned long long)lim.max_bytes);
            (*nerr)++;
            fclose(f);
            return 0;
        }
        while (!rc && (len = getline(&line, &cap, f)) >= 0) {
            bytes += (uint64_t)len;
            if (++lines > lim.max_rows || bytes > lim.max_bytes) {
                if (lines > lim.max_rows)
                    cli_error(cmd, "%s: more than %llu lines, the row limit (raise it with "
                                   "--max-rows N)",
                              lp, (unsigned long long)lim.max_rows);
                else
                    cli_error(cmd, "%s: more than %llu bytes, the size limit (raise it with "
                                   "--max-bytes N)",
                              lp, (unsigned long long)lim.max_bytes);
                (*nerr)++;
                break;
            }
            while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
                line[--len] = 0;
            char *s = line;
            while (*s == ' ' || *s == '\t')
                s++;
            len = (ssize_t)strlen(s);
            while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
                s[--len] = 0;
            if (!*s || *s == '#')
                continue;
            rc = cli_add_input(cmd, s, 0, out, nerr);
        }
        if (ferror(f)) {
            cli_error(cmd, "%s: read error", lp);
            (*nerr)++;
        }
        free(line);
        fclose(f);
        return rc;
    }
    struct stat sb;
    if (stat(arg, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        size_t before = out->n;
        int rc = scan_dir(cmd, arg, 0, out, nerr);
        if (rc)
            return rc;
        if (out->n == before) {
            cli_error(cmd, "%s: no PNG, JPEG or DICOM images found in this folder", arg);
            (*nerr)++;
        } else {
            qsort(out->v + before, out->n - before, sizeof(char *), cli_cmp_str);
        }
        return 0;
    }
    /* a file (or a missing path: its error is reported when it is read) */
    return cli_strvec_push(out, strdup(arg));
}

