/* dicom_sniff.c - recognising a DICOM file from its first bytes (plain C, so
 * that the image loader knows a DICOM file even in a program linked without
 * the DCMTK part, src/io/dicom.cc). */
#include "io/dicom.h"

#include <string.h>

int cx_dicom_sniff(const void *buf, size_t n)
{
    const uint8_t *b = buf;
    if (!b)
        return 0;
    if (n >= 132 && !memcmp(b + 128, "DICM", 4))
        return 1;
    if (n >= 4 && !memcmp(b, "DICM", 4))
        return 1; /* meta header without the 128-byte preamble */
    /* a bare dataset: little-endian group 0x0002 or 0x0008 first */
    if (n >= 8 && (b[0] == 0x02 || b[0] == 0x08) && b[1] == 0x00) {
        int explicit_vr = b[4] >= 'A' && b[4] <= 'Z' && b[5] >= 'A' && b[5] <= 'Z';
        uint32_t len = (uint32_t)b[4] | (uint32_t)b[5] << 8 | (uint32_t)b[6] << 16 |
                       (uint32_t)b[7] << 24;
        /* implicit VR: the first element's length must fit in the file */
        if (explicit_vr || (len > 0 && len <= n - 8 && len < 0x10000))
            return 1;
    }
    return 0;
}
