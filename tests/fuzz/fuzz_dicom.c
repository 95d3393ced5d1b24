/* fuzz_dicom: DICOM reading (src/io/dicom.cc on DCMTK: parsing, every
 * decoder, the Modality/VOI pipeline, the frontal-chest checks) and, for a
 * file that decodes, the result objects written for it (Secondary Capture
 * and SR), which must decode again. Whatever the bytes: no crash, no leak,
 * no sanitizer report. */
#include "chexnet.h"
#include "io/dicom.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cx_image im, rgb, back;
    cx_image_info info;
    cx_err err;
    /* the decoder itself, whatever the first bytes; then the loader */
    if (cx_dicom_decode(data, size, "fuzz.dcm", 0, &im, &info, &err) != CX_OK)
        return 0;
    if (cx_image_load_mem(data, size, "fuzz.dcm", 1, &back, &err) == CX_OK)
        cx_image_free(&back);
    if ((size_t)im.width * im.height <= ((size_t)1 << 20) &&
        cx_image_convert(&im, 3, &rgb, &err) == CX_OK) {
        static const char *const classes[2] = {"Effusion", "Pneumonia"};
        static const float prob[2] = {0.125f, 0.875f}, thr[2] = {0.5f, 0.5f};
        const char *warn[CX_IMAGE_MAX_WARNINGS];
        for (int i = 0; i < info.n_warnings; i++)
            warn[i] = info.warnings[i];
        cx_dicom_result r = {"fuzz.safetensors", 2, classes, prob, thr, 1, &rgb,
                             info.n_warnings, warn};
        uint8_t *sc = NULL, *sr = NULL;
        size_t scn = 0, srn = 0;
        if (cx_dicom_write_results(data, size, &r, &sc, &scn, &sr, &srn, &err) == CX_OK) {
            /* what chexnet writes, chexnet reads */
            if (cx_dicom_decode(sc, scn, "sc.dcm", 0, &back, NULL, &err) != CX_OK)
                abort();
            cx_image_free(&back);
            free(sc);
            free(sr);
        }
        cx_image_free(&rgb);
    }
    cx_image_free(&im);
    return 0;
}
