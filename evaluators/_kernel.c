/* segpipe.evaluators._kernel: compressed COCO RLE totals, COCOeval's per-image IoU + greedy matching for a
 * whole update in one call, COCOeval.accumulate's precision/recall lanes, and a results list read into columns. Optional: segpipe falls back to its numpy path when this does not build or when
 * SEGPIPE_NO_KERNEL=1 (segpipe/evaluators/kernel.py).
 *
 * Plain CPython C API and the buffer protocol (no numpy headers): arrays come in as C-contiguous buffers whose
 * item size and length are checked here against the sizes given, so a wrong call raises instead of reading or
 * writing out of bounds. Strings are read only within their length; a corrupt one is INVALID (rle_totals) or a
 * ValueError (matching), never decoded past its end.
 *
 * Arithmetic follows pycocotools' common/maskApi.c so the floats are bit-identical:
 *   https://github.com/cocodataset/cocoapi/blob/master/common/maskApi.c  (rleFrString, rleIou, bbIou)
 * and the greedy matching follows COCOeval.evaluateImg:
 *   https://github.com/ppwwyyxx/cocoapi/blob/master/PythonAPI/pycocotools/cocoeval.py
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define MAX_RUN_CHARS 7 /* 35 bits: the widest run rleFrString's encoder (rleToString) writes for a uint32 */
#define INVALID_RLE (-1)
#define MAX_PIXELS ((int64_t)1 << 31) /* the kernel takes images of fewer pixels than this */

/* ---------------------------------------------------------------- buffers */

typedef struct {
    Py_buffer view;
    int held;
} Buf;

/* A C-contiguous buffer of `count` items of `itemsize` bytes; `kind` is 'b' (1-byte bool/uint8), 'i' (int64)
 * or 'f' (float64). count < 0 means any length (read back from buf->view.len). */
static int get_buf(PyObject *obj, Buf *buf, char kind, Py_ssize_t count, int writable, const char *name) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    buf->held = 0;
    if (PyObject_GetBuffer(obj, &buf->view, flags) < 0) {
        PyErr_Format(PyExc_TypeError, "%s: expected a %sC-contiguous buffer", name, writable ? "writable " : "");
        return -1;
    }
    buf->held = 1;
    const char *fmt = buf->view.format ? buf->view.format : "B";
    if (fmt[0] == '<' || fmt[0] == '=' || fmt[0] == '@') fmt++;
    int ok;
    switch (kind) {
    case 'b': ok = buf->view.itemsize == 1 && (strcmp(fmt, "?") == 0 || strcmp(fmt, "B") == 0 || strcmp(fmt, "b") == 0); break;
    case 'i': ok = buf->view.itemsize == 8 && (strcmp(fmt, "q") == 0 || strcmp(fmt, "l") == 0); break;
    default: ok = buf->view.itemsize == 8 && strcmp(fmt, "d") == 0; break;
    }
    if (!ok) {
        PyErr_Format(PyExc_TypeError, "%s: wrong item type (format %s, item size %zd)", name, buf->view.format ? buf->view.format : "B",
                     buf->view.itemsize);
        return -1;
    }
    if (count > PY_SSIZE_T_MAX / buf->view.itemsize) {
        PyErr_Format(PyExc_OverflowError, "%s: %zd items of %zd bytes overflow", name, count, buf->view.itemsize);
        return -1;
    }
    if (count >= 0 && buf->view.len != count * buf->view.itemsize) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd items, got %zd", name, count, buf->view.len / buf->view.itemsize);
        return -1;
    }
    return 0;
}

/* *out = a * b for counts (a, b >= 0), or OverflowError naming `what`: the sizes checked against buffers must not
 * wrap, or a wrong call would pass the check with a too-small buffer. */
static int mul_count(Py_ssize_t a, Py_ssize_t b, Py_ssize_t *out, const char *what) {
    if (a < 0 || b < 0 || (a && b > PY_SSIZE_T_MAX / a)) {
        PyErr_Format(PyExc_OverflowError, "%s: %zd x %zd items overflow", what, a, b);
        return -1;
    }
    *out = a * b;
    return 0;
}

/* Every keyword-only argument given (PyArg_ParseTupleAndKeywords makes keyword-only arguments optional). */
static int all_given(PyObject **objs, char **names, int n) {
    for (int i = 0; i < n; i++)
        if (!objs[i]) {
            PyErr_Format(PyExc_TypeError, "missing keyword argument '%s'", names[i]);
            return -1;
        }
    return 0;
}

static void release(Buf *buf) {
    if (buf->held) PyBuffer_Release(&buf->view);
    buf->held = 0;
}

static Py_ssize_t items(const Buf *buf) { return buf->view.len / buf->view.itemsize; }

/* ---------------------------------------------------------------- RLE strings */

/* The characters of a counts string: bytes as they are, str as str.encode("utf-8", "surrogatepass") gives them
 * (an ASCII str without a copy). pycocotools' _frString encodes strictly, so a lone surrogate is an error there;
 * "surrogatepass" turns it into bytes >= 0x80, outside the RLE alphabet, so it is corrupt here too ("replace"
 * would make it '?', a valid RLE character). *tmp holds a new reference to release when a str had to be encoded. */
static int string_chars(PyObject *item, const char *what, Py_ssize_t index, const unsigned char **s, Py_ssize_t *len, PyObject **tmp) {
    *tmp = NULL;
#if PY_VERSION_HEX < 0x030C0000 /* from 3.12 every str is "ready" (PEP 623) */
    if (PyUnicode_Check(item) && PyUnicode_READY(item) < 0) return -1;
#endif
    if (PyUnicode_Check(item) && PyUnicode_IS_ASCII(item)) {
        *s = (const unsigned char *)PyUnicode_1BYTE_DATA(item);
        *len = PyUnicode_GET_LENGTH(item);
        return 0;
    }
    if (PyUnicode_Check(item)) {
        *tmp = PyUnicode_AsEncodedString(item, "utf-8", "surrogatepass");
        if (!*tmp) return -1;
        item = *tmp;
    }
    if (!PyBytes_Check(item)) {
        PyErr_Format(PyExc_TypeError, "%s[%zd]: expected bytes or str, got %s", what, index, Py_TYPE(item)->tp_name);
        return -1;
    }
    *s = (const unsigned char *)PyBytes_AS_STRING(item);
    *len = PyBytes_GET_SIZE(item);
    return 0;
}

/* One rleFrString token at s[*p]: its value (sign-extended, before the x += cnts[m-2] of later runs) in *x, *p
 * moved past it; -1 when the string ends inside it, it is wider than MAX_RUN_CHARS characters, negative and
 * MAX_RUN_CHARS wide, or has a character outside the alphabet ('0'..'o'). */
static int read_token(const unsigned char *s, Py_ssize_t len, Py_ssize_t *p, uint64_t *x) {
    int k = 0, more = 1;
    unsigned char c = 0;
    *x = 0;
    while (more) {
        if (*p >= len || k >= MAX_RUN_CHARS) return -1;
        c = (unsigned char)(s[*p] - 48);
        if (c > 63) return -1;
        *x |= (uint64_t)(c & 0x1f) << (5 * k);
        more = c & 0x20;
        (*p)++;
        k++;
    }
    /* A negative run of MAX_RUN_CHARS characters is corrupt: rleFrString sign-extends with `-1 << 5*k`, an int shifted
     * by 35 bits there (undefined in C; x86 builds read e.g. -10 as -2, and pycocotools then hangs in rleIou or
     * refuses the mask in decode). */
    if (c & 0x10) {
        if (k == MAX_RUN_CHARS) return -1;
        *x -= (uint64_t)1 << (5 * k); /* sign-extend */
    }
    return 0;
}

/* rleFrString's tokens of one string, checked: returns 0 and calls `emit(run)` for each run, or -1 when the string
 * has a character outside the alphabet ('0'..'o'), ends inside a run, has a run wider than MAX_RUN_CHARS
 * characters or a negative run. Runs are summed as rleFrString does: from the fourth on, each adds the run two
 * before it (x += cnts[m-2] for m > 2). Unsigned arithmetic so a corrupt string wraps like numpy's int64. */
static int64_t rle_string_total(const unsigned char *s, Py_ssize_t len) {
    int64_t run_m2 = 0, run_m1 = 0; /* runs[m-2], runs[m-1] */
    Py_ssize_t m = 0, p = 0;
    double total = 0.0; /* numpy's version sums float64 weights in token order (np.bincount) */
    while (p < len) {
        uint64_t x;
        if (read_token(s, len, &p, &x) < 0) return INVALID_RLE;
        int64_t run = (int64_t)(m > 2 ? x + (uint64_t)run_m2 : x);
        if (run < 0) return INVALID_RLE;
        total += (double)run;
        run_m2 = run_m1;
        run_m1 = run;
        m++;
    }
    /* numpy's float64 -> int64 cast; x86 gives INT64_MIN out of range (only for absurd strings, never valid) */
    if (!(total < 9223372036854775808.0)) return INT64_MIN;
    return (int64_t)total;
}

static PyObject *py_rle_totals(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"strings", "out", NULL};
    PyObject *strings = NULL, *out_obj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$O!O:rle_totals", names, &PyList_Type, &strings, &out_obj)) return NULL;
    PyObject *given[] = {strings, out_obj};
    if (all_given(given, names, 2) < 0) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(strings);
    Buf out;
    if (get_buf(out_obj, &out, 'i', n, 1, "out") < 0) { release(&out); return NULL; }
    int64_t *dst = (int64_t *)out.view.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        const unsigned char *s;
        Py_ssize_t len;
        PyObject *tmp;
        if (string_chars(PyList_GET_ITEM(strings, i), "strings", i, &s, &len, &tmp) < 0) {
            release(&out);
            return NULL;
        }
        dst[i] = rle_string_total(s, len);
        Py_XDECREF(tmp);
    }
    release(&out);
    Py_RETURN_NONE;
}

/* ---------------------------------------------------------------- errors */

/* A corrupt string of match_segm: segpipe.evaluators.kernel.GtStringError or DetStringError(message, index), so a
 * caller tells a bad ground truth from a bad detection by type. The classes live in that (pure Python) module,
 * looked up when raised: it is the module that imports this one, so it is loaded by then. */
static void string_error(const char *what, Py_ssize_t index, uint64_t pixels) {
    const char *name = strcmp(what, "gt_strings") == 0 ? "GtStringError" : "DetStringError";
    PyObject *module = PyImport_ImportModule("segpipe.evaluators.kernel");
    PyObject *cls = module ? PyObject_GetAttrString(module, name) : NULL;
    Py_XDECREF(module);
    if (!cls) return; /* the import's error stands */
    PyObject *msg = PyUnicode_FromFormat("%s[%zd]: RLE counts string is corrupt or does not cover %llu pixels", what, index,
                                         (unsigned long long)pixels);
    PyObject *exc = msg ? PyObject_CallFunction(cls, "On", msg, index) : NULL;
    Py_DECREF(cls);
    Py_XDECREF(msg);
    if (!exc) return;
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
}

/* ---------------------------------------------------------------- decoded masks */

/* A mask as its foreground intervals [start, end) in column-major pixel order (the RLE's own order), and, when
 * it has a zero-length run after the first, its runs as pycocotools holds them (see mask_iou). */
typedef struct {
    Py_ssize_t first, count; /* into the interval pool */
    uint64_t area;
    uint64_t lo, hi; /* first foreground pixel, one past the last (lo = hi = 0 when empty) */
    int irregular;   /* a zero-length run at index >= 1 (rleEncode never writes one) */
    Py_ssize_t run_first, run_count; /* into the run pool, when irregular */
} Mask;

typedef struct {
    uint64_t *iv; /* pairs start, end */
    Py_ssize_t size, cap;
    uint32_t *runs; /* the runs of irregular masks, as rleFrString's uint cnts */
    Py_ssize_t run_size, run_cap;
} Pool;

static int pool_push_run(Pool *pool, uint32_t run) {
    if (pool->run_size + 1 > pool->run_cap) {
        if (pool->run_cap > PY_SSIZE_T_MAX / 2 / (Py_ssize_t)sizeof(uint32_t)) { PyErr_NoMemory(); return -1; }
        Py_ssize_t cap = pool->run_cap ? pool->run_cap * 2 : 1024;
        uint32_t *runs = PyMem_Realloc(pool->runs, (size_t)cap * sizeof(uint32_t));
        if (!runs) { PyErr_NoMemory(); return -1; }
        pool->runs = runs;
        pool->run_cap = cap;
    }
    pool->runs[pool->run_size++] = run;
    return 0;
}

/* The runs of an already checked string (every run in 0..pixels < 2**31) into the run pool. */
static int keep_runs(const unsigned char *s, Py_ssize_t len, Pool *pool, Mask *mask) {
    Py_ssize_t p = 0, m = 0;
    int64_t run_m2 = 0, run_m1 = 0;
    mask->run_first = pool->run_size;
    while (p < len) {
        uint64_t x;
        read_token(s, len, &p, &x); /* cannot fail: decode_mask read the same string */
        int64_t run = (int64_t)(m > 2 ? x + (uint64_t)run_m2 : x);
        if (pool_push_run(pool, (uint32_t)run) < 0) return -1;
        run_m2 = run_m1;
        run_m1 = run;
        m++;
    }
    mask->run_count = m;
    return 0;
}

static int pool_push(Pool *pool, uint64_t start, uint64_t end) {
    if (pool->size + 2 > pool->cap) {
        if (pool->cap > PY_SSIZE_T_MAX / 2 / (Py_ssize_t)sizeof(uint64_t)) { PyErr_NoMemory(); return -1; }
        Py_ssize_t cap = pool->cap ? pool->cap * 2 : 4096;
        uint64_t *iv = PyMem_Realloc(pool->iv, (size_t)cap * sizeof(uint64_t));
        if (!iv) { PyErr_NoMemory(); return -1; }
        pool->iv = iv;
        pool->cap = cap;
    }
    pool->iv[pool->size++] = start;
    pool->iv[pool->size++] = end;
    return 0;
}

/* Decode strings[index] (checked as in rle_string_total, and its runs must sum to pixels) into the pool. */
static int decode_mask(PyObject *strings, Py_ssize_t index, const char *what, uint64_t pixels, Pool *pool, Mask *mask) {
    const unsigned char *s;
    Py_ssize_t len, p = 0, m = 0;
    PyObject *tmp;
    if (string_chars(PyList_GET_ITEM(strings, index), what, index, &s, &len, &tmp) < 0) return -1;
    int64_t run_m2 = 0, run_m1 = 0;
    uint64_t pos = 0;
    mask->first = pool->size / 2;
    mask->count = 0;
    mask->area = 0;
    mask->irregular = 0;
    mask->run_first = mask->run_count = 0;
    while (p < len) {
        uint64_t x;
        if (read_token(s, len, &p, &x) < 0) goto corrupt;
        int64_t run = (int64_t)(m > 2 ? x + (uint64_t)run_m2 : x);
        if (run < 0 || (uint64_t)run > pixels - pos) goto corrupt;
        if (run == 0 && m > 0) mask->irregular = 1;
        if ((m & 1) && run > 0) { /* odd runs are foreground */
            if (pool_push(pool, pos, pos + (uint64_t)run) < 0) {
                Py_XDECREF(tmp);
                return -1;
            }
            mask->count++;
            mask->area += (uint64_t)run;
        }
        pos += (uint64_t)run;
        run_m2 = run_m1;
        run_m1 = run;
        m++;
    }
    if (pos != pixels) goto corrupt;
    if (mask->irregular && keep_runs(s, len, pool, mask) < 0) {
        Py_XDECREF(tmp);
        return -1;
    }
    Py_XDECREF(tmp);
    if (mask->count) {
        mask->lo = pool->iv[2 * mask->first];
        mask->hi = pool->iv[2 * (mask->first + mask->count) - 1];
    } else {
        mask->lo = mask->hi = 0;
    }
    return 0;
corrupt:
    Py_XDECREF(tmp);
    string_error(what, index, pixels);
    return -1;
}

/* maskApi.c rleIou's merge walk, literally (uint arithmetic included): it ends as soon as both masks are at a
 * zero-length run (or past their last run) at the same pixel, so with zero-length runs on both sides it can stop
 * before the end and count less than the true intersection and union. For the images the kernel takes
 * (fewer than 2**31 pixels) `ct` cannot wrap. */
static double walk_iou(const uint32_t *A, Py_ssize_t ka, const uint32_t *B, Py_ssize_t kb, int crowd, uint64_t det_area) {
    Py_ssize_t a = 1, b = 1;
    uint32_t c, ca = A[0], cb = B[0], ct = 1, i = 0, u = 0;
    int va = 0, vb = 0;
    while (ct > 0) {
        c = ca < cb ? ca : cb;
        if (va || vb) {
            u += c;
            if (va && vb) i += c;
        }
        ct = 0;
        ca -= c;
        if (!ca && a < ka) { ca = A[a++]; va = !va; }
        ct += ca;
        cb -= c;
        if (!cb && b < kb) { cb = B[b++]; vb = !vb; }
        ct += cb;
    }
    if (i == 0) return 0.0;
    if (crowd) u = (uint32_t)det_area; /* rleArea */
    return (double)i / (double)u;
}

/* maskApi.c rleIou: intersection over union as pixel counts, union = the detection's area for a crowd GT,
 * (double)i / (double)u, and 0 when nothing intersects (u = 1 there). Masks of one image share a size, so the
 * union is area(d) + area(g) - i, the count rleIou's merge walk arrives at. */
static double mask_iou(const Mask *d, const Mask *g, int crowd, const Pool *pool) {
    /* Only a walk over two masks that both have zero-length runs can end early (a mask without them is at a
     * zero-length run only when every pixel is consumed); rleIou's bounding-box test before the walk contains
     * every foreground pixel, so it changes nothing. */
    if (d->irregular && g->irregular)
        return walk_iou(pool->runs + d->run_first, d->run_count, pool->runs + g->run_first, g->run_count, crowd, d->area);
    const uint64_t *iv = pool->iv;
    if (!d->count || !g->count || d->hi <= g->lo || g->hi <= d->lo) return 0.0;
    const uint64_t *a = iv + 2 * d->first, *a_end = a + 2 * d->count;
    const uint64_t *b = iv + 2 * g->first, *b_end = b + 2 * g->count;
    uint64_t inter = 0;
    while (a < a_end && b < b_end) {
        uint64_t lo = a[0] > b[0] ? a[0] : b[0];
        uint64_t hi = a[1] < b[1] ? a[1] : b[1];
        if (hi > lo) inter += hi - lo;
        if (a[1] < b[1]) a += 2; else b += 2;
    }
    if (inter == 0) return 0.0;
    uint64_t uni = crowd ? d->area : d->area + g->area - inter;
    return (double)inter / (double)uni;
}

/* maskApi.c bbIou for [x, y, w, h] boxes, the same double expressions in the same order. */
static double box_iou(const double *D, const double *G, int crowd) {
    double ga = G[2] * G[3], da = D[2] * D[3];
    double w = fmin(D[2] + D[0], G[2] + G[0]) - fmax(D[0], G[0]);
    if (w <= 0) return 0.0;
    double h = fmin(D[3] + D[1], G[3] + G[1]) - fmax(D[1], G[1]);
    if (h <= 0) return 0.0;
    double i = w * h, u = crowd ? da : da + ga - i;
    return i / u;
}

/* ---------------------------------------------------------------- matching */

typedef struct {
    Py_ssize_t n_det, n_gt, n_area, n_thr;
    const uint8_t *gt_crowd, *gt_id_ok, *gt_ignored; /* [G], [G], [G, A] */
    const double *area_lo, *area_hi, *thr;            /* [A], [A], [T] */
    uint8_t *matched, *ignored;                       /* [N, A, T] */
    double *iou_out;                                  /* [N] */
    uint8_t *taken;                                   /* scratch [G] */
} Match;

static int out_of_range(const Match *mt, double area, Py_ssize_t a) { return area < mt->area_lo[a] || area > mt->area_hi[a]; }

/* COCOeval.evaluateImg for one (image, category): dets d0..d1 (score order), GTs g0..g1 (COCOeval order), ious
 * [D, G]. For each area range and threshold, detections in order take the unmatched (or crowd) non-ignored GT of
 * highest IoU >= the threshold (>=: ties go to the later GT), else the best such ignored GT; evaluateImg's stable
 * sort of GTs by `ignore` is what puts every non-ignored GT first. dtMatches holds the GT id, so a match to id 0
 * reads as unmatched; an unmatched detection outside the area range is ignored. */
static void match_block(const Match *mt, Py_ssize_t d0, Py_ssize_t d1, Py_ssize_t g0, Py_ssize_t g1, const double *ious,
                        const double *det_area) {
    Py_ssize_t A = mt->n_area, T = mt->n_thr, G = g1 - g0;
    for (Py_ssize_t d = d0; d < d1; d++) mt->iou_out[d] = NAN;
    for (Py_ssize_t a = 0; a < A; a++) {
        for (Py_ssize_t t = 0; t < T; t++) {
            memset(mt->taken, 0, (size_t)G);
            for (Py_ssize_t d = d0; d < d1; d++) {
                const double *row = ious + (d - d0) * G;
                Py_ssize_t m = -1;
                double best = mt->thr[t];
                for (int pass = 0; pass < 2 && m < 0; pass++) { /* pass 0: non-ignored GTs, pass 1: ignored */
                    for (Py_ssize_t g = 0; g < G; g++) {
                        if ((mt->gt_ignored[(g0 + g) * A + a] != 0) != pass) continue;
                        if (mt->taken[g] && !mt->gt_crowd[g0 + g]) continue;
                        if (row[g] < best) continue;
                        best = row[g];
                        m = g;
                    }
                }
                Py_ssize_t cell = (d * A + a) * T + t;
                int hit = m >= 0, ok = hit && mt->gt_id_ok[g0 + m];
                if (hit) mt->taken[m] = 1;
                mt->matched[cell] = (uint8_t)ok;
                mt->ignored[cell] = (uint8_t)((hit && mt->gt_ignored[(g0 + m) * A + a]) || (!ok && out_of_range(mt, det_area[d - d0], a)));
                if (a == 0 && t == 0 && ok) mt->iou_out[d] = row[m];
            }
        }
    }
}

static void unmatched_block(const Match *mt, Py_ssize_t d0, Py_ssize_t d1, const double *det_area) {
    Py_ssize_t A = mt->n_area, T = mt->n_thr;
    for (Py_ssize_t d = d0; d < d1; d++) {
        mt->iou_out[d] = NAN;
        for (Py_ssize_t a = 0; a < A; a++) {
            uint8_t out = (uint8_t)out_of_range(mt, det_area[d - d0], a);
            for (Py_ssize_t t = 0; t < T; t++) {
                mt->matched[(d * A + a) * T + t] = 0;
                mt->ignored[(d * A + a) * T + t] = out;
            }
        }
    }
}

/* The common arguments of match_segm and match_bbox, checked against each other. */
enum { B_CROWD, B_IDOK, B_GTIG, B_LO, B_HI, B_THR, B_MATCHED, B_IGNORED, B_IOU, B_BLOCKS, N_BUFS };

static int open_match(PyObject **objs, Buf *bufs, Py_ssize_t n_det, Py_ssize_t n_gt, Py_ssize_t block_width, Match *mt) {
    for (int i = 0; i < N_BUFS; i++) bufs[i].held = 0;
    if (get_buf(objs[B_LO], &bufs[B_LO], 'f', -1, 0, "area_lo") < 0) return -1;
    Py_ssize_t A = items(&bufs[B_LO]);
    if (get_buf(objs[B_THR], &bufs[B_THR], 'f', -1, 0, "thresholds") < 0) return -1;
    Py_ssize_t T = items(&bufs[B_THR]);
    Py_ssize_t n_gt_a, n_det_a, n_det_at;
    if (mul_count(n_gt, A, &n_gt_a, "gt_ignored") < 0 || mul_count(n_det, A, &n_det_a, "det_matched") < 0 ||
        mul_count(n_det_a, T, &n_det_at, "det_matched") < 0)
        return -1;
    if (get_buf(objs[B_HI], &bufs[B_HI], 'f', A, 0, "area_hi") < 0 || get_buf(objs[B_CROWD], &bufs[B_CROWD], 'b', n_gt, 0, "gt_crowd") < 0 ||
        get_buf(objs[B_IDOK], &bufs[B_IDOK], 'b', n_gt, 0, "gt_id_nonzero") < 0 ||
        get_buf(objs[B_GTIG], &bufs[B_GTIG], 'b', n_gt_a, 0, "gt_ignored") < 0 ||
        get_buf(objs[B_MATCHED], &bufs[B_MATCHED], 'b', n_det_at, 1, "det_matched") < 0 ||
        get_buf(objs[B_IGNORED], &bufs[B_IGNORED], 'b', n_det_at, 1, "det_ignored") < 0 ||
        get_buf(objs[B_IOU], &bufs[B_IOU], 'f', n_det, 1, "det_iou") < 0 || get_buf(objs[B_BLOCKS], &bufs[B_BLOCKS], 'i', -1, 0, "blocks") < 0)
        return -1;
    if (items(&bufs[B_BLOCKS]) % block_width) {
        PyErr_Format(PyExc_ValueError, "blocks: expected rows of %zd integers", block_width);
        return -1;
    }
    mt->n_det = n_det;
    mt->n_gt = n_gt;
    mt->n_area = A;
    mt->n_thr = T;
    mt->gt_crowd = bufs[B_CROWD].view.buf;
    mt->gt_id_ok = bufs[B_IDOK].view.buf;
    mt->gt_ignored = bufs[B_GTIG].view.buf;
    mt->area_lo = bufs[B_LO].view.buf;
    mt->area_hi = bufs[B_HI].view.buf;
    mt->thr = bufs[B_THR].view.buf;
    mt->matched = bufs[B_MATCHED].view.buf;
    mt->ignored = bufs[B_IGNORED].view.buf;
    mt->iou_out = bufs[B_IOU].view.buf;
    mt->taken = NULL;
    return 0;
}

/* Blocks must tile the detections (and GTs) in order: d0 = previous d1, starting at 0 and ending at n. */
static int check_block(const int64_t *row, Py_ssize_t i, int64_t *next_d, int64_t *next_g, Py_ssize_t n_det, Py_ssize_t n_gt) {
    int64_t d0 = row[0], d1 = row[1], g0 = row[2], g1 = row[3];
    if (d0 != *next_d || d1 < d0 || d1 > n_det || g0 != *next_g || g1 < g0 || g1 > n_gt) {
        PyErr_Format(PyExc_ValueError, "blocks[%zd]: det/gt ranges must tile the inputs in order", i);
        return -1;
    }
    *next_d = d1;
    *next_g = g1;
    return 0;
}

static int check_tiled(int64_t next_d, int64_t next_g, Py_ssize_t n_det, Py_ssize_t n_gt) {
    if (next_d != n_det || next_g != n_gt) {
        PyErr_SetString(PyExc_ValueError, "blocks: det/gt ranges do not cover the inputs");
        return -1;
    }
    return 0;
}

typedef struct {
    double *data;
    size_t cap;
} Scratch;

static double *scratch(Scratch *s, size_t n) {
    if (n > SIZE_MAX / 2 / sizeof(double)) { PyErr_NoMemory(); return NULL; }
    if (n > s->cap) {
        size_t cap = n > 2 * s->cap ? n : 2 * s->cap;
        double *data = PyMem_Realloc(s->data, cap * sizeof(double));
        if (!data) { PyErr_NoMemory(); return NULL; }
        s->data = data;
        s->cap = cap;
    }
    return s->data;
}

/* The keyword names of the common arguments, in the order of the B_* enum. */
#define MATCH_NAMES "gt_crowd", "gt_id_nonzero", "gt_ignored", "area_lo", "area_hi", "thresholds", "det_matched", "det_ignored", "det_iou", "blocks"
#define MATCH_ARGS &objs[B_CROWD], &objs[B_IDOK], &objs[B_GTIG], &objs[B_LO], &objs[B_HI], &objs[B_THR], &objs[B_MATCHED], &objs[B_IGNORED], &objs[B_IOU], &objs[B_BLOCKS]

static PyObject *py_match_segm(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"det_strings", "gt_strings", MATCH_NAMES, NULL};
    PyObject *dets = NULL, *gts = NULL, *objs[N_BUFS] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$O!O!OOOOOOOOOO:match_segm", names, &PyList_Type, &dets, &PyList_Type, &gts, MATCH_ARGS))
        return NULL;
    PyObject *given[] = {dets, gts, objs[0], objs[1], objs[2], objs[3], objs[4], objs[5], objs[6], objs[7], objs[8], objs[9]};
    if (all_given(given, names, 12) < 0) return NULL;
    Py_ssize_t n_det = PyList_GET_SIZE(dets), n_gt = PyList_GET_SIZE(gts);
    Buf bufs[N_BUFS];
    Match mt;
    Pool pool = {NULL, 0, 0, NULL, 0, 0};
    Mask *masks = NULL;
    Scratch ious = {NULL, 0}, areas = {NULL, 0};
    PyObject *result = NULL;
    mt.taken = NULL;
    if (open_match(objs, bufs, n_det, n_gt, 6, &mt) < 0) goto done;
    mt.taken = PyMem_Malloc((size_t)(n_gt ? n_gt : 1));
    if (!mt.taken) { PyErr_NoMemory(); goto done; }
    const int64_t *blocks = bufs[B_BLOCKS].view.buf;
    Py_ssize_t n_blocks = items(&bufs[B_BLOCKS]) / 6;
    int64_t next_d = 0, next_g = 0;
    Py_ssize_t most = 1; /* the largest D + G of a block: the masks of one block */
    for (Py_ssize_t b = 0; b < n_blocks; b++) {
        const int64_t *row = blocks + 6 * b;
        /* Below 2**31 pixels rleIou's uint sums (ct = ca + cb) cannot wrap; larger images go to pycocotools
         * itself (segpipe.evaluators.kernel.MAX_PIXELS). */
        if (row[0] < 0 || row[1] < 0 || (row[0] && row[1] > (MAX_PIXELS - 1) / row[0])) {
            PyErr_Format(PyExc_ValueError, "blocks[%zd]: image height/width negative or of %lld pixels or more", b, (long long)MAX_PIXELS);
            goto done;
        }
        if (check_block(row + 2, b, &next_d, &next_g, n_det, n_gt) < 0) goto done;
        if (row[3] - row[2] + row[5] - row[4] > most) most = (Py_ssize_t)(row[3] - row[2] + row[5] - row[4]);
    }
    if (check_tiled(next_d, next_g, n_det, n_gt) < 0) goto done;
    masks = (size_t)most > SIZE_MAX / sizeof(Mask) ? NULL : PyMem_Malloc((size_t)most * sizeof(Mask));
    if (!masks) { PyErr_NoMemory(); goto done; }
    for (Py_ssize_t b = 0; b < n_blocks; b++) {
        const int64_t *row = blocks + 6 * b;
        uint64_t pixels = (uint64_t)row[0] * (uint64_t)row[1];
        Py_ssize_t d0 = row[2], d1 = row[3], g0 = row[4], g1 = row[5], D = d1 - d0, G = g1 - g0;
        pool.size = pool.run_size = 0;
        /* every GT string is decoded, also without detections: this is where GT strings are checked */
        for (Py_ssize_t g = 0; g < G; g++)
            if (decode_mask(gts, g0 + g, "gt_strings", pixels, &pool, &masks[D + g]) < 0) goto done;
        if (!D) continue;
        double *det_area = scratch(&areas, (size_t)D);
        if (!det_area) goto done;
        for (Py_ssize_t d = 0; d < D; d++) {
            if (decode_mask(dets, d0 + d, "det_strings", pixels, &pool, &masks[d]) < 0) goto done;
            det_area[d] = (double)masks[d].area; /* loadRes: area = maskUtils.area(segmentation) */
        }
        if (!G) {
            unmatched_block(&mt, d0, d1, det_area);
            continue;
        }
        Py_ssize_t cells;
        if (mul_count(D, G, &cells, "ious") < 0) goto done;
        double *iou = scratch(&ious, (size_t)cells);
        if (!iou) goto done;
        for (Py_ssize_t d = 0; d < D; d++)
            for (Py_ssize_t g = 0; g < G; g++) iou[d * G + g] = mask_iou(&masks[d], &masks[D + g], mt.gt_crowd[g0 + g], &pool);
        match_block(&mt, d0, d1, g0, g1, iou, det_area);
    }
    result = Py_None;
    Py_INCREF(result);
done:
    for (int i = 0; i < N_BUFS; i++) release(&bufs[i]);
    PyMem_Free(mt.taken);
    PyMem_Free(masks);
    PyMem_Free(pool.iv);
    PyMem_Free(pool.runs);
    PyMem_Free(ious.data);
    PyMem_Free(areas.data);
    return result;
}

static PyObject *py_match_bbox(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"det_boxes", "det_area", "gt_boxes", MATCH_NAMES, NULL};
    PyObject *det_box_obj = NULL, *det_area_obj = NULL, *gt_box_obj = NULL, *objs[N_BUFS] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$OOOOOOOOOOOOO:match_bbox", names, &det_box_obj, &det_area_obj, &gt_box_obj, MATCH_ARGS))
        return NULL;
    PyObject *given[] = {det_box_obj, det_area_obj, gt_box_obj, objs[0], objs[1], objs[2], objs[3], objs[4], objs[5], objs[6], objs[7], objs[8], objs[9]};
    if (all_given(given, names, 13) < 0) return NULL;
    Buf bufs[N_BUFS], det_box = {.held = 0}, det_area = {.held = 0}, gt_box = {.held = 0};
    Match mt;
    Scratch ious = {NULL, 0};
    PyObject *result = NULL;
    mt.taken = NULL;
    for (int i = 0; i < N_BUFS; i++) bufs[i].held = 0;
    if (get_buf(det_area_obj, &det_area, 'f', -1, 0, "det_area") < 0) goto done;
    Py_ssize_t n_det = items(&det_area), n_det_4;
    if (mul_count(n_det, 4, &n_det_4, "det_boxes") < 0) goto done;
    if (get_buf(det_box_obj, &det_box, 'f', n_det_4, 0, "det_boxes") < 0 || get_buf(gt_box_obj, &gt_box, 'f', -1, 0, "gt_boxes") < 0) goto done;
    if (items(&gt_box) % 4) {
        PyErr_SetString(PyExc_ValueError, "gt_boxes: expected rows of 4 numbers");
        goto done;
    }
    Py_ssize_t n_gt = items(&gt_box) / 4;
    if (open_match(objs, bufs, n_det, n_gt, 4, &mt) < 0) goto done;
    mt.taken = PyMem_Malloc((size_t)(n_gt ? n_gt : 1));
    if (!mt.taken) { PyErr_NoMemory(); goto done; }
    const int64_t *blocks = bufs[B_BLOCKS].view.buf;
    Py_ssize_t n_blocks = items(&bufs[B_BLOCKS]) / 4;
    int64_t next_d = 0, next_g = 0;
    for (Py_ssize_t b = 0; b < n_blocks; b++)
        if (check_block(blocks + 4 * b, b, &next_d, &next_g, n_det, n_gt) < 0) goto done;
    if (check_tiled(next_d, next_g, n_det, n_gt) < 0) goto done;
    const double *db = det_box.view.buf, *gb = gt_box.view.buf, *da = det_area.view.buf;
    for (Py_ssize_t b = 0; b < n_blocks; b++) {
        const int64_t *row = blocks + 4 * b;
        Py_ssize_t d0 = row[0], d1 = row[1], g0 = row[2], g1 = row[3], D = d1 - d0, G = g1 - g0;
        if (!D) continue;
        if (!G) {
            unmatched_block(&mt, d0, d1, da + d0);
            continue;
        }
        Py_ssize_t cells;
        if (mul_count(D, G, &cells, "ious") < 0) goto done;
        double *iou = scratch(&ious, (size_t)cells);
        if (!iou) goto done;
        for (Py_ssize_t d = 0; d < D; d++)
            for (Py_ssize_t g = 0; g < G; g++) iou[d * G + g] = box_iou(db + 4 * (d0 + d), gb + 4 * (g0 + g), mt.gt_crowd[g0 + g]);
        match_block(&mt, d0, d1, g0, g1, iou, da + d0);
    }
    result = Py_None;
    Py_INCREF(result);
done:
    for (int i = 0; i < N_BUFS; i++) release(&bufs[i]);
    release(&det_box);
    release(&det_area);
    release(&gt_box);
    PyMem_Free(mt.taken);
    PyMem_Free(ious.data);
    return result;
}

/* ---------------------------------------------------------------- accumulate */

/* COCOeval.accumulate's inner loop for L lanes (one per category, area range, maxDets and IoU threshold) of n
 * detections each, in score order: the running true/false positive counts, recall and precision at every
 * detection (tp / npig and tp / (fp + tp + eps), the same double operations in the same order as numpy's on
 * pycocotools' float64 cumsums, so the same floats), the right-to-left running maximum of precision, and precision
 * at each recall threshold: searchsorted(rc, thresholds, side='left'), 0 past the end. The counts are exact in a
 * double (n < 2**53). */
static PyObject *py_accumulate_lanes(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"tps", "fps", "npig", "thresholds", "precision", "recall", NULL};
    PyObject *objs[6] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$OOOOOO:accumulate_lanes", names, &objs[0], &objs[1], &objs[2], &objs[3], &objs[4],
                                     &objs[5]))
        return NULL;
    if (all_given(objs, names, 6) < 0) return NULL;
    Buf tps = {.held = 0}, fps = {.held = 0}, npig = {.held = 0}, thr = {.held = 0}, prec = {.held = 0}, rec = {.held = 0};
    double *rc = NULL, *pr = NULL;
    PyObject *result = NULL;
    if (get_buf(objs[2], &npig, 'f', -1, 0, "npig") < 0 || get_buf(objs[3], &thr, 'f', -1, 0, "thresholds") < 0) goto done;
    Py_ssize_t L = items(&npig), R = items(&thr), L_n, L_r;
    if (get_buf(objs[0], &tps, 'b', -1, 0, "tps") < 0) goto done;
    Py_ssize_t n = L ? items(&tps) / L : 0;
    if (mul_count(L, n, &L_n, "tps") < 0 || mul_count(L, R, &L_r, "precision") < 0) goto done;
    if (get_buf(objs[1], &fps, 'b', L_n, 0, "fps") < 0 || get_buf(objs[4], &prec, 'f', L_r, 1, "precision") < 0 ||
        get_buf(objs[5], &rec, 'f', L, 1, "recall") < 0)
        goto done;
    if (items(&tps) != L_n) {
        PyErr_SetString(PyExc_ValueError, "tps: expected L rows of n detections");
        goto done;
    }
    if ((size_t)n > SIZE_MAX / sizeof(double)) { PyErr_NoMemory(); goto done; }
    rc = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(double));
    pr = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(double));
    if (!rc || !pr) { PyErr_NoMemory(); goto done; }
    const unsigned char *tp_in = tps.view.buf, *fp_in = fps.view.buf;
    const double *np_ig = npig.view.buf, *thresholds = thr.view.buf;
    double *precision = prec.view.buf, *recall = rec.view.buf;
    const double eps = 2.220446049250313e-16; /* np.spacing(1) */
    /* Only the true positives need the divisions. Recall changes only at a true positive, so the first detection
     * whose recall reaches a threshold is detection 0 or a true positive. After a false positive precision is no
     * larger than just before it (same tp, a larger denominator: rounding is monotone), and after a detection that
     * is neither it is the same float, so the running maximum from the right at detection i is the larger of
     * precision at i and the running maximum over the true positives after i. rc and pr below hold recall and
     * precision at the true positives only, computed by the same expressions with the same counts: the floats
     * pycocotools gets at those detections, and the maxima pick among the same values. */
    for (Py_ssize_t l = 0; l < L; l++) {
        const unsigned char *tl = tp_in + l * n, *fl = fp_in + l * n; /* l * n < L * n, checked above; l * R likewise */
        double tp = 0.0, fp = 0.0, *q = precision + l * R;
        Py_ssize_t k = 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            fp += fl[i] ? 1.0 : 0.0;
            if (tl[i]) {
                tp += 1.0;
                rc[k] = tp / np_ig[l];
                pr[k] = tp / ((fp + tp) + eps);
                k++;
            }
        }
        recall[l] = n ? tp / np_ig[l] : 0.0; /* recall at the last detection: tp / npig with the final count */
        for (Py_ssize_t j = k - 1; j > 0; j--)
            if (pr[j] > pr[j - 1]) pr[j - 1] = pr[j];
        /* detection 0 when it is not a true positive: recall 0, precision 0 / ((fp + 0) + eps) */
        int first_is_tp = n && tl[0];
        double rc0 = 0.0 / np_ig[l], pr0 = n ? 0.0 / (((fl[0] ? 1.0 : 0.0) + 0.0) + eps) : 0.0;
        if (!first_is_tp && k && pr[0] > pr0) pr0 = pr[0];
        Py_ssize_t j = 0;
        for (Py_ssize_t r = 0; r < R; r++) {
            if (n && !first_is_tp && rc0 >= thresholds[r]) {
                q[r] = pr0;
                continue;
            }
            while (j < k && rc[j] < thresholds[r]) j++;
            q[r] = j < k ? pr[j] : 0.0;
        }
    }
    result = Py_None;
    Py_INCREF(result);
done:
    release(&tps);
    release(&fps);
    release(&npig);
    release(&thr);
    release(&prec);
    release(&rec);
    PyMem_Free(rc);
    PyMem_Free(pr);
    return result;
}

/* ---------------------------------------------------------------- result columns */

/* An exact int (a bool is not one) that fits int64, into *out; 0 otherwise (an overflow is cleared, not raised). */
static int exact_int(PyObject *v, int64_t *out) {
    if (!v || !PyLong_CheckExact(v)) return 0;
    int overflow = 0;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow || (x == -1 && PyErr_Occurred())) { PyErr_Clear(); return 0; }
    *out = (int64_t)x;
    return 1;
}

/* One pass over a COCO results list, the common form of each result read into columns (what
 * segpipe/evaluators/instance/coco_results.py `_plain_columns` reads with one map() per field when there is no kernel):
 * ok[i] = 1 when results[i] is a dict with exact int image_id and category_id (int64), an exact float score and,
 * for segm, a dict segmentation whose size is a list of two exact ints and whose counts is a str or bytes (returned
 * in the list, None elsewhere); for bbox a list bbox of four exact floats or ints (plain[i]: all four floats).
 * Everything else about a row (ids that exist, sizes that match, strings that decode, finite numbers) is checked
 * over the columns by the caller. Returns the counts list (segm) or None. A str counts is returned as it is, not
 * decoded: rle_totals and match_segm read it through string_chars (UTF-8, "surrogatepass"), so a lone surrogate is
 * a corrupt string there, as on the numpy path. */
static PyObject *py_result_columns(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"results", "segm", "image_id", "category_id", "score", "ok", "plain", "sizes", "boxes", NULL};
    PyObject *results = NULL, *segm_obj = NULL, *objs[7] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$O!OOOOOOOO:result_columns", names, &PyList_Type, &results, &segm_obj, &objs[0],
                                     &objs[1], &objs[2], &objs[3], &objs[4], &objs[5], &objs[6]))
        return NULL;
    PyObject *given[] = {results, segm_obj, objs[0], objs[1], objs[2], objs[3], objs[4], objs[5], objs[6]};
    if (all_given(given, names, 9) < 0) return NULL;
    int segm = PyObject_IsTrue(segm_obj);
    if (segm < 0) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(results), n_2, n_4;
    Buf b[7];
    const char kinds[7] = {'i', 'i', 'f', 'b', 'b', 'i', 'f'};
    const char **buf_names = (const char **)names + 2;
    PyObject *k_image = NULL, *k_cat = NULL, *k_score = NULL, *k_segm = NULL, *k_size = NULL, *k_counts = NULL, *k_bbox = NULL;
    PyObject *counts = NULL, *result = NULL;
    for (int i = 0; i < 7; i++) b[i].held = 0;
    if (mul_count(n, 2, &n_2, "sizes") < 0 || mul_count(n, 4, &n_4, "boxes") < 0) goto done;
    const Py_ssize_t counts_of[7] = {n, n, n, n, n, segm ? n_2 : 0, segm ? 0 : n_4}; /* sizes: segm only; boxes: bbox only */
    for (int i = 0; i < 7; i++)
        if (get_buf(objs[i], &b[i], kinds[i], counts_of[i], 1, buf_names[i]) < 0) goto done;
    k_image = PyUnicode_InternFromString("image_id");
    k_cat = PyUnicode_InternFromString("category_id");
    k_score = PyUnicode_InternFromString("score");
    k_segm = PyUnicode_InternFromString("segmentation");
    k_size = PyUnicode_InternFromString("size");
    k_counts = PyUnicode_InternFromString("counts");
    k_bbox = PyUnicode_InternFromString("bbox");
    if (!k_image || !k_cat || !k_score || !k_segm || !k_size || !k_counts || !k_bbox) goto done;
    if (segm && !(counts = PyList_New(n))) goto done;
    int64_t *image_id = b[0].view.buf, *category = b[1].view.buf, *sizes = b[5].view.buf;
    double *score = b[2].view.buf, *boxes = b[6].view.buf;
    unsigned char *ok = b[3].view.buf, *plain = b[4].view.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *r = PyList_GET_ITEM(results, i), *v, *found = Py_None;
        int good = PyDict_CheckExact(r);
        image_id[i] = category[i] = 0;
        score[i] = 0.0;
        plain[i] = 0;
        if (segm) sizes[2 * i] = sizes[2 * i + 1] = 0;
        else boxes[4 * i] = boxes[4 * i + 1] = boxes[4 * i + 2] = boxes[4 * i + 3] = 0.0;
        if (good) {
            good = exact_int(PyDict_GetItemWithError(r, k_image), &image_id[i]) &&
                   exact_int(PyDict_GetItemWithError(r, k_cat), &category[i]);
            v = PyDict_GetItemWithError(r, k_score);
            if (good && v && PyFloat_CheckExact(v)) score[i] = PyFloat_AS_DOUBLE(v);
            else good = 0;
        }
        if (good && segm) {
            PyObject *sg = PyDict_GetItemWithError(r, k_segm);
            good = sg && PyDict_CheckExact(sg);
            PyObject *size = good ? PyDict_GetItemWithError(sg, k_size) : NULL;
            good = good && size && PyList_CheckExact(size) && PyList_GET_SIZE(size) == 2 &&
                   exact_int(PyList_GET_ITEM(size, 0), &sizes[2 * i]) && exact_int(PyList_GET_ITEM(size, 1), &sizes[2 * i + 1]);
            v = good ? PyDict_GetItemWithError(sg, k_counts) : NULL;
            good = good && v && (PyUnicode_CheckExact(v) || PyBytes_CheckExact(v));
            if (good) found = v;
        } else if (good) {
            PyObject *bb = PyDict_GetItemWithError(r, k_bbox);
            good = bb && PyList_CheckExact(bb) && PyList_GET_SIZE(bb) == 4;
            int floats = 1;
            for (Py_ssize_t j = 0; good && j < 4; j++) {
                v = PyList_GET_ITEM(bb, j);
                if (PyFloat_CheckExact(v)) boxes[4 * i + j] = PyFloat_AS_DOUBLE(v);
                else if (PyLong_CheckExact(v)) {
                    floats = 0;
                    boxes[4 * i + j] = PyLong_AsDouble(v);
                    if (boxes[4 * i + j] == -1.0 && PyErr_Occurred()) { PyErr_Clear(); good = 0; } /* beyond a double */
                } else good = 0;
            }
            plain[i] = (unsigned char)(good && floats);
        }
        if (PyErr_Occurred()) goto done; /* PyDict_GetItemWithError: a key's __eq__ raised (never for a JSON dict) */
        ok[i] = (unsigned char)good;
        if (segm) {
            Py_INCREF(found);
            PyList_SET_ITEM(counts, i, found);
        }
    }
    if (segm) {
        result = counts;
        counts = NULL;
    } else {
        result = Py_None;
        Py_INCREF(result);
    }
done:
    for (int i = 0; i < 7; i++) release(&b[i]);
    Py_XDECREF(counts);
    Py_XDECREF(k_image);
    Py_XDECREF(k_cat);
    Py_XDECREF(k_score);
    Py_XDECREF(k_segm);
    Py_XDECREF(k_size);
    Py_XDECREF(k_counts);
    Py_XDECREF(k_bbox);
    return result;
}

/* Keyword-only arguments; the signatures and types are in _kernel.pyi, the typed entry points in kernel.py. */
static PyMethodDef methods[] = {
    {"rle_totals", (PyCFunction)(void (*)(void))py_rle_totals, METH_VARARGS | METH_KEYWORDS,
     "rle_totals(*, strings, out) -> None: pixel total of each compressed RLE string into out, -1 when corrupt."},
    {"match_segm", (PyCFunction)(void (*)(void))py_match_segm, METH_VARARGS | METH_KEYWORDS,
     "match_segm(*, det_strings, gt_strings, gt_crowd, gt_id_nonzero, gt_ignored, area_lo, area_hi, thresholds, det_matched, "
     "det_ignored, det_iou, blocks) -> None: COCOeval's IoUs and greedy matches of compressed RLE masks."},
    {"match_bbox", (PyCFunction)(void (*)(void))py_match_bbox, METH_VARARGS | METH_KEYWORDS,
     "match_bbox(*, det_boxes, det_area, gt_boxes, gt_crowd, gt_id_nonzero, gt_ignored, area_lo, area_hi, thresholds, det_matched, "
     "det_ignored, det_iou, blocks) -> None: COCOeval's IoUs and greedy matches of [x, y, w, h] boxes."},
    {"accumulate_lanes", (PyCFunction)(void (*)(void))py_accumulate_lanes, METH_VARARGS | METH_KEYWORDS,
     "accumulate_lanes(*, tps, fps, npig, thresholds, precision, recall) -> None: COCOeval.accumulate's precision at the recall "
     "thresholds and final recall of each lane."},
    {"result_columns", (PyCFunction)(void (*)(void))py_result_columns, METH_VARARGS | METH_KEYWORDS,
     "result_columns(*, results, segm, image_id, category_id, score, ok, plain, sizes, boxes) -> list | None: the common form of "
     "each COCO result read into columns; the counts list (segm) or None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernel", "COCO RLE totals and COCOeval matching, compiled.", -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__kernel(void) { return PyModule_Create(&module); }
