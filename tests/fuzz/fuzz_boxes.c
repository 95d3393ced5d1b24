/* fuzz_boxes: radiologists' box lists (cx_box_list_read: BBox_List_2017.csv
 * by position, the official header, "Infiltrate"), then each box read
 * through the localisation arithmetic (cx_loc_item_eval) on a small map, so
 * any coordinates a file can hold (huge, negative, fractional, zero-sized)
 * reach the pixel loops. */
#include "fuzz_common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_setup();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = fuzz_file(data, size, "boxes.csv");
    cx_box_list l;
    cx_err err;
    if (cx_box_list_read(p, &l, &err) != CX_OK)
        return 0;
    /* a 3 x 4 raw map with a peak and a plateau, on a 64 x 48 image */
    static const float map[12] = {0, 1, 2, 2, 1, 5, 5, 0, -1, 0, 3, 2};
    for (int i = 0; i < l.n && i < 16; i++) {
        cx_loc_item it = {0, 0, map, 3, 4, 64, 48, 1, &l.v[i].box};
        double hit, iou;
        (void)cx_loc_item_eval(&it, 0.5, &hit, &iou, &err);
    }
    cx_box_list_free(&l);
    return 0;
}
