/* Atomic file writing (temp + fsync + rename) and whole-file reading. */
#include "io/fileutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>
#include <zlib.h>

struct cx_atomic_file {
    char *path;   /* target */
    char *tmp;    /* temporary file in the same folder */
    char *dir;    /* the folder (for fsync after rename) */
    char *base;   /* the target's file name */
    FILE *fp;
    int lockfd;   /* holds the flock on the temporary file until it is gone */
};

static unsigned long g_tmp_counter;

static void atomic_free(cx_atomic_file *f)
{
    if (!f)
        return;
    if (f->lockfd >= 0)
        close(f->lockfd);
    free(f->path);
    free(f->tmp);
    free(f->dir);
    free(f->base);
    free(f);
}

cx_status cx_atomic_open(const char *path, cx_atomic_file **out, cx_err *err)
{
    *out = NULL;
    if (!path || !*path)
        return cx_seterr(err, CX_EARG, "atomic write: empty output path");
    size_t n = strlen(path);
    if (path[n - 1] == '/')
        return cx_seterr(err, CX_EARG, "%s: output path names a folder", path);
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return cx_seterr(err, CX_EIO, "%s: is a folder, cannot write a file there", path);

    cx_atomic_file *f = calloc(1, sizeof *f);
    if (!f)
        return cx_seterr(err, CX_ENOMEM, "%s: out of memory", path);
    f->lockfd = -1;
    f->path = strdup(path);
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    if (slash == path)
        f->dir = strdup("/");
    else if (slash)
        f->dir = strndup(path, (size_t)(slash - path));
    else
        f->dir = strdup(".");
    size_t tcap = n + 64;
    f->tmp = malloc(tcap);
    f->base = strdup(base);
    if (!f->path || !f->dir || !f->tmp || !f->base) {
        atomic_free(f);
        return cx_seterr(err, CX_ENOMEM, "%s: out of memory", path);
    }
    int fd = -1;
    for (int attempt = 0; attempt < 100; attempt++) {
        unsigned long k = __atomic_fetch_add(&g_tmp_counter, 1, __ATOMIC_RELAXED);
        snprintf(f->tmp, tcap, "%.*s.%s.tmp-%ld-%lu", (int)(base - path), path, base,
                 (long)getpid(), k);
        fd = open(f->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd >= 0 || errno != EEXIST)
            break;
    }
    if (fd < 0) {
        int e = errno;
        cx_status s = cx_seterr(err, CX_EIO, "%s: cannot create a temporary file in %s: %s",
                                path, f->dir, strerror(e));
        atomic_free(f);
        return s;
    }
    /* The writer holds an exclusive lock on its temporary file while it
     * exists (a duplicate descriptor keeps it past fclose, until the rename
     * or unlink): a cleaner never takes the file of a live writer, even one
     * whose process id it cannot see. File systems without flock: the
     * process id alone decides (see clean_stale). */
    if (flock(fd, LOCK_EX | LOCK_NB) == 0)
        f->lockfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    f->fp = fdopen(fd, "wb");
    if (!f->fp) {
        int e = errno;
        close(fd);
        unlink(f->tmp);
        cx_status s = cx_seterr(err, CX_EIO, "%s: %s", path, strerror(e));
        atomic_free(f);
        return s;
    }
    *out = f;
    return CX_OK;
}

cx_status cx_atomic_write(cx_atomic_file *f, const void *data, size_t n, cx_err *err)
{
    if (!f || !f->fp)
        return cx_seterr(err, CX_EARG, "atomic write: file not open");
    if (n == 0)
        return CX_OK;
    if (fwrite(data, 1, n, f->fp) != n) {
        int e = errno;
        return cx_seterr(err, CX_EIO, "%s: write failed: %s", f->path,
                         e ? strerror(e) : "short write");
    }
    return CX_OK;
}

FILE *cx_atomic_stream(cx_atomic_file *f)
{
    return f ? f->fp : NULL;
}

const char *cx_atomic_path(const cx_atomic_file *f)
{
    return f ? f->path : NULL;
}

void cx_atomic_abort(cx_atomic_file *f)
{
    if (!f)
        return;
    if (f->fp)
        fclose(f->fp);
    unlink(f->tmp);
    atomic_free(f);
}

/* ------------------------------------------- temporary files of the dead
 *
 * A process killed while writing leaves its temporary file
 * (".NAME.tmp-PID-N"). After each successful write of NAME, the temporary
 * files of NAME left by writers that are gone are removed: the name must
 * match the pattern exactly, the file must be a regular file of this user,
 * process PID must not exist, and no one may hold the file's lock (a live
 * writer always does, see cx_atomic_open). The folder is listed once per
 * process (the first write into it); what that finds is remembered, so
 * thousands of writes into one folder cost one listing. Files left by
 * processes that die later are removed by the next process. */

typedef struct {
    dev_t dev;
    ino_t ino;
    size_t n;
    char **names; /* stale candidates still present */
} dir_scan;

static pthread_mutex_t g_scan_mu = PTHREAD_MUTEX_INITIALIZER;
static dir_scan *g_scans;
static size_t g_nscans;

/* PID of a temporary-file name ".BASE.tmp-PID-N", or -1 if the name has
 * another form; *blen receives the length of BASE. */
static long tmp_name_pid(const char *name, size_t *blen)
{
    if (name[0] != '.')
        return -1;
    const char *t = strstr(name + 1, ".tmp-");
    const char *last = NULL;
    while (t) { /* the last ".tmp-" (BASE may contain one) */
        last = t;
        t = strstr(t + 1, ".tmp-");
    }
    if (!last || last == name + 1)
        return -1;
    const char *p = last + 5;
    long pid = 0;
    int digits = 0;
    for (; *p >= '0' && *p <= '9'; p++, digits++) {
        if (digits > 9)
            return -1;
        pid = pid * 10 + (*p - '0');
    }
    if (!digits || *p != '-' || pid <= 0)
        return -1;
    p++;
    digits = 0;
    for (; *p >= '0' && *p <= '9'; p++)
        digits++;
    if (!digits || *p || digits > 20)
        return -1;
    *blen = (size_t)(last - (name + 1));
    return pid;
}

static int pid_alive(long pid)
{
    if (pid == (long)getpid())
        return 1;
    return kill((pid_t)pid, 0) == 0 || errno != ESRCH;
}

/* Removes dir/name if it is still a stale temporary file; 1 if it is gone. */
static int remove_if_stale(int dfd, const char *name)
{
    size_t blen;
    long pid = tmp_name_pid(name, &blen);
    if (pid < 0 || pid_alive(pid))
        return 0;
    int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT;
    struct stat a, b;
    int gone = 0;
    if (fstat(fd, &a) == 0 && S_ISREG(a.st_mode) && a.st_uid == geteuid() &&
        flock(fd, LOCK_EX | LOCK_NB) == 0 &&
        fstatat(dfd, name, &b, AT_SYMLINK_NOFOLLOW) == 0 && a.st_dev == b.st_dev &&
        a.st_ino == b.st_ino)
        gone = unlinkat(dfd, name, 0) == 0;
    close(fd);
    return gone;
}

static void clean_stale(const char *dir, const char *base)
{
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return;
    struct stat ds;
    if (fstat(dfd, &ds) != 0) {
        close(dfd);
        return;
    }
    pthread_mutex_lock(&g_scan_mu);
    dir_scan *sc = NULL;
    for (size_t i = 0; i < g_nscans; i++)
        if (g_scans[i].dev == ds.st_dev && g_scans[i].ino == ds.st_ino)
            sc = &g_scans[i];
    if (!sc) {
        dir_scan *ns = realloc(g_scans, (g_nscans + 1) * sizeof *ns);
        int dfd2 = dup(dfd);
        DIR *d = dfd2 >= 0 ? fdopendir(dfd2) : NULL;
        if (!ns || !d) {
            if (ns)
                g_scans = ns;
            if (d)
                closedir(d);
            else if (dfd2 >= 0)
                close(dfd2);
            pthread_mutex_unlock(&g_scan_mu);
            close(dfd);
            return;
        }
        g_scans = ns;
        sc = &g_scans[g_nscans++];
        memset(sc, 0, sizeof *sc);
        sc->dev = ds.st_dev;
        sc->ino = ds.st_ino;
        size_t cap = 0;
        struct dirent *e;
        while ((e = readdir(d))) {
            size_t blen;
            long pid = tmp_name_pid(e->d_name, &blen);
            if (pid < 0 || pid_alive(pid))
                continue;
            if (sc->n == cap) {
                size_t nc = cap ? 2 * cap : 8;
                char **nn = realloc(sc->names, nc * sizeof *nn);
                if (!nn)
                    break;
                sc->names = nn;
                cap = nc;
            }
            if (!(sc->names[sc->n] = strdup(e->d_name)))
                break;
            sc->n++;
        }
        closedir(d);
    }
    size_t bl = strlen(base);
    for (size_t i = 0; i < sc->n;) {
        const char *nm = sc->names[i];
        size_t blen;
        if (tmp_name_pid(nm, &blen) >= 0 && blen == bl && !memcmp(nm + 1, base, bl) &&
            remove_if_stale(dfd, nm)) {
            free(sc->names[i]);
            sc->names[i] = sc->names[--sc->n];
            continue;
        }
        i++;
    }
    pthread_mutex_unlock(&g_scan_mu);
    close(dfd);
}

static void fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return;
    (void)fsync(fd); /* best effort: some file systems refuse it */
    close(fd);
}

cx_status cx_atomic_commit(cx_atomic_file *f, cx_err *err)
{
    if (!f || !f->fp) {
        cx_atomic_abort(f);
        return cx_seterr(err, CX_EARG, "atomic write: file not open");
    }
    cx_status st = CX_OK;
    errno = 0;
    if (ferror(f->fp) || fflush(f->fp) != 0) {
        int e = errno;
        st = cx_seterr(err, CX_EIO, "%s: write failed: %s", f->path,
                       e ? strerror(e) : "stream error");
    } else if (fsync(fileno(f->fp)) != 0 && errno != EINVAL && errno != EROFS) {
        st = cx_seterr(err, CX_EIO, "%s: fsync failed: %s", f->path, strerror(errno));
    }
    int rc = fclose(f->fp);
    f->fp = NULL;
    if (st == CX_OK && rc != 0)
        st = cx_seterr(err, CX_EIO, "%s: close failed: %s", f->path, strerror(errno));
    if (st == CX_OK && rename(f->tmp, f->path) != 0)
        st = cx_seterr(err, CX_EIO, "%s: cannot rename %s onto it: %s", f->path, f->tmp,
                       strerror(errno));
    if (st != CX_OK) {
        unlink(f->tmp);
        atomic_free(f);
        return st;
    }
    fsync_dir(f->dir);
    clean_stale(f->dir, f->base);
    atomic_free(f);
    return CX_OK;
}

cx_status cx_write_file_atomic(const char *path, const void *data, size_t n, cx_err *err)
{
    cx_atomic_file *f;
    cx_status st = cx_atomic_open(path, &f, err);
    if (st)
        return st;
    st = cx_atomic_write(f, data, n, err);
    if (st) {
        cx_atomic_abort(f);
        return st;
    }
    return cx_atomic_commit(f, err);
}

/* ---------------------------------------------------------------- reading */

typedef struct {
    int fd;
    gzFile gz; /* when decompressing: reads through fd */
} source;

/* Up to n bytes; 0 at the end; -1 on an error (err set). */
static long src_read(source *s, char *buf, size_t n, const char *path, cx_err *err)
{
    if (s->gz) {
        if (n > (1u << 30))
            n = 1u << 30;
        int r = gzread(s->gz, buf, (unsigned)n);
        if (r < 0) {
            int errnum;
            const char *msg = gzerror(s->gz, &errnum);
            cx_seterr(err, errnum == Z_ERRNO ? CX_EIO : CX_EFORMAT, "%s: %s%s", path,
                      errnum == Z_ERRNO ? "read failed: " : "corrupt gzip data: ",
                      errnum == Z_ERRNO ? strerror(errno) : msg);
            return -1;
        }
        return r;
    }
    for (;;) {
        ssize_t r = read(s->fd, buf, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            cx_seterr(err, CX_EIO, "%s: read failed: %s", path, strerror(errno));
        return (long)r;
    }
}

static uint64_t count_lines(const char *p, size_t n)
{
    uint64_t c = 0;
    const char *e = p + n;
    while (p < e && (p = memchr(p, '\n', (size_t)(e - p)))) {
        c++;
        p++;
    }
    return c;
}

cx_status cx_read_file_ex(const char *path, const cx_read_opts *o, char **data, size_t *n,
                          cx_read_limit *hit, cx_err *err)
{
    *data = NULL;
    *n = 0;
    if (hit)
        *hit = CX_READ_WITHIN;
    if (!path || !*path)
        return cx_seterr(err, CX_EARG, "read: empty path");
    size_t max_bytes = o->max_bytes > SIZE_MAX / 2 ? SIZE_MAX / 2 : o->max_bytes;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return cx_seterr(err, errno == ENOENT && o->missing ? o->missing
                              : errno == ENOENT ? CX_EMISSING : CX_EIO,
                         "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return cx_seterr(err, CX_EIO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (S_ISDIR(sb.st_mode)) {
        close(fd);
        return cx_seterr(err, CX_EIO, "%s: is a directory, not a file", path);
    }
    if (o->regular_only && !S_ISREG(sb.st_mode)) {
        close(fd);
        return cx_seterr(err, CX_EIO, "%s: not a regular file", path);
    }
    size_t cap = 1 << 16;
    if (S_ISREG(sb.st_mode) && !o->gunzip) {
        if ((uint64_t)sb.st_size > (uint64_t)max_bytes) {
            close(fd);
            if (hit)
                *hit = CX_READ_OVER_BYTES;
            return cx_seterr(err, CX_ELIMIT,
                             "%s: file of %lld bytes is beyond the limit of %zu bytes", path,
                             (long long)sb.st_size, max_bytes);
        }
        cap = (size_t)sb.st_size + 1; /* exact: the end is found by a probe */
    }
    source src = {fd, NULL};
    if (o->gunzip) {
        /* zlib reads plain content through as it is */
        if (!(src.gz = gzdopen(fd, "rb"))) {
            close(fd);
            return cx_seterr(err, CX_ENOMEM, "%s: out of memory", path);
        }
        gzbuffer(src.gz, 1 << 17);
    }
    cx_status st = CX_OK;
    uint64_t lines = 0;
    size_t len = 0;
    char *buf = malloc(cap);
    if (!buf) {
        st = cx_seterr(err, CX_ENOMEM, "%s: out of memory", path);
        goto out;
    }
    for (;;) {
        long r;
        if (len + 1 >= cap) {
            /* full: probe for the end before growing */
            char probe;
            if ((r = src_read(&src, &probe, 1, path, err)) < 0) {
                st = err ? err->code : CX_EIO;
                goto out;
            }
            if (r == 0)
                break;
            /* (len < cap <= max_bytes + 2 here: more was over the limit) */
            size_t nc = cap * 2;
            if (nc > max_bytes + 2 || nc < cap)
                nc = max_bytes + 2;
            char *nb = realloc(buf, nc);
            if (!nb) {
                st = cx_seterr(err, CX_ENOMEM, "%s: out of memory", path);
                goto out;
            }
            buf = nb;
            cap = nc;
            buf[len] = probe;
            r = 1;
        } else if ((r = src_read(&src, buf + len, cap - 1 - len, path, err)) < 0) {
            st = err ? err->code : CX_EIO;
            goto out;
        }
        if (r == 0)
            break;
        if (o->max_lines)
            lines += count_lines(buf + len, (size_t)r);
        len += (size_t)r;
        if ((o->max_lines && lines > o->max_lines) || len > max_bytes) {
            int by_lines = o->max_lines && lines > o->max_lines;
            if (hit)
                *hit = by_lines ? CX_READ_OVER_LINES : CX_READ_OVER_BYTES;
            st = by_lines ? cx_seterr(err, CX_ELIMIT, "%s: more than %llu lines", path,
                                      (unsigned long long)o->max_lines)
                          : cx_seterr(err, CX_ELIMIT,
                                      "%s: %scontents larger than the limit of %zu bytes", path,
                                      o->gunzip ? "(decompressed) " : "", max_bytes);
            goto out;
        }
    }
    if (src.gz) {
        /* gzread stops quietly on a truncated stream: check for it */
        int errnum = Z_OK;
        const char *msg = gzerror(src.gz, &errnum);
        if (errnum == Z_BUF_ERROR)
            st = cx_seterr(err, CX_EFORMAT, "%s: truncated gzip data", path);
        else if (errnum != Z_OK && errnum != Z_STREAM_END)
            st = cx_seterr(err, CX_EFORMAT, "%s: corrupt gzip data: %s", path, msg);
    }
out:
    if (src.gz) {
        if (gzclose(src.gz) != Z_OK && !st)
            st = cx_seterr(err, CX_EIO, "%s: error closing the file", path);
    } else {
        close(fd);
    }
    if (st) {
        free(buf);
        return st;
    }
    buf[len] = 0;
    *data = buf;
    *n = len;
    return CX_OK;
}

cx_status cx_read_file(const char *path, size_t max_bytes, char **data, size_t *n,
                       cx_err *err)
{
    cx_read_opts o = {0};
    o.max_bytes = max_bytes;
    return cx_read_file_ex(path, &o, data, n, NULL, err);
}

cx_status cx_read_file_gz(const char *path, size_t max_bytes, char **data, size_t *n,
                          cx_err *err)
{
    cx_read_opts o = {0};
    o.max_bytes = max_bytes;
    o.gunzip = 1;
    return cx_read_file_ex(path, &o, data, n, NULL, err);
}

cx_status cx_mkdir_p(const char *dir, cx_err *err)
{
    if (!dir || !*dir)
        return cx_seterr(err, CX_EARG, "empty folder name");
    size_t n = strlen(dir);
    char *buf = malloc(n + 1);
    if (!buf)
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    memcpy(buf, dir, n + 1);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(buf, 0777) != 0 && errno != EEXIST) {
            cx_status st = cx_seterr(err, CX_EIO, "%s: cannot create folder: %s", buf,
                                     strerror(errno));
            free(buf);
            return st;
        }
        *p = '/';
    }
    int rc = mkdir(buf, 0777) != 0 && errno != EEXIST ? errno : 0;
    free(buf);
    if (rc)
        return cx_seterr(err, CX_EIO, "%s: cannot create folder: %s", dir, strerror(rc));
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return cx_seterr(err, CX_EIO, "%s: exists and is not a folder", dir);
    return CX_OK;
}

char *cx_path_join(char *buf, size_t n, const char *dir, const char *name)
{
    size_t l = strlen(dir);
    while (l > 1 && dir[l - 1] == '/')
        l--;
    if (l == 1 && dir[0] == '/')
        l = 0;
    snprintf(buf, n, "%.*s/%s", (int)l, dir, name);
    return buf;
}
