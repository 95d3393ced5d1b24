/* image_info.c - image loading that also reports what was read: the format
 * and, for DICOM, the transfer syntax, photometric interpretation, VOI step
 * and the warnings (a lateral view, another body part, several frames...).
 * PNG and JPEG go through cx_image_load / cx_image_load_mem unchanged.
 */
#define _POSIX_C_SOURCE 200809L
#include "chexnet.h"
#include "io/dicom.h"
#include "io/image_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


static void info_format(cx_image_info *info, int kind)
{
    if (!info)
        return;
    memset(info, 0, sizeof *info);
    snprintf(info->format, sizeof info->format, "%s",
             kind == 1 ? "png" : kind == 2 ? "jpeg" : kind == 3 ? "dicom" : "");
}

cx_status cx_image_load_mem_info(const void *buf, size_t n, const char *name, int channels,
                                 cx_image *out, cx_image_info *info, cx_err *err)
{
    int kind = cx_image_sniff(buf, n);
    info_format(info, kind);
    if (kind == 3) {
        if (!out)
            return cx_seterr(err, CX_EARG, "cx_image_load_mem_info: out is NULL");
        if (!cx_dicom_decode)
            return cx_seterr(err, CX_EUNSUPPORTED, "%s: %s", name && *name ? name : "<memory>",
                             CX_DICOM_NOT_LINKED);
        return cx_dicom_decode(buf, n, name, channels, out, info, err);
    }
    return cx_image_load_mem(buf, n, name, channels, out, err);
}

cx_status cx_image_load_info(const char *path, int channels, cx_image *out,
                             cx_image_info *info, cx_err *err)
{
    info_format(info, 0);
    if (!out)
        return cx_seterr(err, CX_EARG, "cx_image_load_info: out is NULL");
    memset(out, 0, sizeof *out);
    if (!path || !*path)
        return cx_seterr(err, CX_EARG, "cx_image_load_info: empty path");
    /* the signature decides; errors of unreadable files come from
     * cx_image_load, as for every image */
    uint8_t head[132];
    size_t got = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd >= 0) {
        while (got < sizeof head) {
            ssize_t r = read(fd, head + got, sizeof head - got);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                break;
            got += (size_t)r;
        }
        close(fd);
    }
    int kind = cx_image_sniff(head, got);
    if (kind != 3) {
        cx_status st = cx_image_load(path, channels, out, err);
        if (!st)
            info_format(info, cx_image_sniff(head, got));
        return st;
    }
    if (!cx_dicom_decode)
        return cx_seterr(err, CX_EUNSUPPORTED, "%s: %s", path, CX_DICOM_NOT_LINKED);
    uint8_t *buf = NULL;
    size_t n = 0;
    cx_status st = cx_image_read_file(path, &buf, &n, err);
    if (st)
        return st;
    st = cx_dicom_decode(buf, n, path, channels, out, info, err);
    free(buf);
    return st;
}
