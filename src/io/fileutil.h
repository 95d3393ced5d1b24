/* fileutil.h - atomic file writing and the whole-file reader.
 *
 * Atomic writer: the data goes to a temporary file in the target's folder
 * (".NAME.tmp-PID-N"), which is flushed, fsync'ed and renamed over the
 * target; the folder is then fsync'ed. Readers of the target see either the
 * old or the new complete file, never a partial one. On any failure (and on
 * cx_atomic_abort) the temporary file is removed and the target is untouched.
 * New files get mode 0666 minus the umask.
 *
 * A process killed while writing leaves its temporary file behind. After
 * each successful write of NAME, temporary files of NAME whose writer is
 * gone (no process PID, nobody holding the file's lock: a live writer holds
 * an exclusive flock on its temporary file) are removed; the target's folder
 * is listed once per process for them.
 *
 *   cx_atomic_file *af;
 *   if (cx_atomic_open(path, &af, err)) return err->code;
 *   if (cx_atomic_write(af, buf, n, err)) { cx_atomic_abort(af); return ...; }
 *   return cx_atomic_commit(af, err);   // frees af, success or not
 *
 * Libraries that want a FILE* (libpng) may write through cx_atomic_stream(af)
 * instead; write errors on it are detected by commit (ferror/fflush).
 */
#ifndef CX_IO_FILEUTIL_H
#define CX_IO_FILEUTIL_H

#include "chexnet.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct cx_atomic_file cx_atomic_file;

cx_status cx_atomic_open(const char *path, cx_atomic_file **out, cx_err *err);
cx_status cx_atomic_write(cx_atomic_file *f, const void *data, size_t n,
                          cx_err *err);
FILE *cx_atomic_stream(cx_atomic_file *f);
const char *cx_atomic_path(const cx_atomic_file *f); /* the target path */
/* Flush, fsync, close, rename onto the target, fsync the folder. Frees f.
 * On failure the temporary file is removed. */
cx_status cx_atomic_commit(cx_atomic_file *f, cx_err *err);
/* Discards everything written; the target is untouched. Frees f. NULL ok. */
void cx_atomic_abort(cx_atomic_file *f);

/* The one whole-file reader: the file into a malloc'd buffer with a NUL
 * appended (not counted in *n); the caller frees *data. Regular files and
 * FIFOs (unless regular_only); a directory is an error (CX_EIO). Contents
 * beyond max_bytes (after decompression) or with more than max_lines line
 * ends give CX_ELIMIT, found while reading (a gzip bomb fails early), and
 * *hit (may be NULL) says which limit. A truncated or corrupt gzip stream is
 * an error (CX_EFORMAT). A file that does not exist gives missing
 * (CX_EMISSING when 0). */
typedef struct {
    size_t max_bytes;
    uint64_t max_lines;  /* 0: no limit */
    int gunzip;          /* decompress gzip content (plain read as it is) */
    int regular_only;    /* refuse FIFOs and devices */
    cx_status missing;   /* status of a missing file (0: CX_EMISSING) */
} cx_read_opts;
typedef enum { CX_READ_WITHIN = 0, CX_READ_OVER_BYTES, CX_READ_OVER_LINES } cx_read_limit;
cx_status cx_read_file_ex(const char *path, const cx_read_opts *o, char **data,
                          size_t *n, cx_read_limit *hit, cx_err *err);
/* Plain (cx_read_file) or gzip-decompressing (cx_read_file_gz), with only a
 * byte limit. */
cx_status cx_read_file(const char *path, size_t max_bytes, char **data,
                       size_t *n, cx_err *err);
cx_status cx_read_file_gz(const char *path, size_t max_bytes, char **data,
                          size_t *n, cx_err *err);

/* dir + '/' + name into buf (n bytes), with dir's trailing slashes dropped
 * ("rep/" and "rep" both give "rep/report.html"; "/" gives "/name").
 * Returns buf. */
char *cx_path_join(char *buf, size_t n, const char *dir, const char *name);

#endif
