/* Tetramer and base counts of many contigs in one pass, without the GIL.
 *
 * Optional accelerator for tdstore.features.tnf.count_bytes (which has a numpy
 * fallback computing the same thing): from Python,
 *
 *     flags = _kmercount.count(data, offsets, tetramers, bases)
 *
 * data: bytes-like sequences back to back; offsets: int64 (n + 1), contig i is
 * data[offsets[i]:offsets[i+1]]; tetramers: zeroed, writable int64 (n * 256);
 * bases: zeroed, writable int64 (n * 5: A, C, G, T, other). Windows holding a byte
 * other than A/C/G/T (either case) are not counted, as in vamb. The result's bit 1 says
 * the data holds a lower-case letter, bit 2 a byte that is not an ASCII letter.
 * join_count() does the same for a list of str, joining them into one bytes object.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define INVALID 4
#define HAS_LOWER 1
#define HAS_NON_LETTER 2

static unsigned char CODE[256];  /* A=0 C=1 G=2 T=3 (either case), else INVALID */
static unsigned char CLASS[256]; /* 0 upper-case letter, HAS_LOWER, HAS_NON_LETTER */
static uint64_t TALLY[256];      /* four 16-bit base counters packed in one word */

static void init_tables(void) {
    memset(CODE, INVALID, sizeof CODE);
    memset(TALLY, 0, sizeof TALLY);
    const char *acgt = "ACGT";
    for (int i = 0; i < 4; i++) {
        unsigned char upper = (unsigned char)acgt[i];
        CODE[upper] = CODE[upper + 32] = (unsigned char)i;
        TALLY[upper] = TALLY[upper + 32] = (uint64_t)1 << (16 * i);
    }
    for (int c = 0; c < 256; c++) {
        if (c >= 'A' && c <= 'Z') CLASS[c] = 0;
        else if (c >= 'a' && c <= 'z') CLASS[c] = HAS_LOWER;
        else CLASS[c] = HAS_NON_LETTER;
    }
}

/* One contig in one pass. Base counts are summed in a register (four 16-bit counters,
 * unpacked every 65535 bases). Tetramers are tallied in four 32-bit histograms taking
 * turns by position: consecutive increments rarely hit the same histogram entry, so the
 * CPU's memory disambiguation stays on track (one shared histogram is twice as slow). */
#define TALLY_CHUNK 65535
#define FLUSH_CHUNKS 16384 /* histograms emptied before 2^30 bases: no 32-bit overflow */
#define STEP(j)                                                   \
    {                                                             \
        unsigned char ch = p[j];                                  \
        unsigned code = CODE[ch];                                 \
        packed += TALLY[ch];                                      \
        flags |= CLASS[ch];                                       \
        if (code < INVALID) {                                     \
            key = ((key << 2) | code) & 255u;                     \
            if (run < 3) run++;                                   \
            else hist[j][key]++;                                  \
        } else {                                                  \
            run = 0;                                              \
        }                                                         \
    }

static void flush_hist(uint32_t hist[4][256], int64_t *tetra) {
    for (int k = 0; k < 256; k++) {
        tetra[k] += (int64_t)hist[0][k] + hist[1][k] + hist[2][k] + hist[3][k];
    }
    memset(hist, 0, 4 * 256 * sizeof(uint32_t));
}

static unsigned count_one(const unsigned char *p, const unsigned char *end, int64_t *tetra,
                          int64_t *bases) {
    uint32_t hist[4][256];
    unsigned key = 0, run = 0, flags = 0, chunks = 0;
    int64_t length = end - p, acgt = 0;
    memset(hist, 0, sizeof hist);
    while (p < end) {
        const unsigned char *stop = end - p > TALLY_CHUNK ? p + TALLY_CHUNK : end;
        uint64_t packed = 0;
        for (; stop - p >= 4; p += 4) {
            STEP(0) STEP(1) STEP(2) STEP(3)
        }
        for (; p < stop; p++) STEP(0)
        for (int b = 0; b < 4; b++) {
            int64_t tally = (int64_t)((packed >> (16 * b)) & 0xffffu);
            bases[b] += tally;
            acgt += tally;
        }
        if (++chunks % FLUSH_CHUNKS == 0) flush_hist(hist, tetra);
    }
    flush_hist(hist, tetra);
    bases[INVALID] = length - acgt;
    return flags;
}

static int get_buffer(PyObject *obj, Py_buffer *view, int writable) {
    return PyObject_GetBuffer(obj, view, (writable ? PyBUF_WRITABLE : PyBUF_SIMPLE) | PyBUF_C_CONTIGUOUS);
}

static PyObject *count(PyObject *self, PyObject *args) {
    PyObject *data_obj, *offsets_obj, *tetra_obj, *bases_obj;
    Py_buffer data, offsets, tetra, bases;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOO", &data_obj, &offsets_obj, &tetra_obj, &bases_obj)) {
        return NULL;
    }
    if (get_buffer(data_obj, &data, 0) < 0) return NULL;
    if (get_buffer(offsets_obj, &offsets, 0) < 0) goto fail_data;
    if (get_buffer(tetra_obj, &tetra, 1) < 0) goto fail_offsets;
    if (get_buffer(bases_obj, &bases, 1) < 0) goto fail_tetra;

    Py_ssize_t n_off = offsets.len / (Py_ssize_t)sizeof(int64_t);
    Py_ssize_t n = n_off - 1;
    const int64_t *off = (const int64_t *)offsets.buf;
    if (offsets.len % (Py_ssize_t)sizeof(int64_t) || n < 0 ||
        tetra.len != n * 256 * (Py_ssize_t)sizeof(int64_t) ||
        bases.len != n * (INVALID + 1) * (Py_ssize_t)sizeof(int64_t)) {
        PyErr_SetString(PyExc_ValueError, "count: buffer sizes do not match the offsets");
        goto fail_all;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (off[i] < 0 || off[i] > off[i + 1] || off[i + 1] > data.len) {
            PyErr_SetString(PyExc_ValueError, "count: offsets out of order or out of range");
            goto fail_all;
        }
    }
    unsigned flags = 0;
    const unsigned char *buf = (const unsigned char *)data.buf;
    int64_t *tet = (int64_t *)tetra.buf;
    int64_t *bas = (int64_t *)bases.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        flags |= count_one(buf + off[i], buf + off[i + 1], tet + i * 256, bas + i * (INVALID + 1));
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&bases);
    PyBuffer_Release(&tetra);
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&data);
    return PyLong_FromLong((long)flags);

fail_all:
    PyBuffer_Release(&bases);
fail_tetra:
    PyBuffer_Release(&tetra);
fail_offsets:
    PyBuffer_Release(&offsets);
fail_data:
    PyBuffer_Release(&data);
    return NULL;
}

/* join_count(sequences, offsets, tetramers, bases) -> (data, flags) | None
 *
 * As count(), for a list of str: copies them into one new bytes object and counts each
 * one while it is in cache, in one pass without the GIL. None if a sequence is not an
 * ASCII str (the caller then joins and encodes in Python, which names the problem). */
static PyObject *join_count(PyObject *self, PyObject *args) {
    PyObject *seqs, *offsets_obj, *tetra_obj, *bases_obj, *out = NULL, *result = NULL;
    Py_buffer offsets, tetra, bases;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!OOO", &PyList_Type, &seqs, &offsets_obj, &tetra_obj,
                          &bases_obj)) {
        return NULL;
    }
    if (get_buffer(offsets_obj, &offsets, 0) < 0) return NULL;
    if (get_buffer(tetra_obj, &tetra, 1) < 0) goto fail_offsets;
    if (get_buffer(bases_obj, &bases, 1) < 0) goto fail_tetra;

    Py_ssize_t n = PyList_GET_SIZE(seqs);
    const int64_t *off = (const int64_t *)offsets.buf;
    if (offsets.len != (n + 1) * (Py_ssize_t)sizeof(int64_t) ||
        tetra.len != n * 256 * (Py_ssize_t)sizeof(int64_t) ||
        bases.len != n * (INVALID + 1) * (Py_ssize_t)sizeof(int64_t) || off[0] != 0) {
        PyErr_SetString(PyExc_ValueError, "join_count: buffer sizes do not match the sequences");
        goto fail_all;
    }
    /* Own a reference to every string while the GIL is released. */
    PyObject **items = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(PyObject *));
    if (items == NULL) {
        PyErr_NoMemory();
        goto fail_all;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(seqs, i);
        if (!PyUnicode_Check(item) || !PyUnicode_IS_COMPACT_ASCII(item)) {
            PyMem_Free(items);
            result = Py_None;
            Py_INCREF(result);
            goto fail_all;
        }
        if (PyUnicode_GET_LENGTH(item) != off[i + 1] - off[i]) {
            PyMem_Free(items);
            PyErr_SetString(PyExc_ValueError, "join_count: offsets do not match the lengths");
            goto fail_all;
        }
        items[i] = item;
    }
    out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)off[n]);
    if (out == NULL) {
        PyMem_Free(items);
        goto fail_all;
    }
    for (Py_ssize_t i = 0; i < n; i++) Py_INCREF(items[i]);
    unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(out);
    int64_t *tet = (int64_t *)tetra.buf;
    int64_t *bas = (int64_t *)bases.buf;
    unsigned flags = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char *start = dst + off[i];
        memcpy(start, PyUnicode_DATA(items[i]), (size_t)(off[i + 1] - off[i]));
        flags |= count_one(start, dst + off[i + 1], tet + i * 256, bas + i * (INVALID + 1));
    }
    Py_END_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) Py_DECREF(items[i]);
    PyMem_Free(items);
    result = Py_BuildValue("(Nk)", out, (unsigned long)flags);

fail_all:
    PyBuffer_Release(&bases);
fail_tetra:
    PyBuffer_Release(&tetra);
fail_offsets:
    PyBuffer_Release(&offsets);
    return result;
}

static PyMethodDef methods[] = {
    {"count", count, METH_VARARGS,
     "count(data, offsets, tetramers, bases) -> flags: tetramer and base counts per contig."},
    {"join_count", join_count, METH_VARARGS,
     "join_count(sequences, offsets, tetramers, bases) -> (data, flags) or None: join and count."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_kmercount",
    "Tetramer and base counts of many contigs in one pass, without the GIL.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__kmercount(void) {
    init_tables();
    return PyModule_Create(&module);
}
