/* dicom.cc - DICOM input on DCMTK (the library's one C++ unit; C interface
 * in dicom.h).
 *
 * Parsing, decompression (DCMTK's JPEG, JPEG-LS and RLE decoders; deflate
 * through zlib) and the first frame's stored values come from DCMTK. The
 * pixel pipeline from stored values to 8-bit grey (Modality LUT, VOI LUT or
 * window, MONOCHROME1) is written here so that it is exactly the one
 * include/chexnet.h documents. DCMTK's own logging is switched off: every
 * problem is returned as a cx_status with a message naming the file.
 *
 * The result objects (cx_dicom_write_results): a Secondary Capture built
 * element by element with dcmdata and a Comprehensive SR built with dcmsr,
 * both in the source's study.
 */
#include "dcmtk/config/osconfig.h"

#include "dcmtk/dcmdata/dcdatset.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcfilefo.h"
#include "dcmtk/dcmdata/dcistrmb.h"
#include "dcmtk/dcmdata/dcistrmf.h"
#include "dcmtk/dcmdata/dcmetinf.h"
#include "dcmtk/dcmdata/dcpixel.h"
#include "dcmtk/dcmdata/dcpixseq.h"
#include "dcmtk/dcmdata/dcpxitem.h"
#include "dcmtk/dcmdata/dcrledrg.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "dcmtk/dcmdata/dcxfer.h"
#include "dcmtk/dcmjpeg/djdecode.h"
#include "dcmtk/dcmdata/dcostrmb.h"
#include "dcmtk/dcmjpls/djdecode.h"
#include "dcmtk/dcmsr/dsrdoc.h"
#include "dcmtk/oflog/oflog.h"

extern "C" {
#include "io/dicom.h"
}

#include <zlib.h>

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <ctime>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <string>
#include <vector>

namespace {

const char *nm(const char *name)
{
    return name && *name ? name : "<memory>";
}

/* Codecs registered once per process (DCMTK's codec list is global). */
std::once_flag g_init;

void init_dcmtk()
{
    std::call_once(g_init, [] {
        OFLog::configure(OFLogger::OFF_LOG_LEVEL);
        DJDecoderRegistration::registerCodecs();   /* JPEG: YCbCr to RGB */
        DJLSDecoderRegistration::registerCodecs(); /* JPEG-LS */
        DcmRLEDecoderRegistration::registerCodecs();
    });
}

void add_warning(cx_image_info *info, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
void add_warning(cx_image_info *info, const char *fmt, ...)
{
    if (!info || info->n_warnings >= CX_IMAGE_MAX_WARNINGS)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(info->warnings[info->n_warnings], sizeof info->warnings[0], fmt, ap);
    va_end(ap);
    info->n_warnings++;
}

/* A code string without padding, upper case (CS values are upper case, but
 * files in the wild are not always). */
std::string cs_value(DcmItem *ds, const DcmTagKey &tag)
{
    OFString s;
    if (ds->findAndGetOFString(tag, s).bad())
        return std::string();
    std::string r;
    for (char c : std::string(s.c_str()))
        if (c != ' ' && c != '\0')
            r += (char)toupper((unsigned char)c);
    return r;
}

/* Printable version of a value for messages (no control bytes). */
std::string printable(const std::string &s)
{
    std::string r;
    for (char c : s)
        r += (c >= 0x20 && c < 0x7f) ? c : '?';
    if (r.size() > 40)
        r = r.substr(0, 40) + "...";
    return r;
}

/* The checks that a dataset is a frontal chest radiograph: anything else
 * gets a warning (a probability is still given). Absent attributes are not
 * warned about. */
void check_frontal_chest(DcmItem *ds, cx_image_info *info)
{
    std::string modality = cs_value(ds, DCM_Modality);
    if (!modality.empty() && modality != "CR" && modality != "DX" && modality != "DR")
        add_warning(info, "Modality is %s, not CR or DX: the model reads chest radiographs",
                    printable(modality).c_str());
    std::string body = cs_value(ds, DCM_BodyPartExamined);
    if (!body.empty() && body != "CHEST" && body != "THORAX" && body != "LUNG")
        add_warning(info, "BodyPartExamined is %s, not CHEST: the model reads chest X-rays",
                    printable(body).c_str());
    std::string view = cs_value(ds, DCM_ViewPosition);
    if (!view.empty() && view != "PA" && view != "AP") {
        bool lateral = view == "LL" || view == "RL" || view == "LLD" || view == "RLD" ||
                       view == "LATERAL" || view == "LAT";
        add_warning(info, "ViewPosition is %s (%s), not PA or AP: the model reads frontal views",
                    printable(view).c_str(), lateral ? "a lateral view" : "not frontal");
    }
    std::string lat = cs_value(ds, DCM_ImageLaterality);
    if (lat.empty())
        lat = cs_value(ds, DCM_Laterality);
    if (lat == "L" || lat == "R")
        add_warning(info,
                    "ImageLaterality is %s (one side only): a frontal chest X-ray shows both "
                    "sides",
                    lat.c_str());
}

/* A LUT (Modality or VOI): descriptor and data. */
struct Lut {
    long entries = 0;     /* 1..65536 */
    long first = 0;       /* first mapped input value */
    int bits = 0;         /* bits per output entry */
    std::vector<uint16_t> data;
};

/* Reads the first item's LUT of sequence seq; returns 0 when absent, 1 when
 * read, -1 (with err) when malformed. */
int read_lut(DcmItem *ds, const DcmTagKey &seq, bool signed_input, Lut &lut, const char *name,
             const char *what, cx_err *err)
{
    DcmItem *item = NULL;
    if (ds->findAndGetSequenceItem(seq, item, 0).bad() || !item)
        return 0;
    const Uint16 *desc = NULL;
    unsigned long nd = 0;
    if (item->findAndGetUint16Array(DCM_LUTDescriptor, desc, &nd).bad() || nd != 3 || !desc) {
        cx_seterr(err, CX_EFORMAT, "%s: invalid DICOM: the %s has no valid LUT Descriptor",
                  nm(name), what);
        return -1;
    }
    lut.entries = desc[0] == 0 ? 65536 : desc[0];
    lut.first = signed_input ? (long)(int16_t)desc[1] : (long)desc[1];
    lut.bits = desc[2];
    if (lut.bits < 1 || lut.bits > 16) {
        cx_seterr(err, CX_EFORMAT, "%s: invalid DICOM: the %s has %d bits per entry (1-16)",
                  nm(name), what, lut.bits);
        return -1;
    }
    const Uint16 *data = NULL;
    unsigned long n = 0;
    if (item->findAndGetUint16Array(DCM_LUTData, data, &n).bad() || !data) {
        cx_seterr(err, CX_EFORMAT, "%s: invalid DICOM: the %s has no LUT Data", nm(name), what);
        return -1;
    }
    lut.data.resize(lut.entries);
    if (n == (unsigned long)lut.entries) {
        for (long i = 0; i < lut.entries; i++)
            lut.data[i] = data[i];
    } else if (lut.bits <= 8 && n == (unsigned long)(lut.entries + 1) / 2) {
        /* 8-bit entries packed two to a 16-bit word (OW) */
        for (long i = 0; i < lut.entries; i++)
            lut.data[i] = (i & 1) ? data[i / 2] >> 8 : data[i / 2] & 0xff;
    } else {
        cx_seterr(err, CX_EFORMAT,
                  "%s: invalid DICOM: the %s declares %ld entries but holds %lu values",
                  nm(name), what, lut.entries, n);
        return -1;
    }
    long maxv = (1L << lut.bits) - 1;
    for (long i = 0; i < lut.entries; i++)
        if (lut.data[i] > maxv)
            lut.data[i] = (uint16_t)maxv; /* entries beyond the declared bits */
    return 1;
}

/* LUT lookup: inputs below the first mapped value take the first entry,
 * above the last take the last (PS3.3 C.11.1.1). */
inline double lut_apply(const Lut &lut, double x)
{
    double k = std::floor(x) - (double)lut.first;
    long i = k <= 0 ? 0 : k >= (double)(lut.entries - 1) ? lut.entries - 1 : (long)k;
    return lut.data[i];
}

enum VoiKind { VOI_FULL, VOI_WINDOW, VOI_LUT };
enum WinFn { WIN_LINEAR, WIN_LINEAR_EXACT, WIN_SIGMOID };

inline uint8_t to_u8(double y)
{
    /* y in 0..255 nominally; NaN (impossible with the checks above) -> 0 */
    double r = std::floor(y + 0.5);
    if (!(r >= 0))
        return 0;
    if (r > 255)
        return 255;
    return (uint8_t)r;
}

/* ------------------------------------------------------------ precheck */

/* DCMTK allocates an element's value as soon as it reads its length, before
 * it knows whether the file holds that many bytes, and reads nested
 * sequences recursively. So a 1 KiB file could make it allocate 4 GiB, or
 * recurse until the stack ends. This walk over the encoding (tags, VRs,
 * lengths; no values) refuses both first: every defined length must fit in
 * what is left of its container, and sequences may nest 32 deep. A
 * structure the walk cannot follow (a truncated element, a sequence of
 * things that are not items) is refused too, rather than handed to DCMTK.
 * A bare dataset is read in the encoding the walk checked. */
struct Walk {
    bool big = false, explicit_vr = true;
    std::string why;
};

enum { WALK_OK = 0, WALK_BAD = 1 };
const int WALK_MAX_DEPTH = 32;

int unsure(Walk &w, const char *why)
{
    w.why = why;
    return WALK_BAD;
}

inline uint16_t rd16(const uint8_t *p, bool big)
{
    return big ? (uint16_t)(p[0] << 8 | p[1]) : (uint16_t)(p[1] << 8 | p[0]);
}

inline uint32_t rd32(const uint8_t *p, bool big)
{
    return big ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]
               : (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

/* VRs with a 2-byte length; every other, including an unknown one of two
 * capital letters (which DCMTK reads as UN, a possible future VR), has 2
 * reserved bytes and a 4-byte length. Bytes that are not letters: DCMTK
 * reads a 2-byte length. */
bool long_vr(const uint8_t *vr)
{
    if (vr[0] < 'A' || vr[0] > 'Z' || vr[1] < 'A' || vr[1] > 'Z')
        return false;
    static const char *const S[] = {"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FL", "FD", "IS",
                                    "LO", "LT", "PN", "SH", "SL", "SS", "ST", "TM", "UI", "UL",
                                    "US"};
    for (const char *v : S)
        if (vr[0] == v[0] && vr[1] == v[1])
            return false;
    return true;
}

int walk_items(const uint8_t *p, size_t n, size_t *used, Walk &w, int depth, bool fragments,
               bool implicit_inside);

/* elements of one dataset level in p[0..n); until_delim: stop at an item
 * delimitation (undefined-length item), *used gets the bytes consumed */
int walk_elements(const uint8_t *p, size_t n, size_t *used, Walk &w, int depth, bool until_delim,
                  bool meta_only)
{
    if (depth > WALK_MAX_DEPTH) {
        w.why = "sequences nested more than 32 deep";
        return WALK_BAD;
    }
    size_t pos = 0;
    while (pos < n) {
        if (n - pos < 8)
            return unsure(w, "a truncated element");
        const uint8_t *e = p + pos;
        bool meta = rd16(e, false) == 0x0002;
        if (meta_only && !meta)
            break;
        bool big = meta ? false : w.big, expl = meta ? true : w.explicit_vr;
        uint16_t g = rd16(e, big), el = rd16(e + 2, big);
        if (g == 0xfffe) {
            if (el == 0xe00d && until_delim) {
                *used = pos + 8;
                return WALK_OK;
            }
            /* an item tag where an element belongs: tag and 4-byte length */
            uint32_t ilen = rd32(e + 4, big);
            if (ilen == 0xffffffffu)
                return unsure(w, "an undefined-length item where an element belongs");
            if (ilen > n - pos - 8) {
                w.why = "an item claims more bytes than are left";
                return WALK_BAD;
            }
            pos += 8 + ilen;
            continue;
        }
        uint32_t len;
        size_t head;
        bool sq = false, un = false, ob_ow = false;
        if (expl) {
            const uint8_t *vr = e + 4;
            std::string vrs(reinterpret_cast<const char *>(vr), 2);
            sq = vrs == "SQ";
            ob_ow = vrs == "OB" || vrs == "OW";
            /* DCMTK reads an unknown VR of letters as UN, and an
             * undefined-length UN as a sequence in implicit VR (CP-246) */
            un = vrs == "UN" || (long_vr(vr) && !DcmVR(vrs.c_str()).isStandard());
            if (long_vr(vr)) {
                if (n - pos < 12)
                    return unsure(w, "a truncated element");
                len = rd32(e + 8, big);
                head = 12;
            } else {
                len = rd16(e + 6, big);
                head = 8;
            }
        } else {
            len = rd32(e + 4, big);
            head = 8;
            sq = DcmTag(g, el).getEVR() == EVR_SQ;
        }
        pos += head;
        /* encapsulated pixel data: fragments, not items with elements */
        bool fragments = g == 0x7fe0 && el == 0x0010 && (expl ? ob_ow : true);
        if (len == 0xffffffffu) {
            /* undefined length: a sequence, UN holding one (implicit inside),
             * or encapsulated pixel data (fragments) */
            size_t u = 0;
            int r = walk_items(p + pos, n - pos, &u, w, depth + 1, fragments, expl && un);
            if (r)
                return r;
            pos += u;
            continue;
        }
        if (len > n - pos) {
            char b[160];
            snprintf(b, sizeof b, "element (%04x,%04x) claims %lu bytes, %zu are left", g, el,
                     (unsigned long)len, n - pos);
            w.why = b;
            return WALK_BAD;
        }
        if (sq) {
            size_t u = 0;
            int r = walk_items(p + pos, len, &u, w, depth + 1, false, false);
            if (r)
                return r;
        }
        pos += len;
    }
    *used = pos;
    return until_delim ? unsure(w, "an item without its delimiter") : WALK_OK;
}

/* the items of a sequence (or the fragments of encapsulated pixel data) in
 * p[0..n); ends at n (defined length) or at a sequence delimitation */
int walk_items(const uint8_t *p, size_t n, size_t *used, Walk &w, int depth, bool fragments,
               bool implicit_inside)
{
    if (depth > WALK_MAX_DEPTH) {
        w.why = "sequences nested more than 32 deep";
        return WALK_BAD;
    }
    bool big = fragments ? false : w.big;
    size_t pos = 0;
    while (pos < n) {
        if (n - pos < 8)
            return unsure(w, "a truncated sequence");
        uint16_t g = rd16(p + pos, big), el = rd16(p + pos + 2, big);
        uint32_t len = rd32(p + pos + 4, big);
        pos += 8;
        if (g != 0xfffe)
            return unsure(w, "a sequence holding something else than items");
        if (el == 0xe0dd) { /* sequence delimitation */
            *used = pos;
            return WALK_OK;
        }
        if (el != 0xe000)
            return unsure(w, "a sequence holding something else than items");
        if (len == 0xffffffffu) {
            if (fragments)
                return unsure(w, "a pixel data fragment of undefined length");
            size_t u = 0;
            bool saved = w.explicit_vr;
            if (implicit_inside)
                w.explicit_vr = false;
            int r = walk_elements(p + pos, n - pos, &u, w, depth + 1, true, false);
            w.explicit_vr = saved;
            if (r)
                return r;
            pos += u;
            continue;
        }
        if (len > n - pos) {
            char b[160];
            snprintf(b, sizeof b, "an item claims %lu bytes, %zu are left", (unsigned long)len,
                     n - pos);
            w.why = b;
            return WALK_BAD;
        }
        if (!fragments) {
            size_t u = 0;
            bool saved = w.explicit_vr;
            if (implicit_inside)
                w.explicit_vr = false;
            int r = walk_elements(p + pos, len, &u, w, depth + 1, false, false);
            w.explicit_vr = saved;
            if (r)
                return r;
        }
        pos += len;
    }
    *used = pos;
    return WALK_OK;
}

/* the inflated dataset of a deflated file, at most `cap` bytes */
bool inflate_all(const uint8_t *p, size_t n, size_t cap, std::vector<uint8_t> &out,
                 std::string &why)
{
    z_stream z = {};
    if (inflateInit2(&z, -15) != Z_OK) {
        why = "cannot inflate the deflated dataset";
        return false;
    }
    out.resize(n * 4 + 65536 < cap ? n * 4 + 65536 : cap);
    z.next_in = const_cast<Bytef *>(p);
    z.avail_in = (uInt)(n > 0x7fffffff ? 0x7fffffff : n);
    int r = Z_OK;
    for (;;) {
        z.next_out = out.data() + z.total_out;
        z.avail_out = (uInt)(out.size() - z.total_out);
        r = inflate(&z, Z_NO_FLUSH);
        if (r != Z_OK)
            break;
        if (z.avail_out == 0) {
            if (out.size() >= cap) {
                inflateEnd(&z);
                why = "the deflated dataset inflates beyond 1 GiB";
                return false;
            }
            out.resize(out.size() * 2 < cap ? out.size() * 2 : cap);
        } else if (z.avail_in == 0) {
            break;
        }
    }
    out.resize(z.total_out);
    inflateEnd(&z);
    return true; /* a corrupt stream: DCMTK reports it */
}

/* DCMTK's guess of a bare dataset's encoding (DcmItem::checkTransferSyntax,
 * from the first tag and the two bytes after it). */
struct XferProbe : public DcmItem {
    E_TransferSyntax guess(DcmInputStream &in) { return checkTransferSyntax(in); }
};

E_TransferSyntax bare_guess(const uint8_t *b, size_t n)
{
    if (n < 6)
        return EXS_LittleEndianImplicit;
    DcmInputBufferStream in;
    in.setBuffer(b, (offile_off_t)n);
    in.setEos();
    XferProbe probe;
    E_TransferSyntax x = probe.guess(in);
    return x == EXS_Unknown ? EXS_LittleEndianImplicit : x;
}

/* true when DCMTK may read the file; false (why set) when it must not.
 * *xfer: what DCMTK must assume for a bare dataset (DCMTK's own guess, checked
 * here), EXS_Unknown with a meta header. */
bool precheck(const void *buf, size_t n, E_TransferSyntax *xfer, std::string &why)
{
    *xfer = EXS_Unknown;
    const uint8_t *b = static_cast<const uint8_t *>(buf);
    size_t pos = 0;
    if (n >= 132 && !memcmp(b + 128, "DICM", 4))
        pos = 132;
    else if (n >= 4 && !memcmp(b, "DICM", 4))
        pos = 4;
    Walk w;
    std::string ts;
    size_t used = 0;
    if (pos) { /* the meta group: explicit VR little endian */
        /* with a group length, DCMTK reads exactly that many bytes as the
         * meta header, whatever their groups; without, group 0002 */
        bool glen = n - pos >= 12 && rd16(b + pos, false) == 0x0002 &&
                    rd16(b + pos + 2, false) == 0x0000 && b[pos + 4] == 'U' &&
                    b[pos + 5] == 'L' && rd16(b + pos + 6, false) == 4;
        size_t meta_n = n - pos;
        if (glen) {
            uint32_t gl = rd32(b + pos + 8, false);
            if (gl > n - pos - 12) {
                why = "the meta header's group length exceeds the file";
                return false;
            }
            meta_n = 12 + (size_t)gl;
        }
        int r = walk_elements(b + pos, meta_n, &used, w, 0, false, !glen);
        if (r != WALK_OK) {
            why = "meta header: " + w.why;
            return false;
        }
        /* the transfer syntax UID, (0002,0010) */
        for (size_t q = pos; q + 8 <= pos + used;) {
            uint16_t gr = rd16(b + q, false), el = rd16(b + q + 2, false);
            bool lv = long_vr(b + q + 4);
            uint32_t len = lv ? rd32(b + q + 8, false) : rd16(b + q + 6, false);
            size_t head = lv ? 12 : 8;
            if (gr == 0x0002 && el == 0x0010 && b[q + 4] == 'U' && b[q + 5] == 'I' &&
                q + head + len <= pos + used) {
                ts.assign(reinterpret_cast<const char *>(b + q + head), len);
                while (!ts.empty() && (ts.back() == '\0' || ts.back() == ' '))
                    ts.pop_back();
            }
            q += head + len;
        }
        pos += used;
        /* without a transfer syntax DCMTK would guess one: not checked */
        if (ts.empty()) {
            why = "the meta header has no TransferSyntaxUID";
            return false;
        }
        if (DcmXfer(ts.c_str()).getXfer() == EXS_Unknown) {
            why = "unknown transfer syntax " + printable(ts);
            *xfer = EXS_Unknown;
            return false;
        }
    } else {
        /* a bare dataset: DCMTK guesses its encoding from the first tag and
         * VR (byte order included, whatever it is told), so the walk checks
         * the encoding DCMTK's own guess gives, and DCMTK is told it too */
        *xfer = bare_guess(b, n);
        DcmXfer gx(*xfer);
        w.explicit_vr = gx.isExplicitVR();
        w.big = gx.isBigEndian();
    }
    if (ts == "1.2.840.10008.1.2")
        w.explicit_vr = false;
    else if (ts == "1.2.840.10008.1.2.2")
        w.big = true;
    std::vector<uint8_t> inflated;
    const uint8_t *d = b + pos;
    size_t dn = n - pos;
    if (ts == "1.2.840.10008.1.2.1.99") {
        if (!inflate_all(d, dn, (size_t)1 << 30, inflated, why))
            return false;
        d = inflated.data();
        dn = inflated.size();
    }
    if (walk_elements(d, dn, &used, w, 0, false, false) != WALK_OK) {
        why = w.why;
        return false;
    }
    return true;
}

/* The bytes of a DICOM file as a file that DCMTK reads through a file
 * stream: an anonymous memory file (memfd, opened by its /proc path), else a
 * temporary file. Through a file stream DCMTK checks every declared length
 * against the bytes left and leaves long values in the file until they are
 * used; through a memory buffer it allocates whatever length an element
 * declares before reading it (a 250-byte file made it ask for 3.6 GB).
 * Lives as long as the DcmFileFormat read from it. */
struct MemFile {
    int fd = -1;
    std::string path;
    bool temp = false;
    MemFile() = default;
    MemFile(const MemFile &) = delete;
    MemFile &operator=(const MemFile &) = delete;
    ~MemFile()
    {
        if (fd >= 0)
            close(fd);
        if (temp)
            unlink(path.c_str());
    }
    bool open(const void *buf, size_t n)
    {
#ifdef MFD_CLOEXEC
        fd = memfd_create("chexnet-dicom", MFD_CLOEXEC);
        if (fd >= 0) {
            path = "/proc/self/fd/" + std::to_string(fd);
            if (access(path.c_str(), R_OK) != 0) { /* no /proc */
                close(fd);
                fd = -1;
            }
        }
#endif
        if (fd < 0) {
            const char *dir = getenv("TMPDIR");
            path = std::string(dir && *dir ? dir : "/tmp") + "/.chexnet-dicom-XXXXXX";
            std::vector<char> name(path.begin(), path.end());
            name.push_back('\0');
            fd = mkstemp(name.data());
            if (fd < 0)
                return false;
            path = name.data();
            temp = true;
        }
        const char *p = static_cast<const char *>(buf);
        for (size_t done = 0; done < n;) {
            ssize_t w = write(fd, p + done, n - done);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                return false;
            done += (size_t)w;
        }
        return true;
    }
};

OFCondition parse(const void *buf, size_t n, E_TransferSyntax xfer, DcmFileFormat &ff,
                  MemFile &mf)
{
    if (!mf.open(buf, n))
        return makeOFCondition(OFM_dcmdata, 1, OF_error,
                               "cannot write the DICOM data to a memory or temporary file");
    DcmInputFileStream in(mf.path.c_str());
    if (!in.good())
        return in.status();
    ff.transferInit();
    OFCondition c = ff.read(in, xfer, EGL_noChange, DCM_MaxReadLength);
    ff.transferEnd();
    return c;
}

cx_status fill_info_common(cx_image_info *info)
{
    if (info) {
        memset(info, 0, sizeof *info);
        snprintf(info->format, sizeof info->format, "dicom");
    }
    return CX_OK;
}

struct Decoder {
    const char *name;
    cx_err *err;
    cx_image_info *info;

    cx_status fail(cx_status code, const char *fmt, ...)
#if defined(__GNUC__)
        __attribute__((format(printf, 3, 4)))
#endif
    {
        char msg[900];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        return cx_seterr(err, code, "%s: %s", nm(name), msg);
    }

    cx_status run(const void *buf, size_t n, int channels, cx_image *out);
};

/* DCMTK 3.6.7's JPEG decoder first walks the markers of a frame's first
 * fragment for the sample precision, and never moves past a TEM marker
 * (FF01): such a fragment would make it loop forever (found by fuzz_dicom).
 * The same walk here; true when a fragment would trap it. */
bool jpeg_scan_loops(const uint8_t *d, uint32_t n)
{
    uint32_t off = 0;
    while (off + 4 < n) {
        uint16_t m = (uint16_t)(d[off] << 8 | d[off + 1]);
        if ((m >= 0xffc0 && m <= 0xffcf && m != 0xffc4 && m != 0xffc8 && m != 0xffcc))
            return false; /* a frame header: the walk ends */
        if (m == 0xff01)
            return true;
        if ((m >= 0xffd0 && m <= 0xffd9) || (d[off] == 0xff && d[off + 1] > 2 && d[off + 1] <= 0xbf))
            off += 2;
        else if (m == 0xffff)
            off += 1;
        else if (m >= 0xffc4)
            off += (uint32_t)(d[off + 2] << 8 | d[off + 3]) + 2;
        else
            return false; /* an invalid marker: the walk stops */
    }
    return false;
}

bool jpeg_fragments_loop(DcmPixelData *pixel, E_TransferSyntax xfer)
{
    DcmPixelSequence *seq = NULL;
    if (pixel->getEncapsulatedRepresentation(xfer, NULL, seq).bad() || !seq)
        return false;
    for (unsigned long i = 1; i < seq->card(); i++) { /* item 0: the offset table */
        DcmPixelItem *item = NULL;
        Uint8 *d = NULL;
        if (seq->getItem(item, i).good() && item && item->getUint8Array(d).good() && d &&
            jpeg_scan_loops(d, item->getLength()))
            return true;
    }
    return false;
}

bool is_jpeg_xfer(E_TransferSyntax x)
{
    return (x >= EXS_JPEGProcess1 && x <= EXS_JPEGProcess29) || x == EXS_JPEGProcess14SV1;
}

bool xfer_is_refused(E_TransferSyntax x)
{
    switch (x) {
    case EXS_JPEG2000LosslessOnly:
    case EXS_JPEG2000:
    case EXS_JPEG2000MulticomponentLosslessOnly:
    case EXS_JPEG2000Multicomponent:
    case EXS_JPIPReferenced:
    case EXS_JPIPReferencedDeflate:
    case EXS_MPEG2MainProfileAtMainLevel:
    case EXS_MPEG2MainProfileAtHighLevel:
    case EXS_MPEG4HighProfileLevel4_1:
    case EXS_MPEG4BDcompatibleHighProfileLevel4_1:
    case EXS_MPEG4HighProfileLevel4_2_For2DVideo:
    case EXS_MPEG4HighProfileLevel4_2_For3DVideo:
    case EXS_MPEG4StereoHighProfileLevel4_2:
    case EXS_HEVCMainProfileLevel5_1:
    case EXS_HEVCMain10ProfileLevel5_1:
        return true;
    default:
        return false;
    }
}

cx_status Decoder::run(const void *buf, size_t n, int channels, cx_image *out)
{
    init_dcmtk();
    fill_info_common(info);
    if (n > 0xfffffff0u)
        return fail(CX_ELIMIT, "DICOM file of %zu bytes is beyond the 4 GiB limit", n);

    std::string why;
    E_TransferSyntax bare_xfer;
    if (!precheck(buf, n, &bare_xfer, why)) {
        if (why.rfind("unknown transfer syntax", 0) == 0)
            return fail(CX_EUNSUPPORTED, "DICOM %s: chexnet reads uncompressed, deflated, JPEG, "
                                         "JPEG-LS and RLE files", why.c_str());
        return fail(CX_EFORMAT, "invalid DICOM file: %s", why.c_str());
    }
    MemFile mf;
    DcmFileFormat ff;
    OFCondition c = parse(buf, n, bare_xfer, ff, mf);
    DcmMetaInfo *meta = ff.getMetaInfo();
    OFString ts_uid;
    if (meta)
        meta->findAndGetOFString(DCM_TransferSyntaxUID, ts_uid);
    if (c.bad())
        return fail(CX_EFORMAT, "invalid DICOM file: %s", c.text());
    DcmDataset *ds = ff.getDataset();
    if (!ds)
        return fail(CX_EFORMAT, "invalid DICOM file: no dataset");
    E_TransferSyntax xfer = ds->getOriginalXfer();
    DcmXfer xf(xfer);
    if (info) {
        snprintf(info->transfer_syntax, sizeof info->transfer_syntax, "%s",
                 xfer == EXS_Unknown ? printable(ts_uid.c_str()).c_str() : xf.getXferID());
    }
    if (xfer_is_refused(xfer))
        return fail(CX_EUNSUPPORTED,
                    "DICOM transfer syntax %s (%s) is not supported: chexnet reads "
                    "uncompressed, deflated, JPEG, JPEG-LS and RLE files (convert it, e.g. "
                    "with gdcmconv --raw)",
                    xf.getXferName(), xf.getXferID());

    check_frontal_chest(ds, info);

    DcmElement *pixel_el = NULL;
    if (ds->findAndGetElement(DCM_PixelData, pixel_el).bad() || !pixel_el) {
        OFString sop;
        ds->findAndGetOFString(DCM_SOPClassUID, sop);
        const char *sop_name = dcmFindNameOfUID(sop.c_str(), NULL);
        return fail(CX_EUNSUPPORTED, "DICOM file without pixel data (SOP class %s), not an image",
                    sop_name ? sop_name : sop.empty() ? "unknown" : printable(sop.c_str()).c_str());
    }
    if (pixel_el->ident() != EVR_PixelData)
        return fail(CX_EFORMAT, "invalid DICOM: Pixel Data element of an unexpected type");
    DcmPixelData *pixel = static_cast<DcmPixelData *>(pixel_el);

    Uint16 rows = 0, cols = 0, spp = 1, alloc = 0, stored = 0, high = 0, repr = 0, planar = 0;
    if (ds->findAndGetUint16(DCM_Rows, rows).bad() || ds->findAndGetUint16(DCM_Columns, cols).bad())
        return fail(CX_EFORMAT, "invalid DICOM: Rows or Columns missing");
    if (rows == 0 || cols == 0)
        return fail(CX_EFORMAT, "invalid DICOM: image of %ux%u pixels", (unsigned)cols,
                    (unsigned)rows);
    if (rows > CX_IMAGE_MAX_SIDE || cols > CX_IMAGE_MAX_SIDE)
        return fail(CX_ELIMIT, "DICOM image of %ux%u pixels, beyond the limit of %d per side",
                    (unsigned)cols, (unsigned)rows, CX_IMAGE_MAX_SIDE);
    {
        cx_limits lim;
        cx_limits_get(&lim);
        unsigned long long np = (unsigned long long)rows * cols;
        if (np > lim.max_pixels)
            return fail(CX_ELIMIT,
                        "DICOM image of %ux%u = %llu pixels, more than the pixel limit of %llu "
                        "(raise it with --max-pixels N)",
                        (unsigned)cols, (unsigned)rows, np, (unsigned long long)lim.max_pixels);
    }
    if (ds->findAndGetUint16(DCM_SamplesPerPixel, spp).bad())
        spp = 1;
    if (ds->findAndGetUint16(DCM_BitsAllocated, alloc).bad())
        return fail(CX_EFORMAT, "invalid DICOM: BitsAllocated missing");
    if (ds->findAndGetUint16(DCM_BitsStored, stored).bad())
        stored = alloc;
    if (ds->findAndGetUint16(DCM_HighBit, high).bad())
        high = (Uint16)(stored - 1);
    ds->findAndGetUint16(DCM_PixelRepresentation, repr);
    ds->findAndGetUint16(DCM_PlanarConfiguration, planar);
    std::string photometric = cs_value(ds, DCM_PhotometricInterpretation);
    if (photometric.empty())
        photometric = spp == 3 ? "RGB" : "MONOCHROME2";
    Sint32 frames = 1;
    if (ds->findAndGetSint32(DCM_NumberOfFrames, frames).bad() || frames < 1)
        frames = 1;
    if (info) {
        snprintf(info->photometric, sizeof info->photometric, "%s",
                 printable(photometric).c_str());
        info->bits_stored = stored;
        info->frames = frames;
    }

    if (spp != 1 && spp != 3)
        return fail(CX_EUNSUPPORTED, "DICOM image with %u samples per pixel (1 or 3 are read)",
                    (unsigned)spp);
    if (alloc != 8 && alloc != 16)
        return fail(CX_EUNSUPPORTED, "DICOM image with BitsAllocated %u (8 or 16 are read)",
                    (unsigned)alloc);
    if (stored < 1 || stored > alloc || high < stored - 1 || high >= alloc)
        return fail(CX_EFORMAT,
                    "invalid DICOM: BitsStored %u and HighBit %u do not fit BitsAllocated %u",
                    (unsigned)stored, (unsigned)high, (unsigned)alloc);
    if (repr > 1)
        return fail(CX_EFORMAT, "invalid DICOM: PixelRepresentation %u (0 or 1)", (unsigned)repr);
    bool mono = photometric == "MONOCHROME1" || photometric == "MONOCHROME2";
    if (spp == 1 && !mono) {
        if (photometric == "PALETTECOLOR")
            return fail(CX_EUNSUPPORTED, "DICOM PALETTE COLOR images are not read (chest X-rays "
                                         "are MONOCHROME1 or MONOCHROME2)");
        return fail(CX_EFORMAT, "invalid DICOM: one sample per pixel with photometric "
                                "interpretation %s", printable(photometric).c_str());
    }
    if (spp == 3 && mono)
        return fail(CX_EFORMAT, "invalid DICOM: three samples per pixel with photometric "
                                "interpretation %s", photometric.c_str());
    if (spp == 3 && alloc != 8)
        return fail(CX_EUNSUPPORTED, "DICOM colour images with %u bits per sample are not read "
                                     "(8 are)", (unsigned)alloc);
    if (frames > 1)
        add_warning(info, "multi-frame DICOM (%ld frames): only the first frame was read",
                    (long)frames);

    /* the first frame's stored values, decompressed by DCMTK */
    size_t bps = alloc / 8;
    size_t frame_bytes = (size_t)rows * cols * spp * bps;
    if (!xf.isEncapsulated() && pixel->getLength() < frame_bytes)
        /* before allocating the frame: a small file cannot claim a huge image */
        return fail(CX_EFORMAT, "invalid DICOM: %lu bytes of pixel data for a %ux%u image of "
                                "%zu bytes", (unsigned long)pixel->getLength(), (unsigned)cols,
                    (unsigned)rows, frame_bytes);
    std::vector<uint8_t> frame((frame_bytes + 1) & ~(size_t)1);
    if (is_jpeg_xfer(xfer) && jpeg_fragments_loop(pixel, xfer))
        return fail(CX_EFORMAT, "invalid JPEG data in the DICOM pixel data (a TEM marker "
                                "before the frame header)");
    Uint32 start_fragment = 0;
    OFString color_model;
    c = pixel->getUncompressedFrame(ds, 0, start_fragment, frame.data(), (Uint32)frame.size(),
                                    color_model, NULL);
    if (c.bad()) {
        if (xf.isEncapsulated())
            return fail(CX_EFORMAT, "cannot decode the DICOM pixel data (%s): %s",
                        xf.getXferName(), c.text());
        return fail(CX_EFORMAT, "invalid DICOM pixel data: %s", c.text());
    }

    cx_image im = {};
    cx_status st;
    if (spp == 3) {
        std::string model = cs_value(ds, DCM_PhotometricInterpretation);
        if (!color_model.empty()) {
            model.clear();
            for (char ch : std::string(color_model.c_str()))
                if (ch != ' ')
                    model += (char)toupper((unsigned char)ch);
        }
        bool ybr = model == "YBR_FULL";
        if (!ybr && model != "RGB")
            return fail(CX_EUNSUPPORTED, "DICOM colour model %s is not read (RGB and YBR_FULL "
                                         "are)", printable(model).c_str());
        if ((st = cx_image_new(cols, rows, 3, &im, err)))
            return st;
        size_t np = (size_t)rows * cols;
        for (size_t i = 0; i < np; i++) {
            uint8_t v[3];
            for (int k = 0; k < 3; k++)
                v[k] = planar ? frame[k * np + i] : frame[3 * i + k];
            if (ybr) {
                /* PS3.3 C.7.6.3.1.2 (the JFIF equations) */
                double y = v[0], cb = v[1] - 128.0, cr = v[2] - 128.0;
                im.data[3 * i] = to_u8(y + 1.402 * cr);
                im.data[3 * i + 1] = to_u8(y - 0.344136 * cb - 0.714136 * cr);
                im.data[3 * i + 2] = to_u8(y + 1.772 * cb);
            } else {
                memcpy(im.data + 3 * i, v, 3);
            }
        }
        if (info)
            snprintf(info->voi, sizeof info->voi, "none");
    } else {
        const bool is_signed = repr == 1;
        const int shift = high + 1 - stored;
        const uint32_t mask = (1u << stored) - 1;

        /* 1. Modality LUT */
        Lut mlut;
        int has_mlut = read_lut(ds, DCM_ModalityLUTSequence, is_signed, mlut, name,
                                "Modality LUT", err);
        if (has_mlut < 0)
            return err ? err->code : CX_EFORMAT;
        double slope = 1, intercept = 0;
        if (!has_mlut) {
            if (ds->findAndGetFloat64(DCM_RescaleSlope, slope).bad())
                slope = 1;
            if (ds->findAndGetFloat64(DCM_RescaleIntercept, intercept).bad())
                intercept = 0;
            if (!std::isfinite(slope) || !std::isfinite(intercept) || slope == 0)
                return fail(CX_EFORMAT, "invalid DICOM: RescaleSlope %g, RescaleIntercept %g",
                            slope, intercept);
        }
        auto modality = [&](double v) {
            return has_mlut ? lut_apply(mlut, v) : v * slope + intercept;
        };

        /* 2. VOI */
        VoiKind voi = VOI_FULL;
        Lut vlut;
        int has_vlut = read_lut(ds, DCM_VOILUTSequence, is_signed && !has_mlut, vlut, name,
                                "VOI LUT", err);
        if (has_vlut < 0)
            return err ? err->code : CX_EFORMAT;
        double wc = 0, ww = 0;
        WinFn fn = WIN_LINEAR;
        if (has_vlut) {
            voi = VOI_LUT;
        } else if (ds->findAndGetFloat64(DCM_WindowCenter, wc, 0).good() &&
                   ds->findAndGetFloat64(DCM_WindowWidth, ww, 0).good()) {
            std::string f = cs_value(ds, DCM_VOILUTFunction);
            fn = f == "LINEAR_EXACT" ? WIN_LINEAR_EXACT : f == "SIGMOID" ? WIN_SIGMOID : WIN_LINEAR;
            if (!f.empty() && f != "LINEAR" && f != "LINEAR_EXACT" && f != "SIGMOID")
                add_warning(info, "unknown VOILUTFunction %s: LINEAR used",
                            printable(f).c_str());
            bool ok = std::isfinite(wc) && std::isfinite(ww) &&
                      (fn == WIN_LINEAR ? ww >= 1 : ww > 0);
            if (ok)
                voi = VOI_WINDOW;
            else
                add_warning(info, "invalid window (centre %g, width %g) ignored: the full "
                                  "range was used", wc, ww);
        }
        /* the full range: what the stored bits can hold, after the Modality LUT */
        double lo, hi;
        if (has_mlut) {
            lo = 0;
            hi = (double)((1L << mlut.bits) - 1);
        } else {
            double smin = is_signed ? -(double)(1L << (stored - 1)) : 0;
            double smax = is_signed ? (double)((1L << (stored - 1)) - 1) : (double)mask;
            lo = modality(smin);
            hi = modality(smax);
            if (lo > hi)
                std::swap(lo, hi);
        }
        if (voi == VOI_FULL && !(hi > lo))
            return fail(CX_EFORMAT, "invalid DICOM: an empty range of pixel values");
        if (info)
            snprintf(info->voi, sizeof info->voi, "%s",
                     voi == VOI_LUT ? "voi-lut" : voi == VOI_WINDOW ? "window" : "full-range");
        const double vmax = voi == VOI_LUT ? (double)((1L << vlut.bits) - 1) : 0;
        auto to8 = [&](double m) -> uint8_t {
            double y;
            switch (voi) {
            case VOI_LUT:
                y = lut_apply(vlut, m) * 255.0 / vmax;
                break;
            case VOI_WINDOW:
                if (fn == WIN_LINEAR) { /* PS3.3 C.11.2.1.2.1 */
                    if (m <= wc - 0.5 - (ww - 1) / 2)
                        y = 0;
                    else if (m > wc - 0.5 + (ww - 1) / 2)
                        y = 255;
                    else
                        y = ((m - (wc - 0.5)) / (ww - 1) + 0.5) * 255;
                } else if (fn == WIN_LINEAR_EXACT) { /* C.11.2.1.3.2 */
                    if (m <= wc - ww / 2)
                        y = 0;
                    else if (m > wc + ww / 2)
                        y = 255;
                    else
                        y = ((m - wc) / ww + 0.5) * 255;
                } else { /* SIGMOID, C.11.2.1.3.1 */
                    y = 255 / (1 + std::exp(-4 * (m - wc) / ww));
                }
                break;
            default:
                y = (m - lo) * 255 / (hi - lo);
            }
            return to_u8(y);
        };

        if ((st = cx_image_new(cols, rows, 1, &im, err)))
            return st;
        const bool invert = photometric == "MONOCHROME1";
        /* stored values span at most 16 bits: one table for all of them */
        const size_t nv = (size_t)1 << stored;
        std::vector<uint8_t> table(nv);
        for (size_t u = 0; u < nv; u++) {
            long s = (long)u;
            if (is_signed && (u >> (stored - 1)) & 1)
                s -= (long)nv;
            uint8_t y = to8(modality((double)s));
            table[u] = invert ? (uint8_t)(255 - y) : y;
        }
        size_t np = (size_t)rows * cols;
        if (alloc == 8) {
            for (size_t i = 0; i < np; i++)
                im.data[i] = table[((uint32_t)frame[i] >> shift) & mask];
        } else {
            const uint16_t *w = reinterpret_cast<const uint16_t *>(frame.data());
            for (size_t i = 0; i < np; i++)
                im.data[i] = table[((uint32_t)w[i] >> shift) & mask];
        }
    }

    if (channels == 0 || channels == im.channels) {
        *out = im;
        return CX_OK;
    }
    st = cx_image_convert(&im, channels, out, err);
    cx_image_free(&im);
    return st;
}

} // namespace

extern "C" cx_status cx_dicom_decode(const void *buf, size_t n, const char *name, int channels,
                                     cx_image *out, cx_image_info *info, cx_err *err)
{
    if (!out)
        return cx_seterr(err, CX_EARG, "cx_dicom_decode: out is NULL");
    memset(out, 0, sizeof *out);
    if (channels != 0 && channels != 1 && channels != 3)
        return cx_seterr(err, CX_EARG, "%s: channels must be 0, 1 or 3, not %d", nm(name),
                         channels);
    try {
        Decoder d{name, err, info};
        cx_status st = d.run(buf, n, channels, out);
        if (st)
            cx_image_free(out);
        return st;
    } catch (const std::bad_alloc &) {
        cx_image_free(out);
        return cx_seterr(err, CX_ENOMEM, "%s: out of memory while reading the DICOM file",
                         nm(name));
    } catch (const std::exception &e) {
        cx_image_free(out);
        return cx_seterr(err, CX_EFORMAT, "%s: invalid DICOM file: %s", nm(name), e.what());
    } catch (...) {
        cx_image_free(out);
        return cx_seterr(err, CX_EFORMAT, "%s: invalid DICOM file", nm(name));
    }
}

/* ------------------------------------------------------------ writing */

namespace {

std::string new_uid()
{
    char u[65];
    cx_dicom_new_uid(u);
    return u;
}

std::string get_str(DcmItem *ds, const DcmTagKey &tag)
{
    OFString v;
    if (ds->findAndGetOFStringArray(tag, v).bad())
        return std::string();
    return std::string(v.c_str());
}

/* copies an element of the source, or (type 2) inserts it empty */
void copy_el(DcmItem *src, DcmItem *dst, const DcmTagKey &tag, bool type2)
{
    DcmElement *e = NULL;
    if (src->findAndGetElement(tag, e).good() && e) {
        DcmElement *c = OFstatic_cast(DcmElement *, e->clone());
        if (c && dst->insert(c, true).bad())
            delete c;
    } else if (type2) {
        dst->insertEmptyElement(tag, true);
    }
}

void now_date_time(std::string &date, std::string &time_)
{
    char d[16], t[16];
    std::time_t now = std::time(NULL);
    struct tm tmv;
    localtime_r(&now, &tmv);
    strftime(d, sizeof d, "%Y%m%d", &tmv);
    strftime(t, sizeof t, "%H%M%S", &tmv);
    date = d;
    time_ = t;
}

/* Part 10 file (explicit VR little endian) in a malloc'd buffer */
OFCondition to_buffer(DcmFileFormat &ff, uint8_t **out, size_t *n)
{
    const E_TransferSyntax xfer = EXS_LittleEndianExplicit;
    OFCondition c = ff.validateMetaInfo(xfer);
    if (c.bad())
        return c;
    ff.removeInvalidGroups();
    Uint32 len = ff.calcElementLength(xfer, EET_ExplicitLength);
    size_t cap = (size_t)len + 4096;
    uint8_t *buf = static_cast<uint8_t *>(malloc(cap));
    if (!buf)
        return EC_MemoryExhausted;
    DcmOutputBufferStream ob(buf, (offile_off_t)cap);
    ff.transferInit();
    c = ff.write(ob, xfer, EET_ExplicitLength, NULL, EGL_recalcGL, EPD_withoutPadding);
    ff.transferEnd();
    if (c.bad()) {
        free(buf);
        return c;
    }
    void *p = NULL;
    offile_off_t got = 0;
    ob.flushBuffer(p, got);
    *out = buf;
    *n = (size_t)got;
    return EC_Normal;
}

struct Source {
    DcmDataset *ds;
    std::string study, series, sop_class, sop;
};

const DcmTagKey PATIENT_STUDY_TYPE2[] = {DCM_PatientName,   DCM_PatientID, DCM_PatientBirthDate,
                                         DCM_PatientSex,    DCM_StudyDate, DCM_StudyTime,
                                         DCM_ReferringPhysicianName, DCM_StudyID,
                                         DCM_AccessionNumber};
const DcmTagKey PATIENT_STUDY_OPTIONAL[] = {DCM_SpecificCharacterSet, DCM_IssuerOfPatientID,
                                            DCM_StudyDescription};

cx_status write_sc(const Source &s, const cx_dicom_result *r, const std::string &series_uid,
                   const std::string &sop_uid, uint8_t **out, size_t *n, cx_err *err)
{
    DcmFileFormat ff;
    DcmDataset *d = ff.getDataset();
    std::string date, time_;
    now_date_time(date, time_);
    for (const DcmTagKey &t : PATIENT_STUDY_TYPE2)
        copy_el(s.ds, d, t, true);
    for (const DcmTagKey &t : PATIENT_STUDY_OPTIONAL)
        copy_el(s.ds, d, t, false);
    const cx_image *im = r->image;
    OFCondition c = EC_Normal;
    auto put = [&](const DcmTagKey &t, const std::string &v) {
        if (c.good())
            c = d->putAndInsertString(t, v.c_str());
    };
    auto put16 = [&](const DcmTagKey &t, Uint16 v) {
        if (c.good())
            c = d->putAndInsertUint16(t, v);
    };
    put(DCM_SOPClassUID, UID_SecondaryCaptureImageStorage);
    put(DCM_SOPInstanceUID, sop_uid);
    put(DCM_StudyInstanceUID, s.study);
    put(DCM_SeriesInstanceUID, series_uid);
    put(DCM_Modality, "OT");
    put(DCM_SeriesNumber, "9901");
    put(DCM_SeriesDescription, "chexnet heat map (research use only)");
    put(DCM_InstanceNumber, "1");
    put(DCM_Manufacturer, "chexnet");
    put(DCM_ConversionType, "WSD");
    put(DCM_SecondaryCaptureDeviceManufacturer, "chexnet");
    put(DCM_SecondaryCaptureDeviceManufacturerModelName, r->model ? r->model : "");
    put(DCM_SecondaryCaptureDeviceSoftwareVersions, CX_VERSION);
    put(DCM_ImageType, "DERIVED\\SECONDARY");
    put(DCM_DerivationDescription,
        std::string("chexnet class activation map of ") +
            (r->cam_class >= 0 && r->cam_class < r->n_classes ? r->classes[r->cam_class] : "?") +
            " over the X-ray, with the probabilities burned in");
    put(DCM_BurnedInAnnotation, "YES");
    put(DCM_ContentDate, date);
    put(DCM_ContentTime, time_);
    put(DCM_InstanceCreationDate, date);
    put(DCM_InstanceCreationTime, time_);
    if (c.good())
        copy_el(s.ds, d, DCM_PatientOrientation, true);
    if (c.good())
        copy_el(s.ds, d, DCM_Laterality, false);
    if (c.good())
        copy_el(s.ds, d, DCM_BodyPartExamined, false);
    if (c.good())
        copy_el(s.ds, d, DCM_LossyImageCompression, false);
    if (c.good()) {
        DcmItem *item = NULL;
        c = d->findOrCreateSequenceItem(DCM_SourceImageSequence, item, -2);
        if (c.good())
            c = item->putAndInsertString(DCM_ReferencedSOPClassUID, s.sop_class.c_str());
        if (c.good())
            c = item->putAndInsertString(DCM_ReferencedSOPInstanceUID, s.sop.c_str());
    }
    put16(DCM_SamplesPerPixel, 3);
    put(DCM_PhotometricInterpretation, "RGB");
    put16(DCM_PlanarConfiguration, 0);
    put16(DCM_Rows, (Uint16)im->height);
    put16(DCM_Columns, (Uint16)im->width);
    put16(DCM_BitsAllocated, 8);
    put16(DCM_BitsStored, 8);
    put16(DCM_HighBit, 7);
    put16(DCM_PixelRepresentation, 0);
    if (c.good())
        c = d->putAndInsertUint8Array(DCM_PixelData, im->data,
                                      (unsigned long)im->width * im->height * 3);
    if (c.good())
        c = to_buffer(ff, out, n);
    if (c.bad())
        return cx_seterr(err, CX_EIO, "cannot write the Secondary Capture: %s", c.text());
    return CX_OK;
}

std::string fmt_float(float v)
{
    char b[32];
    snprintf(b, sizeof b, "%.9g", v);
    return b;
}

cx_status write_sr(const Source &s, const cx_dicom_result *r, const std::string &sc_series,
                   const std::string &sc_sop, uint8_t **out, size_t *n, cx_err *err)
{
    DSRDocument doc(DSRTypes::DT_ComprehensiveSR);
    OFCondition c = doc.createNewSeriesInStudy(s.study.c_str());
    std::string cs = get_str(s.ds, DCM_SpecificCharacterSet);
    if (c.good() && !cs.empty())
        c = doc.setSpecificCharacterSet(cs.c_str(), OFFalse);
    auto set = [&](OFCondition (DSRDocument::*f)(const OFString &, const OFBool),
                   const DcmTagKey &tag) {
        std::string v = get_str(s.ds, tag);
        if (c.good() && !v.empty())
            c = (doc.*f)(v.c_str(), OFFalse);
    };
    set(&DSRDocument::setPatientName, DCM_PatientName);
    set(&DSRDocument::setPatientID, DCM_PatientID);
    set(&DSRDocument::setPatientBirthDate, DCM_PatientBirthDate);
    set(&DSRDocument::setPatientSex, DCM_PatientSex);
    set(&DSRDocument::setReferringPhysicianName, DCM_ReferringPhysicianName);
    set(&DSRDocument::setStudyDate, DCM_StudyDate);
    set(&DSRDocument::setStudyTime, DCM_StudyTime);
    set(&DSRDocument::setStudyID, DCM_StudyID);
    set(&DSRDocument::setAccessionNumber, DCM_AccessionNumber);
    set(&DSRDocument::setStudyDescription, DCM_StudyDescription);
    if (c.good())
        c = doc.setManufacturer("chexnet");
    if (c.good())
        c = doc.setSeriesDescription("chexnet probabilities (research use only)");
    if (c.good())
        c = doc.setSeriesNumber("9902");
    if (c.good())
        c = doc.setInstanceNumber("1");
    const char *scheme = "99CHEXNET";
    if (c.good()) { /* the private coding scheme of the class names */
        DSRCodingSchemeIdentificationList &csi = doc.getCodingSchemeIdentification();
        c = csi.addItem(scheme);
        if (c.good())
            c = csi.setCodingSchemeName("chexnet findings and results");
        if (c.good())
            c = csi.setCodingSchemeResponsibleOrganization("chexnet");
    }
    if (c.bad())
        return cx_seterr(err, CX_EIO, "cannot write the Structured Report: %s", c.text());

    DSRDocumentTree &tree = doc.getTree();
    bool ok = tree.addContentItem(DSRTypes::RT_isRoot, DSRTypes::VT_Container) > 0;
    ok = ok && tree.getCurrentContentItem()
                   .setConceptName(DSRCodedEntryValue("CXREPORT", scheme,
                                                      "chexnet chest X-ray classification"))
                   .good();
    /* the source image */
    ok = ok && tree.addChildContentItem(DSRTypes::RT_contains, DSRTypes::VT_Image,
                                        DSRCodedEntryValue("121112", "DCM",
                                                           "Source of Measurement"))
                   .good();
    ok = ok && tree.getCurrentContentItem()
                   .setImageReference(DSRImageReferenceValue(s.sop_class.c_str(), s.sop.c_str()),
                                      OFFalse)
                   .good();
    /* one probability per class, with its threshold */
    for (int k = 0; ok && k < r->n_classes; k++) {
        char code[16];
        snprintf(code, sizeof code, "CX%03d", k);
        ok = tree.addContentItem(DSRTypes::RT_contains, DSRTypes::VT_Num,
                                 DSRCodedEntryValue(code, scheme, r->classes[k], DSRTypes::CVT_auto,
                                                    OFFalse))
                 .good();
        ok = ok && tree.getCurrentContentItem()
                       .setNumericValue(DSRNumericMeasurementValue(
                                            fmt_float(r->probabilities[k]).c_str(),
                                            DSRCodedEntryValue("{probability}", "UCUM",
                                                               "probability")),
                                        OFFalse)
                       .good();
        if (ok && r->thresholds) {
            ok = tree.addChildContentItem(DSRTypes::RT_hasProperties, DSRTypes::VT_Num,
                                          DSRCodedEntryValue("CXTHRESH", scheme,
                                                             "Operating threshold"))
                     .good();
            ok = ok && tree.getCurrentContentItem()
                           .setNumericValue(DSRNumericMeasurementValue(
                                                fmt_float(r->thresholds[k]).c_str(),
                                                DSRCodedEntryValue("{probability}", "UCUM",
                                                                   "probability")),
                                            OFFalse)
                           .good();
            ok = ok && tree.goUp() > 0;
        }
    }
    /* the heat map */
    if (ok) {
        ok = tree.addContentItem(DSRTypes::RT_contains, DSRTypes::VT_Image,
                                 DSRCodedEntryValue("CXCAM", scheme,
                                                    "Class activation map"))
                 .good();
        ok = ok && tree.getCurrentContentItem()
                       .setImageReference(DSRImageReferenceValue(UID_SecondaryCaptureImageStorage,
                                                                 sc_sop.c_str()),
                                          OFFalse)
                       .good();
    }
    auto text = [&](const char *code, const char *meaning, const std::string &v) {
        if (!ok)
            return;
        ok = tree.addContentItem(DSRTypes::RT_contains, DSRTypes::VT_Text,
                                 DSRCodedEntryValue(code, scheme, meaning))
                 .good();
        ok = ok && tree.getCurrentContentItem().setStringValue(v.c_str(), OFFalse).good();
    };
    if (r->cam_class >= 0 && r->cam_class < r->n_classes)
        text("CXCAMCLS", "Class of the activation map", r->classes[r->cam_class]);
    text("CXMODEL", "Model", r->model ? r->model : "");
    for (int w = 0; w < r->n_warnings; w++)
        text("CXWARN", "Warning", r->warnings[w]);
    text("CXNOTICE", "Notice", "Research use only, not a medical device.");
    if (!ok)
        return cx_seterr(err, CX_EIO, "cannot build the Structured Report's content tree");

    c = doc.getCurrentRequestedProcedureEvidence().addItem(s.study.c_str(), s.series.c_str(),
                                                           s.sop_class.c_str(), s.sop.c_str(),
                                                           OFFalse);
    if (c.good())
        c = doc.getCurrentRequestedProcedureEvidence().addItem(
            s.study.c_str(), sc_series.c_str(), UID_SecondaryCaptureImageStorage, sc_sop.c_str(),
            OFFalse);
    if (c.good())
        c = doc.completeDocument();
    DcmFileFormat ff;
    if (c.good())
        c = doc.write(*ff.getDataset());
    /* UUID-derived UIDs rather than the toolkit's own root */
    if (c.good())
        c = ff.getDataset()->putAndInsertString(DCM_SeriesInstanceUID, new_uid().c_str());
    if (c.good())
        c = ff.getDataset()->putAndInsertString(DCM_SOPInstanceUID, new_uid().c_str());
    if (c.good())
        c = to_buffer(ff, out, n);
    if (c.bad())
        return cx_seterr(err, CX_EIO, "cannot write the Structured Report: %s", c.text());
    return CX_OK;
}

} // namespace

extern "C" cx_status cx_dicom_write_results(const void *src, size_t n, const cx_dicom_result *r,
                                            uint8_t **sc, size_t *sc_n, uint8_t **sr,
                                            size_t *sr_n, cx_err *err)
{
    if (!sc || !sc_n || !sr || !sr_n || !r || !r->image || r->image->channels != 3 ||
        !r->image->data || r->n_classes < 1 || !r->classes || !r->probabilities)
        return cx_seterr(err, CX_EARG, "cx_dicom_write_results: invalid arguments");
    *sc = *sr = NULL;
    *sc_n = *sr_n = 0;
    try {
        init_dcmtk();
        std::string why;
        E_TransferSyntax bare_xfer;
        if (!precheck(src, n, &bare_xfer, why))
            return cx_seterr(err, CX_EFORMAT, "invalid DICOM file: %s", why.c_str());
        MemFile mf;
        DcmFileFormat ff;
        OFCondition c = parse(src, n, bare_xfer, ff, mf);
        if (c.bad())
            return cx_seterr(err, CX_EFORMAT, "invalid DICOM file: %s", c.text());
        Source s;
        s.ds = ff.getDataset();
        s.study = get_str(s.ds, DCM_StudyInstanceUID);
        s.series = get_str(s.ds, DCM_SeriesInstanceUID);
        s.sop_class = get_str(s.ds, DCM_SOPClassUID);
        s.sop = get_str(s.ds, DCM_SOPInstanceUID);
        if (s.study.empty() || s.series.empty() || s.sop_class.empty() || s.sop.empty())
            return cx_seterr(err, CX_EMISSING, "the DICOM file lacks one of StudyInstanceUID, "
                                               "SeriesInstanceUID, SOPClassUID, "
                                               "SOPInstanceUID: results cannot refer to it");
        Uint16 rows = 0, cols = 0;
        s.ds->findAndGetUint16(DCM_Rows, rows);
        s.ds->findAndGetUint16(DCM_Columns, cols);
        if (r->image->width != cols || r->image->height != rows)
            return cx_seterr(err, CX_ESHAPE, "the result image is %dx%d, the X-ray %ux%u",
                             r->image->width, r->image->height, (unsigned)cols, (unsigned)rows);
        std::string sc_series = new_uid(), sc_sop = new_uid();
        cx_status st = write_sc(s, r, sc_series, sc_sop, sc, sc_n, err);
        if (!st)
            st = write_sr(s, r, sc_series, sc_sop, sr, sr_n, err);
        if (st) {
            free(*sc);
            free(*sr);
            *sc = *sr = NULL;
            *sc_n = *sr_n = 0;
        }
        return st;
    } catch (const std::bad_alloc &) {
        free(*sc);
        free(*sr);
        *sc = *sr = NULL;
        return cx_seterr(err, CX_ENOMEM, "out of memory while writing the DICOM results");
    } catch (...) {
        free(*sc);
        free(*sr);
        *sc = *sr = NULL;
        return cx_seterr(err, CX_EIO, "cannot write the DICOM results");
    }
}
