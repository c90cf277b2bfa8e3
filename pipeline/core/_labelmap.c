/* segpipe.core._labelmap: the two inner loops of semantic evaluation, compiled. Optional: without it
 * (no C compiler, or SEGPIPE_NO_KERNEL=1) segpipe decodes label maps with OpenCV/Pillow and counts with
 * cv2.calcHist, which give the same arrays and counts (segpipe/core/label_maps.py, confusion.py).
 *
 * unfilter: the PNG row filters of an 8-bit, one-sample-per-pixel, non-interlaced image (greyscale or palette
 *   indices), applied to the inflated IDAT stream. Filter types and the Paeth predictor as the PNG specification
 *   defines them: https://www.w3.org/TR/png/#9Filter-types and https://www.w3.org/TR/png/#9Filter-type-4-Paeth
 *   The inflating is done by the caller (zlib or libdeflate, both release the GIL), the chunk checks too.
 * confusion_u8: the confusion counts of two uint8 label maps (segpipe/evaluators/semantic/confusion.py's convention).
 *
 * Both release the GIL, so threads over files use every core. Buffers are checked against the sizes given
 * (a wrong call raises instead of reading or writing out of bounds).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

static int paeth(int a, int b, int c) {
    int pa = abs(b - c), pb = abs(a - c), pc = abs(a + b - 2 * c);
    if (pa <= pb && pa <= pc) return a;
    return pb <= pc ? b : c;
}

/* Sub rows are a running sum of bytes (mod 256): 16 at a time as a prefix sum in a vector register, then the
 * last byte of each block carried into the next. */
static void unsub(const uint8_t *src, uint8_t *cur, Py_ssize_t width) {
    Py_ssize_t x = 0;
    uint8_t left = 0;
#if defined(__SSE2__)
    __m128i carry = _mm_setzero_si128();
    for (; x + 16 <= width; x += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(src + x));
        v = _mm_add_epi8(v, _mm_slli_si128(v, 1));
        v = _mm_add_epi8(v, _mm_slli_si128(v, 2));
        v = _mm_add_epi8(v, _mm_slli_si128(v, 4));
        v = _mm_add_epi8(v, _mm_slli_si128(v, 8));
        v = _mm_add_epi8(v, carry);
        _mm_storeu_si128((__m128i *)(cur + x), v);
        __m128i last = _mm_srli_si128(v, 15); /* the block's last byte, broadcast to every lane */
        last = _mm_unpacklo_epi8(last, last);
        last = _mm_unpacklo_epi16(last, last);
        carry = _mm_shuffle_epi32(last, 0);
    }
    if (x) left = cur[x - 1];
#endif
    for (; x < width; x++) cur[x] = left = (uint8_t)(src[x] + left);
}

/* 0 on success, -1 when a row's filter byte is not 0..4 (the caller then leaves the file to the general decoder). */
static int unfilter_rows(const uint8_t *raw, uint8_t *out, Py_ssize_t width, Py_ssize_t height, const uint8_t *zeros) {
    for (Py_ssize_t y = 0; y < height; y++) {
        const uint8_t *src = raw + y * (width + 1) + 1;
        uint8_t *cur = out + y * width;
        const uint8_t *up = y ? cur - width : zeros;
        switch (raw[y * (width + 1)]) {
        case 0:
            memcpy(cur, src, (size_t)width);
            break;
        case 1: /* Sub */
            unsub(src, cur, width);
            break;
        case 2: { /* Up */
            Py_ssize_t x = 0;
#if defined(__SSE2__)
            for (; x + 16 <= width; x += 16) {
                __m128i v = _mm_add_epi8(_mm_loadu_si128((const __m128i *)(src + x)), _mm_loadu_si128((const __m128i *)(up + x)));
                _mm_storeu_si128((__m128i *)(cur + x), v);
            }
#endif
            for (; x < width; x++) cur[x] = (uint8_t)(src[x] + up[x]);
            break;
        }
        case 3: { /* Average */
            unsigned left = 0;
            for (Py_ssize_t x = 0; x < width; x++) cur[x] = (uint8_t)(left = (uint8_t)(src[x] + ((left + up[x]) >> 1)));
            break;
        }
        case 4: { /* Paeth */
            int left = 0, upleft = 0;
            for (Py_ssize_t x = 0; x < width; x++) {
                int above = up[x];
                left = (uint8_t)(src[x] + paeth(left, above, upleft));
                cur[x] = (uint8_t)left;
                upleft = above;
            }
            break;
        }
        default:
            return -1;
        }
    }
    return 0;
}

static PyObject *py_unfilter(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"raw", "out", "width", "height", NULL};
    Py_buffer raw = {0}, out = {0};
    Py_ssize_t width = -1, height = -1;
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$y*w*nn:unfilter", kwlist, &raw, &out, &width, &height)) return NULL;
    PyObject *result = NULL;
    if (raw.buf == NULL || out.buf == NULL || width < 1 || height < 1) {
        PyErr_SetString(PyExc_TypeError, "unfilter: raw, out, width >= 1 and height >= 1 are required");
        goto done;
    }
    if (width >= PY_SSIZE_T_MAX / height - height) {
        PyErr_SetString(PyExc_OverflowError, "unfilter: width x height overflows");
        goto done;
    }
    if (raw.len != height * (width + 1) || out.len != height * width) {
        PyErr_Format(PyExc_ValueError, "unfilter: expected %zd raw and %zd out bytes, got %zd and %zd", height * (width + 1),
                     height * width, raw.len, out.len);
        goto done;
    }
    uint8_t *zeros = calloc((size_t)width, 1);
    if (zeros == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = unfilter_rows(raw.buf, out.buf, width, height, zeros);
    Py_END_ALLOW_THREADS
    free(zeros);
    result = PyBool_FromLong(status == 0);
done:
    if (raw.buf) PyBuffer_Release(&raw);
    if (out.buf) PyBuffer_Release(&out);
    return result;
}

/* Confusion counts of two equally long uint8 label maps, added into out [n, n + 1] (rows = GT class; column n: a
 * labelled GT pixel predicted as `ignore`). GT pixels equal to `ignore` are left out. Returns -1, adding nothing,
 * when a value in either map is neither a class nor `ignore` (the caller then finds and names it).
 * Every byte is first mapped to its class, n for ignore or n + 1 for out of range, so the counts fit in a small
 * table. Label maps are long runs of one class, and a histogram that increments the same bin pixel after pixel
 * waits on its own store each time: four tables take turns, so neighbouring pixels never wait on each other. */
static int count_confusion(const uint8_t *gt, const uint8_t *pred, Py_ssize_t len, int n, int ignore, int64_t *hist, int64_t *out) {
    const int m = n + 2;
    int32_t lut[256], row[256]; /* class of a byte value, and its row offset in a table */
    for (int v = 0; v < 256; v++) {
        lut[v] = v < n ? v : (v == ignore ? n : n + 1);
        row[v] = lut[v] * m;
    }
    const Py_ssize_t mm = (Py_ssize_t)m * m;
    int64_t *h0 = hist, *h1 = hist + mm, *h2 = hist + 2 * mm, *h3 = hist + 3 * mm;
    Py_ssize_t i = 0;
    for (; i + 8 <= len; i += 8) { /* 8 pixels per load of each map */
        uint64_t a, b;
        memcpy(&a, gt + i, 8);
        memcpy(&b, pred + i, 8);
        h0[row[a & 0xff] + lut[b & 0xff]]++;
        h1[row[(a >> 8) & 0xff] + lut[(b >> 8) & 0xff]]++;
        h2[row[(a >> 16) & 0xff] + lut[(b >> 16) & 0xff]]++;
        h3[row[(a >> 24) & 0xff] + lut[(b >> 24) & 0xff]]++;
        h0[row[(a >> 32) & 0xff] + lut[(b >> 32) & 0xff]]++;
        h1[row[(a >> 40) & 0xff] + lut[(b >> 40) & 0xff]]++;
        h2[row[(a >> 48) & 0xff] + lut[(b >> 48) & 0xff]]++;
        h3[row[a >> 56] + lut[b >> 56]]++;
    }
    for (; i < len; i++) h0[row[gt[i]] + lut[pred[i]]]++;
    for (Py_ssize_t k = 0; k < mm; k++) h0[k] += h1[k] + h2[k] + h3[k];
    for (int j = 0; j < m; j++) {
        if (hist[(n + 1) * m + j] || hist[j * m + n + 1]) return -1;
    }
    for (int r = 0; r < n; r++) {
        for (int c = 0; c <= n; c++) out[r * (n + 1) + c] += hist[r * m + c];
    }
    return 0;
}

static PyObject *py_confusion_u8(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"gt", "pred", "num_classes", "ignore", "out", NULL};
    Py_buffer gt = {0}, pred = {0}, out = {0};
    int n = -1, ignore = -1;
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$y*y*iiw*:confusion_u8", kwlist, &gt, &pred, &n, &ignore, &out)) return NULL;
    PyObject *result = NULL;
    if (gt.buf == NULL || pred.buf == NULL || out.buf == NULL || n < 1 || n > 256 || ignore < -1 || ignore > 255 || (ignore >= 0 && ignore < n)) {
        PyErr_SetString(PyExc_ValueError, "confusion_u8: gt, pred, out, 1 <= num_classes <= 256 and ignore -1 or 0..255 outside the classes are required");
        goto done;
    }
    if (gt.len != pred.len || out.len != (Py_ssize_t)((size_t)n * (n + 1) * sizeof(int64_t)) || ((uintptr_t)out.buf % sizeof(int64_t)) != 0) {
        PyErr_Format(PyExc_ValueError, "confusion_u8: gt and pred must be equally long (%zd, %zd) and out an aligned int64 [%d, %d]",
                     gt.len, pred.len, n, n + 1);
        goto done;
    }
    int64_t *hist = calloc((size_t)4 * (n + 2) * (n + 2), sizeof(int64_t));
    if (hist == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = count_confusion(gt.buf, pred.buf, gt.len, n, ignore, hist, out.buf);
    Py_END_ALLOW_THREADS
    free(hist);
    result = PyBool_FromLong(status == 0);
done:
    if (gt.buf) PyBuffer_Release(&gt);
    if (pred.buf) PyBuffer_Release(&pred);
    if (out.buf) PyBuffer_Release(&out);
    return result;
}

/* Keyword-only arguments; the signatures are in _labelmap.pyi. */
static PyMethodDef methods[] = {
    {"unfilter", (PyCFunction)(void (*)(void))py_unfilter, METH_VARARGS | METH_KEYWORDS,
     "unfilter(*, raw, out, width, height) -> bool: PNG row filters of an 8-bit one-sample image undone into out; "
     "False when a filter byte is not 0..4."},
    {"confusion_u8", (PyCFunction)(void (*)(void))py_confusion_u8, METH_VARARGS | METH_KEYWORDS,
     "confusion_u8(*, gt, pred, num_classes, ignore, out) -> bool: confusion counts of two uint8 maps added into out "
     "[n, n + 1]; False, adding nothing, when a value is neither a class nor ignore (-1: none)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_labelmap", "PNG row unfiltering and label-pair counting, compiled.", -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__labelmap(void) { return PyModule_Create(&module); }
