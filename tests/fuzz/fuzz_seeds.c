/* fuzz_seeds - writes the seed corpora of the fuzz harnesses.
 *
 *   fuzz_seeds OUT [SHARED_DATA]
 *
 * OUT/<harness>/ receives small, valid inputs of each format, made from the
 * real files in SHARED_DATA (../shared/data) when it is there:
 *   safetensors, model  tiny DenseNets (F32, F16, BF16; 1 and 3 input
 *                       channels; class names, normalisation metadata)
 *   png                 a real X-ray, downscaled, in every colour type and
 *                       bit depth, interlaced or not, with tRNS
 *   jpeg                real paediatric JPEGs, and the X-ray re-encoded
 *                       (grey, colour, progressive)
 *   csv, labels, predictions, dataset, readers, boxes
 *                       the first lines of the real label, metadata,
 *                       manifest, split-list and score files (plain and gzip)
 *   json                the headers of the tiny models, and a few documents
 *   pack                tiny packs (grey and RGB) of real images
 * Without SHARED_DATA, synthetic images and tables of the same formats.
 * Sizes are kept small (mostly under 16 KB) so that the fuzzers run fast.
 */
#define _GNU_SOURCE
#include "chexnet.h"

#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <jpeglib.h>
#include <png.h>

static const char *g_out, *g_shared;

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fuzz_seeds: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static const char *outp(const char *harness, const char *name)
{
    static char buf[4][1024];
    static int k;
    char *p = buf[k++ % 4];
    snprintf(p, sizeof buf[0], "%s/%s", g_out, harness);
    mkdir(p, 0777);
    snprintf(p, sizeof buf[0], "%s/%s/%s", g_out, harness, name);
    return p;
}

static void put(const char *harness, const char *name, const void *data, size_t n)
{
    FILE *f = fopen(outp(harness, name), "wb");
    if (!f || (n && fwrite(data, 1, n, f) != n) || fclose(f))
        die("cannot write %s/%s", harness, name);
}

static void put_gz(const char *harness, const char *name, const void *data, size_t n)
{
    gzFile g = gzopen(outp(harness, name), "wb9");
    if (!g || (n && gzwrite(g, data, (unsigned)n) != (int)n) || gzclose(g) != Z_OK)
        die("cannot write %s/%s", harness, name);
}

static char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)sz + 1);
    if (!b || fread(b, 1, (size_t)sz, f) != (size_t)sz)
        die("cannot read %s", path);
    fclose(f);
    b[sz] = 0;
    *n = (size_t)sz;
    return b;
}

/* The first `lines` lines of a shared file (plain or gzip); NULL if absent. */
static char *head(const char *rel, int lines, size_t *n)
{
    if (!g_shared)
        return NULL;
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", g_shared, rel);
    gzFile g = gzopen(path, "rb");
    if (!g)
        return NULL;
    size_t cap = 1 << 16, len = 0;
    char *b = malloc(cap);
    int c, seen = 0;
    while (seen < lines && (c = gzgetc(g)) >= 0 && len + 1 < cap) {
        b[len++] = (char)c;
        seen += c == '\n';
    }
    gzclose(g);
    b[len] = 0;
    *n = len;
    return b;
}

/* ------------------------------------------------------------- models */

static void models(void)
{
    cx_err err;
    int variant = 0;
    for (int inch = 1; inch <= 3; inch += 2)
        for (int classes = 1; classes <= 3; classes += 2) {
            cx_config cfg;
            memset(&cfg, 0, sizeof cfg);
            snprintf(cfg.arch, sizeof cfg.arch, "densenet");
            cfg.growth_rate = 4;
            cfg.n_blocks = 2;
            cfg.block_config[0] = 1;
            cfg.block_config[1] = 1;
            cfg.num_init_features = 8;
            cfg.bn_size = 2;
            cfg.num_classes = classes;
            cfg.in_channels = inch;
            cx_model *m;
            if (cx_model_new(&cfg, &m, &err))
                die("model: %s", err.msg);
            cx_model_init(m, 7);
            if (classes == 3) {
                const char *names[3] = {"Effusion", "Pleural_Thickening", "No \"Finding\""};
                cx_model_set_class_names(m, 3, names, &err);
                cx_model_set_meta(m, "mean", "0.5,0.5,0.5", &err);
                cx_model_set_meta(m, "std", "0.25,0.25,0.25", &err);
                cx_model_set_meta(m, "input_size", "64", &err);
            }
            cx_dtype dts[3] = {CX_DT_F32, CX_DT_F16, CX_DT_BF16};
            for (int d = 0; d < 3; d++) {
                if (variant % 2 && d == 2)
                    continue;
                char name[64];
                snprintf(name, sizeof name, "tiny-%dch-%dcls-%s.safetensors", inch, classes,
                         cx_dtype_name(dts[d]));
                const char *p = outp("model", name);
                if (cx_model_save(m, p, dts[d], &err))
                    die("save: %s", err.msg);
                size_t n;
                char *b = slurp(p, &n);
                put("safetensors", name, b, n);
                /* its header as a JSON seed */
                uint64_t hl = 0;
                for (int i = 7; i >= 0; i--)
                    hl = hl << 8 | (uint8_t)b[i];
                if (hl < n - 8) {
                    snprintf(name, sizeof name, "header-%d.json", variant * 3 + d);
                    put("json", name, b + 8, (size_t)hl);
                }
                free(b);
            }
            variant++;
            cx_model_free(m);
        }
}

/* ------------------------------------------------------------- images */

/* The source image: a real X-ray downscaled to w x h grey, else a
 * gradient. */
static cx_image source_image(int w, int h)
{
    cx_image im = {0}, out = {0};
    cx_err err;
    char path[1024];
    if (g_shared) {
        snprintf(path, sizeof path, "%s/nih/images/00000001_000.png", g_shared);
        if (cx_image_load_resized(path, 1, w, h, &out, &err) == CX_OK)
            return out;
    }
    if (cx_image_new(w, h, 1, &im, &err))
        die("%s", err.msg);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            im.data[y * w + x] = (uint8_t)(x * 9 + y * 5);
    return im;
}

static void png_one(const cx_image *src, int ctype, int depth, int interlace, int trns)
{
    int w = src->width, h = src->height;
    char name[96];
    snprintf(name, sizeof name, "xray-c%d-d%d%s%s.png", ctype, depth, interlace ? "-i" : "",
             trns ? "-trns" : "");
    FILE *f = fopen(outp("png", name), "wb");
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    if (!f || !png || !info || setjmp(png_jmpbuf(png)))
        die("png %s", name);
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, ctype,
                 interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_color pal[256];
    int npal = ctype == PNG_COLOR_TYPE_PALETTE ? 1 << depth : 0;
    for (int i = 0; i < npal; i++) {
        int v = npal > 1 ? i * 255 / (npal - 1) : 0;
        pal[i].red = (png_byte)v;
        pal[i].green = (png_byte)(255 - v / 2);
        pal[i].blue = (png_byte)(v / 3);
    }
    if (npal)
        png_set_PLTE(png, info, pal, npal);
    if (trns && npal) {
        png_byte t[2] = {0, 128};
        png_set_tRNS(png, info, t, npal < 2 ? npal : 2, NULL);
    } else if (trns && (ctype == PNG_COLOR_TYPE_GRAY || ctype == PNG_COLOR_TYPE_RGB)) {
        png_color_16 c = {0, 1, 2, 3, 4};
        png_set_tRNS(png, info, NULL, 0, &c);
    }
    png_write_info(png, info);
    int ch = ctype == 0 ? 1 : ctype == 2 ? 3 : ctype == 3 ? 1 : ctype == 4 ? 2 : 4;
    size_t rowbytes = ((size_t)w * ch * depth + 7) / 8;
    png_bytep rows = calloc((size_t)h, rowbytes);
    png_bytep *rp = malloc(sizeof(png_bytep) * (size_t)h);
    unsigned maxv = npal ? (unsigned)npal - 1 : (1u << depth) - 1;
    for (int y = 0; y < h; y++) {
        png_bytep r = rows + (size_t)y * rowbytes;
        rp[y] = r;
        for (int x = 0; x < w; x++)
            for (int c = 0; c < ch; c++) {
                unsigned g = src->data[y * w + x];
                unsigned v = c == ch - 1 && (ch == 2 || ch == 4) ? 255u - (unsigned)x * 4
                                                                 : (g + 40u * c) % 256u;
                v = depth == 16 ? v * 257u : v * maxv / 255u;
                int i = x * ch + c;
                if (depth == 16) {
                    r[2 * i] = (png_byte)(v >> 8);
                    r[2 * i + 1] = (png_byte)v;
                } else if (depth == 8) {
                    r[i] = (png_byte)v;
                } else {
                    int bit = i * depth;
                    r[bit / 8] |= (png_byte)(v << (8 - depth - bit % 8));
                }
            }
    }
    png_write_image(png, rp);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    fclose(f);
    free(rows);
    free(rp);
}

static void pngs(void)
{
    cx_image src = source_image(24, 20);
    static const int cases[][2] = {{0, 1}, {0, 2}, {0, 4}, {0, 8}, {0, 16}, {2, 8}, {2, 16},
                                   {3, 1}, {3, 2}, {3, 4}, {3, 8}, {4, 8}, {4, 16}, {6, 8},
                                   {6, 16}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        png_one(&src, cases[k][0], cases[k][1], 0, 0);
        if (k % 3 == 0)
            png_one(&src, cases[k][0], cases[k][1], 1, 0);
    }
    png_one(&src, 3, 8, 0, 1);
    png_one(&src, 0, 8, 0, 1);
    png_one(&src, 2, 16, 1, 1);
    cx_image_free(&src);
}

static void jpeg_one(const cx_image *src, int comps, int progressive)
{
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr jerr;
    c.err = jpeg_std_error(&jerr);
    jpeg_create_compress(&c);
    unsigned char *mem = NULL;
    unsigned long n = 0;
    jpeg_mem_dest(&c, &mem, &n);
    c.image_width = (JDIMENSION)src->width;
    c.image_height = (JDIMENSION)src->height;
    c.input_components = comps;
    c.in_color_space = comps == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, 80, TRUE);
    if (progressive)
        jpeg_simple_progression(&c);
    jpeg_start_compress(&c, TRUE);
    unsigned char *row = malloc((size_t)src->width * comps);
    while (c.next_scanline < c.image_height) {
        int y = (int)c.next_scanline;
        for (int x = 0; x < src->width; x++)
            for (int k = 0; k < comps; k++)
                row[x * comps + k] = (unsigned char)(src->data[y * src->width + x] + 30 * k);
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    char name[64];
    snprintf(name, sizeof name, "xray-%d%s.jpg", comps, progressive ? "-prog" : "");
    put("jpeg", name, mem, n);
    free(row);
    free(mem);
}

static void jpegs(void)
{
    cx_image src = source_image(40, 32);
    for (int comps = 1; comps <= 3; comps += 2)
        for (int prog = 0; prog < 2; prog++)
            jpeg_one(&src, comps, prog);
    cx_image_free(&src);
    if (!g_shared)
        return;
    static const char *real[] = {"kermany-224/train/NORMAL/IM-0115-0001.jpeg",
                                 "kermany-224/train/PNEUMONIA/person1000_bacteria_2931.jpeg"};
    for (size_t i = 0; i < sizeof real / sizeof real[0]; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", g_shared, real[i]);
        size_t n;
        char *b = slurp(path, &n);
        if (!b)
            continue;
        char name[32];
        snprintf(name, sizeof name, "kermany-%zu.jpg", i);
        put("jpeg", name, b, n);
        free(b);
    }
}

/* -------------------------------------------------------------- tables */

typedef struct {
    const char *rel;
    int lines;
    const char *harnesses; /* space-separated */
} table_src;

static void tables(void)
{
    static const table_src src[] = {
        {"nih/metadata/Data_Entry_2017_v2020.csv.gz", 14, "csv labels dataset"},
        {"nih/labels.csv", 8, "csv labels predictions dataset"},
        {"nih/split-70-10-20/val_list.txt", 10, "labels dataset"},
        {"nih/split-70-10-20/train_list.txt.gz", 6, "labels dataset"},
        {"nih/metadata/BBox_List_2017.csv.gz", 8, "csv boxes"},
        {"nih/metadata/rsna_to_nih_map.csv.gz", 8, "csv labels"},
        {"kermany-224/manifest.csv", 14, "csv dataset labels"},
        {"chexpert-test-labels/groundtruth.csv", 10, "csv labels predictions"},
        {"chexpert-test-labels/example_models/predictions/standard/drnet_predictions.csv", 10,
         "predictions csv"},
        {"chexpert-test-labels/example_models/decisions/standard/drnet_decisions.csv", 10,
         "predictions"},
    };
    int k = 0;
    for (size_t i = 0; i < sizeof src / sizeof src[0]; i++) {
        size_t n;
        char *t = head(src[i].rel, src[i].lines, &n);
        if (!t)
            continue;
        char hs[128];
        snprintf(hs, sizeof hs, "%s", src[i].harnesses);
        for (char *save = NULL, *h = strtok_r(hs, " ", &save); h; h = strtok_r(NULL, " ", &save)) {
            char name[64];
            snprintf(name, sizeof name, "real-%02d.csv", k);
            if (!strcmp(h, "csv")) {
                /* the first byte chooses the options: comma + header;
                 * whitespace for lists */
                char *b = malloc(n + 1);
                b[0] = strstr(src[i].rel, "_list") ? 0x01 : 0x02;
                memcpy(b + 1, t, n);
                put(h, name, b, n + 1);
                free(b);
            } else {
                put(h, name, t, n);
            }
            if (!strcmp(h, "labels") && i == 0) {
                snprintf(name, sizeof name, "real-%02d.csv.gz", k);
                put_gz(h, name, t, n);
            }
        }
        free(t);
        k++;
    }
    /* readers: two benchmark radiologists and a model's scores */
    size_t n1, n2, n3;
    char *a = head("chexpert-test-labels/radiologists/benchmark_radiologists/bc4.csv", 12, &n1);
    char *b = head("chexpert-test-labels/radiologists/benchmark_radiologists/bc6.csv", 12, &n2);
    char *c = head("chexpert-test-labels/example_models/predictions/standard/drnet_predictions.csv",
                   12, &n3);
    if (a && b && c) {
        char *all = NULL;
        size_t len = 0;
        FILE *m = open_memstream(&all, &len);
        fprintf(m, "%s\n====\n%s\n====\n%s", a, b, c);
        fclose(m);
        put("readers", "chexpert.txt", all, len);
        free(all);
    }
    free(a);
    free(b);
    free(c);
    /* synthetic ones, with the formats' corners */
    static const char *syn_csv = "\x02\xEF\xBB\xBFimage,\"Pleural, Effusion\",Edema\r\n"
                                 "a.png,1,\"0\"\r\n\"b \"\"x\"\".png\",,-1\r\n\r\nc.png,1.0,nan";
    put("csv", "syn-quotes.csv", syn_csv, strlen(syn_csv));
    static const char *syn_list = "\x01" "00000001_000.png 0 0 0 0 0 0 1 0 0 0 0 0 0 0\n"
                                  "  00000001_001.png\t0 1 0 0 0 0 0 0 0 0 0 0 0 0  \n\n";
    put("csv", "syn-list.txt", syn_list, strlen(syn_list));
    static const char *syn_pred = "Image Index,Pneumonia,Effusion\nx/a.png,0.25,1e-3\n"
                                  "b.png,1,0\nb.png,1,0\nc.jpg,-0.5,2\n";
    put("predictions", "syn.csv", syn_pred, strlen(syn_pred));
    static const char *syn_manifest = "path,pneumonia,Effusion,patient_key,split\n"
                                      "a/1.png,1,0,p1,train\na/2.png,0,1,p1,test\n"
                                      "b/3.jpeg,0,0,p2,val\n";
    put("dataset", "syn-manifest.csv", syn_manifest, strlen(syn_manifest));
    static const char *syn_meta = "Image Index,Finding Labels,Follow-up #,Patient ID\n"
                                  "00000001_000.png,Cardiomegaly|Effusion,0,1\n"
                                  "00000002_000.png,No Finding,0,2\n";
    put("labels", "syn-meta.csv", syn_meta, strlen(syn_meta));
    put("dataset", "syn-meta.csv", syn_meta, strlen(syn_meta));
    static const char *syn_readers = "Study,Pleural Effusion\ns1,1\ns2,0\ns3,1\n====\n"
                                     "Study,Pleural Effusion\ns1,1\ns2,1\ns3,0\n====\n"
                                     "Study,Pleural Effusion\ns1,0.9\ns2,0.2\ns3,0.7\n";
    put("readers", "syn.txt", syn_readers, strlen(syn_readers));
    static const char *json[] = {
        "{\"a\":[1,-2.5e-3,true,false,null,\"\\u00e9\\ud83d\\ude00\"],\"b\":{}}",
        "[[[[[]]]],{\"k\":\"v\",\"k2\":18446744073709551615}]",
        ("{\"__metadata__\":{\"classes\":\"[\\\"Pneumonia\\\"]\"},\"t\":{\"dtype\":\"F32\","
         "\"shape\":[1,2],\"data_offsets\":[0,8]}}")};
    for (size_t i = 0; i < sizeof json / sizeof json[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "doc-%zu.json", i);
        put("json", name, json[i], strlen(json[i]));
    }
}

/* --------------------------------------------------------------- packs */

static void packs(void)
{
    char dir[1024], man[1100];
    snprintf(dir, sizeof dir, "%s/.packsrc", g_out);
    mkdir(dir, 0777);
    cx_err err;
    /* three images: from the shared data when present, else synthetic */
    const char *files[3] = {"g.png", "c.png", "j.jpg"};
    cx_image src = source_image(20, 16), rgb = {0};
    if (cx_image_convert(&src, 3, &rgb, &err))
        die("%s", err.msg);
    for (int i = 0; i < 40; i++)
        rgb.data[3 * i] = (uint8_t)(rgb.data[3 * i] + 50); /* some colour */
    char p[1200];
    snprintf(p, sizeof p, "%s/%s", dir, files[0]);
    if (cx_image_save_png(&src, p, &err))
        die("%s", err.msg);
    snprintf(p, sizeof p, "%s/%s", dir, files[1]);
    if (cx_image_save_png(&rgb, p, &err))
        die("%s", err.msg);
    snprintf(p, sizeof p, "%s/%s", dir, files[2]);
    if (cx_image_save_png(&src, p, &err)) /* a PNG named .jpg: content decides */
        die("%s", err.msg);
    cx_image_free(&src);
    cx_image_free(&rgb);
    snprintf(man, sizeof man, "%s/manifest.csv", dir);
    FILE *f = fopen(man, "w");
    fprintf(f, "path,Pneumonia,Effusion,patient\n%s,1,0,p1\n%s,0,1,p2\n%s,0,0,p2\n", files[0],
            files[1], files[2]);
    fclose(f);
    cx_dataset_opts o;
    cx_dataset_opts_default(&o);
    o.labels = man;
    cx_dataset *ds;
    if (cx_dataset_load(&o, &ds, &err))
        die("pack dataset: %s", err.msg);
    for (int mode = 0; mode <= 3; mode += 1 + (mode == 1)) {
        cx_pack_opts po;
        cx_pack_opts_default(&po);
        po.size = mode == 3 ? 6 : 8;
        po.channels = mode;
        po.threads = 1;
        char name[64];
        snprintf(name, sizeof name, "tiny-ch%d.cxpack", mode);
        if (cx_pack_write(ds, NULL, cx_dataset_size(ds), &po, outp("pack", name), NULL, NULL,
                          &err))
            die("pack: %s", err.msg);
    }
    cx_dataset_free(ds);
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        unlink(p);
    }
    unlink(man);
    rmdir(dir);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        die("usage: fuzz_seeds OUT [SHARED_DATA]");
    g_out = argv[1];
    mkdir(g_out, 0777);
    struct stat sb;
    if (argc > 2 && stat(argv[2], &sb) == 0 && S_ISDIR(sb.st_mode))
        g_shared = argv[2];
    else
        fprintf(stderr, "fuzz_seeds: no shared data: synthetic seeds only\n");
    cx_set_threads(1);
    models();
    pngs();
    jpegs();
    tables();
    packs();
    return 0;
}
