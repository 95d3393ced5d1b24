/* Status codes and error messages. */
#include "chexnet.h"

#include <stdarg.h>
#include <stdio.h>

const char *cx_status_name(cx_status code)
{
    switch (code) {
    case CX_OK: return "ok";
    case CX_EIO: return "I/O error";
    case CX_EFORMAT: return "malformed input";
    case CX_ESHAPE: return "shape mismatch";
    case CX_ENOMEM: return "out of memory";
    case CX_EARG: return "invalid argument";
    case CX_ENUMERIC: return "non-finite number";
    case CX_ELIMIT: return "limit exceeded";
    case CX_EUNSUPPORTED: return "unsupported";
    case CX_EMISSING: return "missing";
    case CX_EINTERRUPTED: return "interrupted";
    }
    return "unknown error";
}

cx_status cx_seterr(cx_err *err, cx_status code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}
