/*
 * dehub.engine._cluster_kernel: the per-cluster sums of k-means, in C.
 *
 * Optional, like _topk_kernel: without it dehub.engine.kmeans sums with numpy (a stable
 * sort by label, then one sum per cluster) and gets the same bits. Both add the rows of a
 * cluster one after the other in increasing row order, in the input precision (float32
 * adds, no fused or reassociated arithmetic), so each cluster's sum is the same sequence
 * of IEEE additions; here without the sort and the gathered copy.
 *
 * Python API (C-contiguous buffers; the GIL is released while it runs):
 *   add_rows(x (n, d) float32, labels (n,) int64, out (nlist, d) float32):
 *       out[labels[i]] += x[i] for i = 0 .. n-1, in that order; labels must lie in
 *       0 .. nlist-1 (ValueError otherwise, before anything is written).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

static int is_fmt(const Py_buffer *b, const char *codes, Py_ssize_t itemsize) {
    if (b->format == NULL || b->itemsize != itemsize) return 0;
    const char *f = b->format;
    if (*f == '<' || *f == '=' || *f == '@') f++;
    if (f[0] == 0 || f[1] != 0) return 0;
    for (const char *c = codes; *c; c++)
        if (*c == f[0]) return 1;
    return 0;
}

static PyObject *add_rows(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *ox, *ol, *oo;
    if (!PyArg_ParseTuple(args, "OOO", &ox, &ol, &oo)) return NULL;
    Py_buffer x, l, o;
    if (PyObject_GetBuffer(ox, &x, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) != 0) return NULL;
    if (PyObject_GetBuffer(ol, &l, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) != 0) {
        PyBuffer_Release(&x);
        return NULL;
    }
    if (PyObject_GetBuffer(oo, &o, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE) != 0) {
        PyBuffer_Release(&l);
        PyBuffer_Release(&x);
        return NULL;
    }
    PyObject *result = NULL;
    if (x.ndim != 2 || l.ndim != 1 || o.ndim != 2 || !is_fmt(&x, "f", 4) || !is_fmt(&o, "f", 4) ||
        !is_fmt(&l, "lq", 8) || l.shape[0] != x.shape[0] || o.shape[1] != x.shape[1]) {
        PyErr_SetString(PyExc_ValueError,
                        "add_rows expects x (n, d) float32, labels (n,) int64 and out (nlist, d) "
                        "float32, C-contiguous");
        goto done;
    }
    {
        const float *xp = (const float *)x.buf;
        const int64_t *lp = (const int64_t *)l.buf;
        float *op = (float *)o.buf;
        Py_ssize_t n = x.shape[0], d = x.shape[1], nlist = o.shape[0];
        for (Py_ssize_t i = 0; i < n; i++) {
            if (lp[i] < 0 || lp[i] >= nlist) {
                PyErr_Format(PyExc_ValueError, "labels must be in 0..%zd; received %lld at row %zd",
                             nlist - 1, (long long)lp[i], i);
                goto done;
            }
        }
        Py_BEGIN_ALLOW_THREADS;
        for (Py_ssize_t i = 0; i < n; i++) {
            float *dst = op + lp[i] * d;
            const float *src = xp + i * d;
            for (Py_ssize_t j = 0; j < d; j++) dst[j] += src[j];
        }
        Py_END_ALLOW_THREADS;
    }
    Py_INCREF(Py_None);
    result = Py_None;
done:
    PyBuffer_Release(&o);
    PyBuffer_Release(&l);
    PyBuffer_Release(&x);
    return result;
}

static PyMethodDef methods[] = {
    {"add_rows", add_rows, METH_VARARGS,
     "add_rows(x, labels, out): out[labels[i]] += x[i], rows in order (float32)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_cluster_kernel", "Per-cluster sums of k-means (C).", -1, methods,
    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__cluster_kernel(void) { return PyModule_Create(&module); }
