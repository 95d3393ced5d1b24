/* dicom_uid.c - new DICOM UIDs: "2.25." followed by a random (version 4)
 * UUID written as one decimal integer (PS3.5 B.2, ISO/IEC 9834-8), so no
 * registered root is needed. At most 44 characters. */
#define _GNU_SOURCE
#include "chexnet.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

void cx_dicom_new_uid(char uid[65])
{
    uint8_t b[16];
    size_t got = 0;
    while (got < sizeof b) {
        ssize_t r = getrandom(b + got, sizeof b - got, 0);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    if (got < sizeof b) { /* no entropy source: time and address, still unique enough */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
        uint64_t y = (uint64_t)(uintptr_t)uid ^ ((uint64_t)getpid() << 32);
        memcpy(b, &x, 8);
        memcpy(b + 8, &y, 8);
    }
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    /* the 128-bit number in decimal: repeated division of the bytes by 10 */
    char digits[40];
    int nd = 0;
    uint8_t v[16];
    memcpy(v, b, 16);
    for (;;) {
        int zero = 1;
        unsigned rem = 0;
        for (int i = 0; i < 16; i++) {
            unsigned cur = rem << 8 | v[i];
            v[i] = (uint8_t)(cur / 10);
            rem = cur % 10;
            zero &= v[i] == 0;
        }
        digits[nd++] = (char)('0' + rem);
        if (zero)
            break;
    }
    char *o = uid;
    o += sprintf(o, "2.25.");
    while (nd > 0)
        *o++ = digits[--nd];
    *o = 0;
}
