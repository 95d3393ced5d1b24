/* atomic_tool - drives the atomic writer for tests/py/test_hardening.py.
 *
 *   atomic_tool PATH BYTES         write BYTES bytes to PATH atomically
 *   atomic_tool PATH BYTES hold    write them, print "written", then wait
 *                                  (to be killed) before committing
 */
#include "io/fileutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: atomic_tool PATH BYTES [hold]\n");
        return 2;
    }
    size_t n = strtoull(argv[2], NULL, 10);
    int hold = argc > 3 && !strcmp(argv[3], "hold");
    cx_err err = {0};
    cx_atomic_file *f;
    if (cx_atomic_open(argv[1], &f, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    char buf[65536];
    memset(buf, 'x', sizeof buf);
    for (size_t done = 0; done < n;) {
        size_t k = n - done < sizeof buf ? n - done : sizeof buf;
        if (cx_atomic_write(f, buf, k, &err)) {
            fprintf(stderr, "%s\n", err.msg);
            cx_atomic_abort(f);
            return 1;
        }
        done += k;
    }
    fflush(cx_atomic_stream(f));
    printf("written\n");
    fflush(stdout);
    if (hold)
        for (;;)
            pause();
    if (cx_atomic_commit(f, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    printf("committed\n");
    return 0;
}
