/* dicom.h - DICOM reading and writing (src/io/dicom.cc, on DCMTK).
 *
 * The library is C; DCMTK is C++. dicom.cc is the one C++ compilation unit:
 * everything it offers is behind the C functions below, which never throw
 * (every DCMTK error and every C++ exception becomes a cx_status with a
 * message).
 */
#ifndef CX_IO_DICOM_H
#define CX_IO_DICOM_H

#include "chexnet.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 1 when buf holds a DICOM file: "DICM" at offset 128 (a Part 10 file), or
 * a bare little-endian dataset starting with a group 0x0002 or 0x0008
 * element. */
int cx_dicom_sniff(const void *buf, size_t n);

/* Decodes the first frame of a DICOM file to 8-bit pixels (see chexnet.h,
 * "DICOM"). channels as cx_image_load_mem. info may be NULL; when given it
 * is filled (format "dicom", the warnings, transfer syntax, ...).
 *
 * C callers see this declaration as weak. Debian ships DCMTK only as shared
 * libraries, so a program linked fully statically (-static) with
 * libchexnet.a must be able to leave dicom.o out: weak references do not pull
 * it from the archive, and a program without it gets CX_EUNSUPPORTED for
 * DICOM files (cx_dicom_decode is then NULL). The shared library always has
 * it; static programs that read DICOM link with -Wl,-u,cx_dicom_decode and
 * DCMTK (pkg-config chexnet-dicom). */
#if defined(__cplusplus) || !defined(__GNUC__)
cx_status cx_dicom_decode(const void *buf, size_t n, const char *name, int channels,
                          cx_image *out, cx_image_info *info, cx_err *err);
#else
cx_status cx_dicom_decode(const void *buf, size_t n, const char *name, int channels,
                          cx_image *out, cx_image_info *info, cx_err *err)
    __attribute__((weak));
#endif

/* The CX_EUNSUPPORTED message when cx_dicom_decode is not linked in. */
#define CX_DICOM_NOT_LINKED                                                                    \
    "DICOM support is not linked into this program (link with -Wl,-u,cx_dicom_decode and "  \
    "DCMTK: pkg-config --libs chexnet-dicom)"

#ifdef __cplusplus
}
#endif
#endif
