/*
 * dehub.engine._topk_kernel: a running top-k over streamed score tiles, in C.
 *
 * Optional: when this extension is not built (no C compiler at install), dehub selects
 * with numpy (dehub.engine.topk.RunningTopK) and returns the same results.
 *
 * State per row: the k kept (score, id) pairs (unordered; padding is (-inf, -1)), a
 * buffer of B candidates, and a threshold thr. The columns of a row come in increasing id
 * order, over one call or several; an entry is a candidate when its score is strictly
 * greater than thr, and a full buffer is merged into the kept set by a quickselect on
 * the order (score descending, then id ascending), which sets thr to the worst kept
 * score. An entry equal to thr arrives after k kept entries that are at least as good
 * and have smaller ids, so it loses the tie, as the engine's rule says; -inf never
 * enters (it is padding), nor NaN (every comparison with it is false). A row's first
 * tile also sets a floor (see row_f32 below), so the buffer sees few entries.
 *
 * The scan compares 16 (AVX-512) or 8 (AVX2) scores at a time with thr and only looks at
 * the lanes that pass; a corrected score (score - offset) is formed by the same IEEE
 * single/double subtraction as numpy's, so the kept scores are bit-identical to numpy's.
 * The instruction set is chosen at run time (the build uses no -march flag), so one
 * build runs on any x86-64 CPU, and the plain C path elsewhere.
 *
 * Python API (buffers: C-contiguous; float32 or float64 scores, the same dtype for the
 * offset and the kept scores, int64 ids); the GIL is released while it runs:
 *   push(scores (r, c), offset (c,) or None, id_start, ids (c,) or None, rows (r,) or None,
 *        v, id, fill, thr, flo, k, floor_rank): score row a goes to state row a (rows None)
 *       or rows[a]; column j has id id_start + j, in increasing order across a row's pushes
 *       (ids None), or ids[j] in any order (ties then enter the buffer and the merge's
 *       (score, id) order decides); floor_rank: the lane rank of a new row's floor (k:
 *       proven, less: a bet the caller checks)
 *   finish(v, id, fill, thr, flo, k): merge the buffers, v/id[:, :k] sorted best first
 * with the state of r rows: v, id (r, k + B) kept entries then the candidate buffer; fill
 * (r,) int64 buffered entries; thr, flo (r,) the threshold and the floor.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define DEHUB_X86 1
#endif

/* ------------------------------------------------------------------ per dtype */

/* How a push sees its rows: k kept entries, B buffer slots, the floor's rank j (1..k);
   the ids of the columns (ids[j], or id0 + j when ids is NULL), and whether they come in
   increasing order across the pushes of a row (ge = 0: an entry must beat the threshold)
   or in any order (ge = 1: an entry equal to the threshold is a candidate too, and the
   merge's (score, id) order decides). */
typedef struct {
    Py_ssize_t k, B, j;
    const int64_t *ids;
    int ge;
} shape_t;

#if defined(DEHUB_X86) && defined(__GNUC__) && !defined(__clang__)
#define LANE_MAX_TARGETS __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define LANE_MAX_TARGETS
#endif

/* Row state: v[0..k) and id[0..k) the kept set (unordered; padding (-inf, -1)), v[k..k+B)
   the candidate buffer with fill entries, thr the value an entry must beat. */
#define DEFINE_ROWSTATE(T, SUF)                                                            \
    /* a is better than b: larger score, or equal score and smaller id */                  \
    static inline int better_##SUF(T va, int64_t ia, T vb, int64_t ib) {                   \
        return va > vb || (va == vb && ia < ib);                                           \
    }                                                                                      \
    static inline void swap_##SUF(T *v, int64_t *id, Py_ssize_t a, Py_ssize_t b) {         \
        T tv = v[a];                                                                       \
        v[a] = v[b];                                                                       \
        v[b] = tv;                                                                         \
        int64_t ti = id[a];                                                                \
        id[a] = id[b];                                                                     \
        id[b] = ti;                                                                        \
    }                                                                                      \
    /* reorder v/id[0..n) so that [0..k) holds the k best (k <= n); returns the value of   \
       the worst of them (quickselect, Hoare partition on the (score, id) order) */        \
    static T keep_best_##SUF(T *v, int64_t *id, Py_ssize_t n, Py_ssize_t k) {              \
        Py_ssize_t lo = 0, hi = n - 1, want = k - 1;                                       \
        while (lo < hi) {                                                                  \
            Py_ssize_t mid = lo + (hi - lo) / 2;                                           \
            T pv = v[mid];                                                                 \
            int64_t pi = id[mid];                                                          \
            Py_ssize_t i = lo, j = hi;                                                     \
            while (i <= j) {                                                               \
                while (better_##SUF(v[i], id[i], pv, pi)) i++;                             \
                while (better_##SUF(pv, pi, v[j], id[j])) j--;                             \
                if (i <= j) {                                                              \
                    swap_##SUF(v, id, i, j);                                               \
                    i++;                                                                   \
                    j--;                                                                   \
                }                                                                          \
            }                                                                              \
            if (want <= j) hi = j;                                                         \
            else if (want >= i) lo = i;                                                    \
            else break;                                                                    \
        }                                                                                  \
        /* [0..k) are the k best; the worst of them sits at want */                        \
        return v[want];                                                                    \
    }                                                                                      \
    /* a is worse than b (the order of the min-heap used to sort the result) */            \
    static inline int worse_##SUF(T va, int64_t ia, T vb, int64_t ib) {                    \
        return better_##SUF(vb, ib, va, ia);                                               \
    }                                                                                      \
    static void sift_down_##SUF(T *hv, int64_t *hi, Py_ssize_t k, Py_ssize_t pos) {        \
        T v = hv[pos];                                                                     \
        int64_t id = hi[pos];                                                              \
        for (;;) {                                                                         \
            Py_ssize_t c = 2 * pos + 1;                                                    \
            if (c >= k) break;                                                             \
            if (c + 1 < k && worse_##SUF(hv[c + 1], hi[c + 1], hv[c], hi[c])) c++;         \
            if (!worse_##SUF(hv[c], hi[c], v, id)) break;                                  \
            hv[pos] = hv[c];                                                               \
            hi[pos] = hi[c];                                                               \
            pos = c;                                                                       \
        }                                                                                  \
        hv[pos] = v;                                                                       \
        hi[pos] = id;                                                                      \
    }                                                                                      \
    /* v/id[0..k) sorted best first (heapsort: the worst goes to the end each step) */     \
    static void sort_best_first_##SUF(T *hv, int64_t *hi, Py_ssize_t k) {                  \
        for (Py_ssize_t pos = k / 2 - 1; pos >= 0; pos--) sift_down_##SUF(hv, hi, k, pos); \
        for (Py_ssize_t n = k; n > 1; n--) {                                               \
            swap_##SUF(hv, hi, 0, n - 1);                                                  \
            sift_down_##SUF(hv, hi, n - 1, 0);                                             \
        }                                                                                  \
    }                                                                                      \
    /* merge the buffer into the kept set; the new threshold: the worst kept value, at     \
       least the floor */                                                                  \
    static inline T merge_##SUF(T *v, int64_t *id, Py_ssize_t k, int64_t *fill, T flo) {   \
        T w = keep_best_##SUF(v, id, k + *fill, k);                                        \
        *fill = 0;                                                                         \
        return w > flo ? w : flo;                                                          \
    }

DEFINE_ROWSTATE(float, f32)
DEFINE_ROWSTATE(double, f64)

/* The passes that read a row's scores (of type ST, converted by CONV to T): the scalar
   filter and the floor's lane maxima */
#define DEFINE_SCORES(T, ST, SUF, SUFS, CONV)                                              \
    /* entries j0..j1 of a row, one at a time: one that beats thr goes to the buffer; a    \
       full buffer is merged (the threshold returned is the current one) */                \
    static inline T scan_scalar_##SUFS(const ST *s, const T *off, Py_ssize_t j0,             \
                                      Py_ssize_t j1, int64_t id0, T *v, int64_t *id,       \
                                      const shape_t *sh, int64_t *fill, T thr, T flo) {    \
        const Py_ssize_t k = sh->k;                                                        \
        for (Py_ssize_t j = j0; j < j1; j++) {                                             \
            T x = off ? CONV(s[j]) - off[j] : CONV(s[j]);                                              \
            if (x > thr || (sh->ge && x == thr)) {                                         \
                v[k + *fill] = x;                                                          \
                id[k + *fill] = sh->ids ? sh->ids[j] : id0 + j;                            \
                if (++*fill == sh->B) thr = merge_##SUF(v, id, k, fill, flo);              \
            }                                                                              \
        }                                                                                  \
        return thr;                                                                        \
    }                                                                                      \
    /* maxima of the lanes c % L (L a multiple of 16, 2L <= c) of a row's corrected        \
       scores; NaN entries are skipped (x > m is false) */                                 \
    LANE_MAX_TARGETS static void lane_max_##SUFS(const ST *s, const T *off, Py_ssize_t c,    \
                                                Py_ssize_t L, T *m) {                      \
        for (Py_ssize_t l = 0; l < L; l++) m[l] = -INFINITY;                              \
        Py_ssize_t b = 0;                                                                  \
        for (; b + L <= c; b += L) {                                                       \
            if (off) {                                                                     \
                for (Py_ssize_t l = 0; l < L; l++) {                                       \
                    T x = CONV(s[b + l]) - off[b + l];                                           \
                    m[l] = x > m[l] ? x : m[l];                                            \
                }                                                                          \
            } else {                                                                       \
                for (Py_ssize_t l = 0; l < L; l++) m[l] = CONV(s[b + l]) > m[l] ? CONV(s[b + l]) : m[l]; \
            }                                                                              \
        }                                                                                  \
        for (Py_ssize_t l = 0; b + l < c; l++) {                                           \
            T x = off ? CONV(s[b + l]) - off[b + l] : CONV(s[b + l]);                                  \
            m[l] = x > m[l] ? x : m[l];                                                    \
        }                                                                                  \
    }

#define AS_IS(x) (x)
/* bf16 scores (their bits, uint16): the float32 of the same value (exact) */
static inline float bf16_to_f32(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}
DEFINE_SCORES(float, float, f32, f32, AS_IS)
DEFINE_SCORES(double, double, f64, f64, AS_IS)
DEFINE_SCORES(float, uint16_t, f32, bf16, bf16_to_f32)

/* ------------------------------------------------------------------ scans, per ISA */


/* scan(s, off, c, id0, v, id, shape, fill, thr, flo): a row's entries through the filter */
typedef float (*scan_fn_f32)(const float *, const float *, Py_ssize_t, int64_t, float *,
                             int64_t *, shape_t, int64_t *, float, float);
typedef double (*scan_fn_f64)(const double *, const double *, Py_ssize_t, int64_t, double *,
                              int64_t *, shape_t, int64_t *, double, double);
typedef float (*scan_fn_bf16)(const uint16_t *, const float *, Py_ssize_t, int64_t, float *,
                              int64_t *, shape_t, int64_t *, float, float);

static float scan_plain_f32(const float *s, const float *off, Py_ssize_t c, int64_t id0,
                            float *v, int64_t *id, shape_t sh, int64_t *fill, float thr,
                            float flo) {
    return scan_scalar_f32(s, off, 0, c, id0, v, id, &sh, fill, thr, flo);
}

static float scan_plain_bf16(const uint16_t *s, const float *off, Py_ssize_t c, int64_t id0,
                             float *v, int64_t *id, shape_t sh, int64_t *fill, float thr,
                             float flo) {
    return scan_scalar_bf16(s, off, 0, c, id0, v, id, &sh, fill, thr, flo);
}

static double scan_plain_f64(const double *s, const double *off, Py_ssize_t c, int64_t id0,
                             double *v, int64_t *id, shape_t sh, int64_t *fill, double thr,
                             double flo) {
    return scan_scalar_f64(s, off, 0, c, id0, v, id, &sh, fill, thr, flo);
}

#ifdef DEHUB_X86
/* W lanes at a time; only the lanes that pass are looked at, one by one (a merge on the
   way raises the threshold, so each is checked again against the current one) */
#define DEFINE_SCAN(T, ST, SUF, SUFS, ISA_NAME, W, VT, LOADS, LOAD, SUB, SET1, STORE, MASK_GT, \
                    MASK_GE)                                                               \
    __attribute__((target(#ISA_NAME))) static T scan_##ISA_NAME##_##SUFS(                  \
        const ST *s, const T *off, Py_ssize_t c, int64_t id0, T *v, int64_t *id, shape_t sh, \
        int64_t *fill_p, T thr, T flo) {                                                   \
        const Py_ssize_t k = sh.k, B = sh.B;                                               \
        const int ge = sh.ge;                                                              \
        int64_t fill = *fill_p;                                                            \
        VT t = SET1(thr);                                                                  \
        T lane[W] __attribute__((aligned(64)));                                            \
        Py_ssize_t j = 0;                                                                  \
        for (; j + W <= c; j += W) {                                                       \
            VT x = LOADS(s + j);                                                           \
            if (off) x = SUB(x, LOAD(off + j));                                            \
            unsigned m = ge ? (unsigned)MASK_GE(x, t) : (unsigned)MASK_GT(x, t);           \
            if (m) {                                                                       \
                STORE(lane, x);                                                            \
                do {                                                                       \
                    int b = __builtin_ctz(m);                                              \
                    m &= m - 1;                                                            \
                    if (lane[b] > thr || (ge && lane[b] == thr)) {                         \
                        v[k + fill] = lane[b];                                             \
                        id[k + fill] = sh.ids ? sh.ids[j + b] : id0 + j + b;               \
                        if (++fill == B) {                                                 \
                            thr = merge_##SUF(v, id, k, &fill, flo);                       \
                            t = SET1(thr);                                                 \
                        }                                                                  \
                    }                                                                      \
                } while (m);                                                               \
            }                                                                              \
        }                                                                                  \
        *fill_p = fill;                                                                    \
        return scan_scalar_##SUFS(s, off, j, c, id0, v, id, &sh, fill_p, thr, flo);        \
    }

#define MASK_GT_512PS(x, t) _mm512_cmp_ps_mask((x), (t), _CMP_GT_OQ)
#define MASK_GT_512PD(x, t) _mm512_cmp_pd_mask((x), (t), _CMP_GT_OQ)
#define MASK_GT_256PS(x, t) _mm256_movemask_ps(_mm256_cmp_ps((x), (t), _CMP_GT_OQ))
#define MASK_GT_256PD(x, t) _mm256_movemask_pd(_mm256_cmp_pd((x), (t), _CMP_GT_OQ))
#define MASK_GE_512PS(x, t) _mm512_cmp_ps_mask((x), (t), _CMP_GE_OQ)
#define MASK_GE_512PD(x, t) _mm512_cmp_pd_mask((x), (t), _CMP_GE_OQ)
#define MASK_GE_256PS(x, t) _mm256_movemask_ps(_mm256_cmp_ps((x), (t), _CMP_GE_OQ))
#define MASK_GE_256PD(x, t) _mm256_movemask_pd(_mm256_cmp_pd((x), (t), _CMP_GE_OQ))

/* 16 (8) bf16 scores widened to float32: the bits shifted into the upper half (exact) */
#define LOAD_BF16_512(p) \
    _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(p))), 16))
#define LOAD_BF16_256(p) \
    _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(p))), 16))

DEFINE_SCAN(float, float, f32, f32, avx512f, 16, __m512, _mm512_loadu_ps, _mm512_loadu_ps, _mm512_sub_ps,
            _mm512_set1_ps, _mm512_store_ps, MASK_GT_512PS, MASK_GE_512PS)
DEFINE_SCAN(double, double, f64, f64, avx512f, 8, __m512d, _mm512_loadu_pd, _mm512_loadu_pd,
            _mm512_sub_pd, _mm512_set1_pd, _mm512_store_pd, MASK_GT_512PD, MASK_GE_512PD)
DEFINE_SCAN(float, uint16_t, f32, bf16, avx512f, 16, __m512, LOAD_BF16_512, _mm512_loadu_ps,
            _mm512_sub_ps, _mm512_set1_ps, _mm512_store_ps, MASK_GT_512PS, MASK_GE_512PS)
DEFINE_SCAN(float, float, f32, f32, avx2, 8, __m256, _mm256_loadu_ps, _mm256_loadu_ps, _mm256_sub_ps,
            _mm256_set1_ps, _mm256_store_ps, MASK_GT_256PS, MASK_GE_256PS)
DEFINE_SCAN(double, double, f64, f64, avx2, 4, __m256d, _mm256_loadu_pd, _mm256_loadu_pd,
            _mm256_sub_pd, _mm256_set1_pd, _mm256_store_pd, MASK_GT_256PD, MASK_GE_256PD)
DEFINE_SCAN(float, uint16_t, f32, bf16, avx2, 8, __m256, LOAD_BF16_256, _mm256_loadu_ps,
            _mm256_sub_ps, _mm256_set1_ps, _mm256_store_ps, MASK_GT_256PS, MASK_GE_256PS)
#endif

static scan_fn_f32 SCAN_F32 = scan_plain_f32;
static scan_fn_f64 SCAN_F64 = scan_plain_f64;
static scan_fn_bf16 SCAN_BF16 = scan_plain_bf16;
static const char *ISA = "scalar";

static void choose_isa(void) {
#ifdef DEHUB_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) {
        SCAN_F32 = scan_avx512f_f32;
        SCAN_F64 = scan_avx512f_f64;
        SCAN_BF16 = scan_avx512f_bf16;
        ISA = "avx512f";
    } else if (__builtin_cpu_supports("avx2")) {
        SCAN_F32 = scan_avx2_f32;
        SCAN_F64 = scan_avx2_f64;
        SCAN_BF16 = scan_avx2_bf16;
        ISA = "avx2";
    }
#endif
}


/* ------------------------------------------------------------------ one row */

#define MAX_LANES 4096
#define FLOOR_PREFIX 1024 /* the floor looks at the first 16 L columns of the row at most */

/* Lanes of the floor for k: 4k rounded up to 16, at least 64 */
static Py_ssize_t floor_lanes(Py_ssize_t k) {
    Py_ssize_t L = 4 * k < 64 ? 64 : 4 * k;
    return (L + 15) / 16 * 16;
}

/* A row's first tile (no threshold yet) first sets the row's floor from L lane maxima
   over its first columns. With rank j = k the floor is proven: the k-th largest lane
   maximum is at most the row's k-th largest corrected score (the k largest lane maxima
   are k distinct entries), so entries below it never make the top-k. With j < k it is a
   bet (a higher floor, fewer candidates), which the caller checks at the end: a row that
   holds k entries above its floor is exact, any other must be recomputed. Entries equal
   to the j-th lane maximum may belong to the top-k: the floor is the float just below
   it, and entries must beat it. */
#define DEFINE_ROW(T, ST, SUF, SUFS, NEXTAFTER, SCAN)                                       \
    static void row_##SUFS(const ST *s, const T *off, Py_ssize_t c, int64_t id0, T *v,        \
                          int64_t *id, shape_t sh, int64_t *fill, T *thr, T *flo,          \
                          T *lanes, int64_t *lane_ids) {                                   \
        Py_ssize_t L = floor_lanes(sh.k);                                                  \
        if (*thr == -INFINITY && L <= MAX_LANES && 2 * L <= c) {                           \
            Py_ssize_t p = c < FLOOR_PREFIX * L ? c : FLOOR_PREFIX * L;                    \
            lane_max_##SUFS(s, off, p, L, lanes);                                          \
            for (Py_ssize_t l = 0; l < L; l++) lane_ids[l] = l;                            \
            /* the j-th largest lane maximum: the worst of the j best */                   \
            *flo = NEXTAFTER(keep_best_##SUF(lanes, lane_ids, L, sh.j), -INFINITY);        \
            if (*flo > *thr) *thr = *flo;                                                  \
        }                                                                                  \
        *thr = SCAN(s, off, c, id0, v, id, sh, fill, *thr, *flo);                          \
    }
DEFINE_ROW(float, float, f32, f32, nextafterf, SCAN_F32)
DEFINE_ROW(double, double, f64, f64, nextafter, SCAN_F64)
DEFINE_ROW(float, uint16_t, f32, bf16, nextafterf, SCAN_BF16)

/* ------------------------------------------------------------------ buffers */

static int is_float(const Py_buffer *b, char *kind) {
    if (b->format == NULL) return 0;
    const char *f = b->format;
    if (*f == '<' || *f == '=' || *f == '@') f++;
    if (f[0] == 'f' && f[1] == 0 && b->itemsize == 4) { *kind = 'f'; return 1; }
    if (f[0] == 'd' && f[1] == 0 && b->itemsize == 8) { *kind = 'd'; return 1; }
    return 0;
}

/* bf16 scores travel as their bits: a 2-byte integer buffer (numpy int16 / uint16) */
static int is_bf16_bits(const Py_buffer *b) {
    if (b->format == NULL || b->itemsize != 2) return 0;
    const char *f = b->format;
    if (*f == '<' || *f == '=' || *f == '@') f++;
    return (f[0] == 'h' || f[0] == 'H') && f[1] == 0;
}

static int is_int64(const Py_buffer *b) {
    if (b->format == NULL || b->itemsize != 8) return 0;
    const char *f = b->format;
    if (*f == '<' || *f == '=' || *f == '@') f++;
    return (f[0] == 'l' || f[0] == 'q') && f[1] == 0;
}

/* The state of r rows: v, id (r, k + B); fill (r,) int64; thr, flo (r,) of v's dtype. */
typedef struct {
    Py_buffer v, id, fill, thr, flo;
    int n; /* buffers held */
    char kind;
    Py_ssize_t r, k, B;
} state_t;

static void release_state(state_t *st) {
    Py_buffer *all[5] = {&st->v, &st->id, &st->fill, &st->thr, &st->flo};
    for (int j = 0; j < st->n; j++) PyBuffer_Release(all[j]);
    st->n = 0;
}

static int get_state(PyObject *const objs[5], Py_ssize_t k, state_t *st) {
    Py_buffer *all[5] = {&st->v, &st->id, &st->fill, &st->thr, &st->flo};
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE;
    st->n = 0;
    for (int j = 0; j < 5; j++) {
        if (PyObject_GetBuffer(objs[j], all[j], flags) != 0) {
            release_state(st);
            PyErr_SetString(PyExc_ValueError, "the top-k state must be C-contiguous writable arrays");
            return -1;
        }
        st->n++;
    }
    char kt = 0, kf = 0;
    int ok = st->v.ndim == 2 && st->id.ndim == 2 && st->fill.ndim == 1 && st->thr.ndim == 1 &&
             st->flo.ndim == 1 && is_float(&st->v, &st->kind) && is_int64(&st->id) &&
             is_int64(&st->fill) && is_float(&st->thr, &kt) && is_float(&st->flo, &kf) &&
             kt == st->kind && kf == st->kind && st->id.shape[0] == st->v.shape[0] &&
             st->id.shape[1] == st->v.shape[1] && st->fill.shape[0] == st->v.shape[0] &&
             st->thr.shape[0] == st->v.shape[0] && st->flo.shape[0] == st->v.shape[0] &&
             k >= 1 && st->v.shape[1] > k;
    if (!ok) {
        release_state(st);
        PyErr_SetString(PyExc_ValueError,
                        "the top-k state must be v, id (r, k + B) float / int64, fill (r,) "
                        "int64, thr, flo (r,) of v's dtype, with k >= 1 and B >= 1");
        return -1;
    }
    st->r = st->v.shape[0];
    st->k = k;
    st->B = st->v.shape[1] - k;
    return 0;
}

/* ------------------------------------------------------------------ push */

/* An optional buffer argument (None -> not held) */
static int get_optional(PyObject *o, Py_buffer *b, int *held) {
    *held = 0;
    if (o == Py_None) return 0;
    if (PyObject_GetBuffer(o, b, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) != 0) return -1;
    *held = 1;
    return 0;
}

/* push(scores, offset, id_start, ids, rows, v, id, fill, thr, flo, k, floor_rank): score
   row a goes to state row a (rows None) or rows[a]; column j has id id_start + j (ids None,
   in increasing order across a row's pushes) or ids[j] (any order); offset[j] is
   subtracted from column j when given. */
static PyObject *push(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *os, *ooff, *oids, *orows, *objs[5];
    long long id_start;
    Py_ssize_t k, floor_rank;
    if (!PyArg_ParseTuple(args, "OOLOOOOOOOnn", &os, &ooff, &id_start, &oids, &orows, &objs[0],
                          &objs[1], &objs[2], &objs[3], &objs[4], &k, &floor_rank))
        return NULL;
    if (floor_rank < 1 || floor_rank > k) {
        PyErr_Format(PyExc_ValueError, "floor_rank must be in 1..k=%zd; received %zd", k, floor_rank);
        return NULL;
    }
    state_t st;
    if (get_state(objs, k, &st) < 0) return NULL;
    Py_buffer s, off, ids, rows;
    int held_s = 0, held_off = 0, held_ids = 0, held_rows = 0;
    char ks = 0, ko = 0;
    if (PyObject_GetBuffer(os, &s, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) != 0) goto bad;
    held_s = 1;
    if (get_optional(ooff, &off, &held_off) < 0 || get_optional(oids, &ids, &held_ids) < 0 ||
        get_optional(orows, &rows, &held_rows) < 0)
        goto bad;
    int bf16 = s.ndim == 2 && is_bf16_bits(&s) && st.kind == 'f';
    if (bf16) ks = 'f';
    if (s.ndim != 2 || (!bf16 && (!is_float(&s, &ks) || ks != st.kind)) ||
        (held_off && (off.ndim != 1 || !is_float(&off, &ko) || ko != ks || off.shape[0] != s.shape[1])) ||
        (held_ids && (ids.ndim != 1 || !is_int64(&ids) || ids.shape[0] != s.shape[1])) ||
        (held_rows && (rows.ndim != 1 || !is_int64(&rows) || rows.shape[0] != s.shape[0])) ||
        (!held_rows && s.shape[0] != st.r))
        goto bad;
    const int64_t *rp = held_rows ? (const int64_t *)rows.buf : NULL;
    for (Py_ssize_t a = 0; rp && a < s.shape[0]; a++) {
        if (rp[a] < 0 || rp[a] >= st.r) {
            PyErr_Format(PyExc_ValueError, "rows must be in 0..%zd; received %lld", st.r - 1,
                         (long long)rp[a]);
            goto bad;
        }
    }
    {
        Py_ssize_t c = s.shape[1], w = st.k + st.B;
        shape_t sh = {st.k, st.B, floor_rank, held_ids ? (const int64_t *)ids.buf : NULL, held_ids};
        int64_t *fill = (int64_t *)st.fill.buf;
        int64_t *id = (int64_t *)st.id.buf;
        /* scratch of the floor, per dtype (no aliasing); on the heap, not the stack: threads
           may have small stacks (musl: 128 KiB) */
        Py_ssize_t L = floor_lanes(st.k) < MAX_LANES ? floor_lanes(st.k) : MAX_LANES;
        float *lanes_f = PyMem_RawMalloc((size_t)L * sizeof(float));
        double *lanes_d = PyMem_RawMalloc((size_t)L * sizeof(double));
        int64_t *lane_ids = PyMem_RawMalloc((size_t)L * sizeof(int64_t));
        if (!lanes_f || !lanes_d || !lane_ids) {
            PyMem_RawFree(lanes_f);
            PyMem_RawFree(lanes_d);
            PyMem_RawFree(lane_ids);
            PyErr_NoMemory();
            goto bad;
        }
/* score row a -> state row q (a, or rows[a]) */
#define PUSH_TILE(T, ST, SUFS, LANES)                                                       \
    {                                                                                      \
        const ST *sp = (const ST *)s.buf;                                                  \
        const T *op = held_off ? (const T *)off.buf : NULL;                                \
        T *v = (T *)st.v.buf, *thr = (T *)st.thr.buf, *flo = (T *)st.flo.buf;              \
        for (Py_ssize_t a = 0; a < s.shape[0]; a++) {                                      \
            Py_ssize_t q = rp ? rp[a] : a;                                                 \
            row_##SUFS(sp + a * c, op, c, (int64_t)id_start, v + q * w, id + q * w, sh,     \
                      fill + q, thr + q, flo + q, LANES, lane_ids);                        \
        }                                                                                  \
    }
        Py_BEGIN_ALLOW_THREADS;
        if (bf16)
            PUSH_TILE(float, uint16_t, bf16, lanes_f)
        else if (ks == 'f')
            PUSH_TILE(float, float, f32, lanes_f)
        else
            PUSH_TILE(double, double, f64, lanes_d)
        Py_END_ALLOW_THREADS;
        PyMem_RawFree(lanes_f);
        PyMem_RawFree(lanes_d);
        PyMem_RawFree(lane_ids);
    }
    if (held_rows) PyBuffer_Release(&rows);
    if (held_ids) PyBuffer_Release(&ids);
    if (held_off) PyBuffer_Release(&off);
    PyBuffer_Release(&s);
    release_state(&st);
    Py_RETURN_NONE;
bad:
    if (!PyErr_Occurred())
        PyErr_SetString(PyExc_ValueError,
                        "push expects scores (r, c) and an offset (c,) or None of the state's "
                        "float dtype, ids (c,) or None and rows (r,) or None int64 (rows None: r "
                        "= the state's rows), C-contiguous");
    if (held_rows) PyBuffer_Release(&rows);
    if (held_ids) PyBuffer_Release(&ids);
    if (held_off) PyBuffer_Release(&off);
    if (held_s) PyBuffer_Release(&s);
    release_state(&st);
    return NULL;
}

/* ------------------------------------------------------------------ finish */

static PyObject *finish(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *objs[5];
    Py_ssize_t k;
    if (!PyArg_ParseTuple(args, "OOOOOn", &objs[0], &objs[1], &objs[2], &objs[3], &objs[4], &k))
        return NULL;
    state_t st;
    if (get_state(objs, k, &st) < 0) return NULL;
    Py_ssize_t r = st.r, w = st.k + st.B;
    int64_t *fill = (int64_t *)st.fill.buf;
    int64_t *id = (int64_t *)st.id.buf;
    Py_BEGIN_ALLOW_THREADS;
    for (Py_ssize_t a = 0; a < r; a++) {
        if (st.kind == 'f') {
            float *v = (float *)st.v.buf + a * w, *thr = (float *)st.thr.buf + a;
            *thr = merge_f32(v, id + a * w, k, fill + a, ((float *)st.flo.buf)[a]);
            sort_best_first_f32(v, id + a * w, k);
        } else {
            double *v = (double *)st.v.buf + a * w, *thr = (double *)st.thr.buf + a;
            *thr = merge_f64(v, id + a * w, k, fill + a, ((double *)st.flo.buf)[a]);
            sort_best_first_f64(v, id + a * w, k);
        }
    }
    Py_END_ALLOW_THREADS;
    release_state(&st);
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ bf16 prepare */

/* One row: the bf16 bits of each float32 component (round to nearest even: the upper half
   of bits + 0x7FFF + bit 16; exact for normal and subnormal values), the sum of squares of
   the components and of their residuals bf16(x) - x (exact in float32: the two are within
   a factor 2, or the bf16 value is 0), in double: each product is exact, 8 partial sums. */
LANE_MAX_TARGETS static void prepare_row(const float *x, Py_ssize_t d, uint16_t *bits, double *sq,
                                         double *rsq) {
    double s[8] = {0}, r[8] = {0};
    Py_ssize_t j = 0;
    for (; j + 8 <= d; j += 8) {
        for (int l = 0; l < 8; l++) {
            float v = x[j + l];
            uint32_t u;
            memcpy(&u, &v, sizeof u);
            uint32_t b = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
            if (bits) bits[j + l] = (uint16_t)b;
            uint32_t bu = b << 16;
            float bf;
            memcpy(&bf, &bu, sizeof bf);
            double dv = (double)v, dr = (double)(bf - v);
            s[l] += dv * dv;
            r[l] += dr * dr;
        }
    }
    for (; j < d; j++) {
        float v = x[j];
        uint32_t u;
        memcpy(&u, &v, sizeof u);
        uint32_t b = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
        if (bits) bits[j] = (uint16_t)b;
        uint32_t bu = b << 16;
        float bf;
        memcpy(&bf, &bu, sizeof bf);
        double dv = (double)v, dr = (double)(bf - v);
        s[0] += dv * dv;
        r[0] += dr * dr;
    }
    *sq = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    *rsq = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
}

/* bf16_prepare(x (n, d) float32, bits (n, d) int16/uint16 or None, sq (n,) float64,
   rsq (n,) float64): bf16 bits, squared norms and squared residual norms of every row */
static PyObject *bf16_prepare(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *ox, *obits, *osq, *orsq;
    if (!PyArg_ParseTuple(args, "OOOO", &ox, &obits, &osq, &orsq)) return NULL;
    Py_buffer x, bits, sq, rsq;
    int held_bits = 0;
    if (PyObject_GetBuffer(ox, &x, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) != 0) return NULL;
    if (PyObject_GetBuffer(osq, &sq, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE) != 0) {
        PyBuffer_Release(&x);
        return NULL;
    }
    if (PyObject_GetBuffer(orsq, &rsq, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE) != 0) {
        PyBuffer_Release(&x);
        PyBuffer_Release(&sq);
        return NULL;
    }
    if (obits != Py_None) {
        if (PyObject_GetBuffer(obits, &bits, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE) != 0) {
            PyBuffer_Release(&x);
            PyBuffer_Release(&sq);
            PyBuffer_Release(&rsq);
            return NULL;
        }
        held_bits = 1;
    }
    char kx = 0, ks = 0, kr = 0;
    int ok = x.ndim == 2 && is_float(&x, &kx) && kx == 'f' && sq.ndim == 1 && is_float(&sq, &ks) &&
             ks == 'd' && rsq.ndim == 1 && is_float(&rsq, &kr) && kr == 'd' &&
             sq.shape[0] == x.shape[0] && rsq.shape[0] == x.shape[0] &&
             (!held_bits || (bits.ndim == 2 && is_bf16_bits(&bits) && bits.shape[0] == x.shape[0] &&
                             bits.shape[1] == x.shape[1]));
    if (ok) {
        Py_ssize_t n = x.shape[0], d = x.shape[1];
        const float *xp = (const float *)x.buf;
        uint16_t *bp = held_bits ? (uint16_t *)bits.buf : NULL;
        double *sp = (double *)sq.buf, *rp = (double *)rsq.buf;
        Py_BEGIN_ALLOW_THREADS;
        for (Py_ssize_t a = 0; a < n; a++)
            prepare_row(xp + a * d, d, bp ? bp + a * d : NULL, sp + a, rp + a);
        Py_END_ALLOW_THREADS;
    } else {
        PyErr_SetString(PyExc_ValueError,
                        "bf16_prepare expects x (n, d) float32, bits (n, d) 2-byte integers or None, "
                        "sq and rsq (n,) float64, C-contiguous");
    }
    if (held_bits) PyBuffer_Release(&bits);
    PyBuffer_Release(&rsq);
    PyBuffer_Release(&sq);
    PyBuffer_Release(&x);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ exact re-score */

/* The exact re-score of the bf16 path: out[p] = q[a] . x[cols[p]] - offset[cols[p]] for
   the pairs p of query row a (indptr[a] <= p < indptr[a + 1]), each dot product formed as
   OpenBLAS's sgemm forms an entry of C (measured on 0.3.31, SkylakeX kernels): a chain of
   single-precision FMAs over the dimension in order, started from +0 and restarted at the
   end of each K panel (ends[0] < ends[1] < ... = d), the panels' sums added in order
   (c = s_0; c = c + s_1; ...). The caller checks once per process and dimension that these
   are the BLAS's bits (dehub.engine.lowp_rescore). Several pairs are formed at once, one
   per SIMD lane: their database rows are read in blocks of 16 (8) floats and transposed
   in registers, so no row is gathered into a copy. */

typedef void (*chain_fn)(const float *q, const float *x, Py_ssize_t d, const int64_t *cols,
                         Py_ssize_t c, const int64_t *ends, Py_ssize_t nb, const float *off,
                         float *out);

static void chain_plain(const float *q, const float *x, Py_ssize_t d, const int64_t *cols,
                        Py_ssize_t c, const int64_t *ends, Py_ssize_t nb, const float *off,
                        float *out) {
    for (Py_ssize_t p = 0; p < c; p++) {
        const float *xr = x + cols[p] * d;
        float total = 0.0f;
        Py_ssize_t s = 0;
        for (Py_ssize_t b = 0; b < nb; b++) {
            float acc = 0.0f;
            for (Py_ssize_t k = s; k < ends[b]; k++) acc = fmaf(q[k], xr[k], acc);
            total = b == 0 ? acc : total + acc;
            s = ends[b];
        }
        out[p] = off ? total - off[cols[p]] : total;
    }
}

#if defined(DEHUB_X86) && defined(__GNUC__) && !defined(__clang__)
/* r[j] <- column j of the 16 x 16 block whose rows are r[0..16) */
__attribute__((target("avx512f"))) static inline void transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        __m512d a = _mm512_castps_pd(t[i]), b = _mm512_castps_pd(t[i + 1]);
        __m512d c2 = _mm512_castps_pd(t[i + 2]), d2 = _mm512_castps_pd(t[i + 3]);
        r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c2));
        r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c2));
        r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d2));
        r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d2));
    }
    for (int i = 0; i < 16; i += 8)
        for (int j = 0; j < 4; j++) {
            t[i + j] = _mm512_shuffle_f32x4(r[i + j], r[i + j + 4], 0x88);
            t[i + j + 4] = _mm512_shuffle_f32x4(r[i + j], r[i + j + 4], 0xdd);
        }
    for (int j = 0; j < 8; j++) {
        r[j] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0x88);
        r[j + 8] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0xdd);
    }
}

__attribute__((target("avx512f"))) static void chain_avx512f(
    const float *q, const float *x, Py_ssize_t d, const int64_t *cols, Py_ssize_t c,
    const int64_t *ends, Py_ssize_t nb, const float *off, float *out) {
    for (Py_ssize_t p = 0; p < c; p += 16) {
        int lanes = c - p < 16 ? (int)(c - p) : 16;
        const float *xr[16], *xn[16];
        float o[16];
        for (int l = 0; l < 16; l++) {
            int64_t col = cols[p + (l < lanes ? l : lanes - 1)];
            xr[l] = x + col * d;
            o[l] = off ? off[col] : 0.0f;
            /* the next group's rows, read ahead while this group is formed */
            Py_ssize_t pn = p + 16 + l < c ? p + 16 + l : c - 1;
            xn[l] = x + cols[pn] * d;
        }
        __m512 total = _mm512_setzero_ps();
        Py_ssize_t s = 0;
        for (Py_ssize_t b = 0; b < nb; b++) {
            __m512 acc = _mm512_setzero_ps();
            Py_ssize_t e = ends[b], k = s;
            __m512 r[16];
            for (; k + 16 <= e; k += 16) {
                for (int l = 0; l < 16; l++) _mm_prefetch((const char *)(xn[l] + k), _MM_HINT_T0);
                for (int l = 0; l < 16; l++) r[l] = _mm512_loadu_ps(xr[l] + k);
                transpose16(r);
                for (int t = 0; t < 16; t++) acc = _mm512_fmadd_ps(_mm512_set1_ps(q[k + t]), r[t], acc);
            }
            if (k < e) {
                int L = (int)(e - k);
                __mmask16 mk = (__mmask16)((1u << L) - 1u);
                for (int l = 0; l < 16; l++) r[l] = _mm512_maskz_loadu_ps(mk, xr[l] + k);
                transpose16(r);
                for (int t = 0; t < L; t++) acc = _mm512_fmadd_ps(_mm512_set1_ps(q[k + t]), r[t], acc);
            }
            total = b == 0 ? acc : _mm512_add_ps(total, acc);
            s = e;
        }
        if (off) total = _mm512_sub_ps(total, _mm512_loadu_ps(o));
        _mm512_mask_storeu_ps(out + p, (__mmask16)((1u << lanes) - 1u), total);
    }
}

/* r[j] <- column j of the 8 x 8 block whose rows are r[0..8) */
__attribute__((target("avx2,fma"))) static inline void transpose8(__m256 r[8]) {
    __m256 t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int j = 0; j < 4; j++) {
        r[j] = _mm256_permute2f128_ps(u[j], u[j + 4], 0x20);
        r[j + 4] = _mm256_permute2f128_ps(u[j], u[j + 4], 0x31);
    }
}

__attribute__((target("avx2,fma"))) static void chain_avx2(
    const float *q, const float *x, Py_ssize_t d, const int64_t *cols, Py_ssize_t c,
    const int64_t *ends, Py_ssize_t nb, const float *off, float *out) {
    for (Py_ssize_t p = 0; p < c; p += 8) {
        int lanes = c - p < 8 ? (int)(c - p) : 8;
        const float *xr[8];
        float o[8];
        for (int l = 0; l < 8; l++) {
            int64_t col = cols[p + (l < lanes ? l : lanes - 1)];
            xr[l] = x + col * d;
            o[l] = off ? off[col] : 0.0f;
        }
        __m256 total = _mm256_setzero_ps();
        Py_ssize_t s = 0;
        for (Py_ssize_t b = 0; b < nb; b++) {
            __m256 acc = _mm256_setzero_ps();
            Py_ssize_t e = ends[b], k = s;
            __m256 r[8];
            for (; k + 8 <= e; k += 8) {
                for (int l = 0; l < 8; l++) r[l] = _mm256_loadu_ps(xr[l] + k);
                transpose8(r);
                for (int t = 0; t < 8; t++) acc = _mm256_fmadd_ps(_mm256_set1_ps(q[k + t]), r[t], acc);
            }
            if (k < e) {
                int L = (int)(e - k);
                __m256i mk = _mm256_cmpgt_epi32(_mm256_set1_epi32(L), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
                for (int l = 0; l < 8; l++) r[l] = _mm256_maskload_ps(xr[l] + k, mk);
                transpose8(r);
                for (int t = 0; t < L; t++) acc = _mm256_fmadd_ps(_mm256_set1_ps(q[k + t]), r[t], acc);
            }
            total = b == 0 ? acc : _mm256_add_ps(total, acc);
            s = e;
        }
        if (off) total = _mm256_sub_ps(total, _mm256_loadu_ps(o));
        float res[8];
        _mm256_storeu_ps(res, total);
        for (int l = 0; l < lanes; l++) out[p + l] = res[l];
    }
}
#endif

static chain_fn CHAIN = chain_plain;
static const char *CHAIN_ISA = "scalar";

static void choose_chain_isa(void) {
#if defined(DEHUB_X86) && defined(__GNUC__) && !defined(__clang__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) {
        CHAIN = chain_avx512f;
        CHAIN_ISA = "avx512f";
    } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        CHAIN = chain_avx2;
        CHAIN_ISA = "avx2";
    }
#endif
}

/* chain_scores(q (m, d) float32, x (n, d) float32, indptr (m + 1,) int64, cols (c,) int64,
   offset (n,) float32 or None, ends (nb,) int64, out (c,) float32[, isa]): see above; isa
   ("avx512f", "avx2", "scalar") runs another path than the one chosen, where the CPU has it */
static PyObject *chain_scores(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *objs[7];
    const char *isa = NULL;
    if (!PyArg_ParseTuple(args, "OOOOOOO|z", &objs[0], &objs[1], &objs[2], &objs[3], &objs[4], &objs[5],
                          &objs[6], &isa))
        return NULL;
    chain_fn chain = CHAIN; /* isa: another path this CPU has, for the tests */
    if (isa != NULL && strcmp(isa, CHAIN_ISA) != 0) {
        chain = NULL;
        if (strcmp(isa, "scalar") == 0) chain = chain_plain;
#if defined(DEHUB_X86) && defined(__GNUC__) && !defined(__clang__)
        else if (strcmp(isa, "avx2") == 0 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
            chain = chain_avx2;
#endif
        if (chain == NULL) {
            PyErr_Format(PyExc_ValueError, "chain_scores: isa %s is not available here (this CPU runs %s)",
                         isa, CHAIN_ISA);
            return NULL;
        }
    }
    Py_buffer b[7];
    int held[7] = {0, 0, 0, 0, 0, 0, 0};
    int ok = 1;
    for (int j = 0; j < 7 && ok; j++) {
        if (j == 4 && objs[j] == Py_None) continue;
        int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (j == 6 ? PyBUF_WRITABLE : 0);
        if (PyObject_GetBuffer(objs[j], &b[j], flags) != 0) {
            PyErr_Clear();
            ok = 0;
            break;
        }
        held[j] = 1;
    }
    char k0 = 0, k1 = 0, k4 = 'f', k6 = 0;
    ok = ok && b[0].ndim == 2 && b[1].ndim == 2 && is_float(&b[0], &k0) && k0 == 'f' &&
         is_float(&b[1], &k1) && k1 == 'f' && b[0].shape[1] == b[1].shape[1] && b[2].ndim == 1 &&
         is_int64(&b[2]) && b[2].shape[0] == b[0].shape[0] + 1 && b[3].ndim == 1 && is_int64(&b[3]) &&
         (!held[4] || (b[4].ndim == 1 && is_float(&b[4], &k4) && k4 == 'f' &&
                       b[4].shape[0] == b[1].shape[0])) &&
         b[5].ndim == 1 && is_int64(&b[5]) && b[5].shape[0] >= 1 && b[6].ndim == 1 &&
         is_float(&b[6], &k6) && k6 == 'f' && b[6].shape[0] == b[3].shape[0];
    if (ok) { /* indices and panel ends in range: nothing is read outside the arrays */
        Py_ssize_t m = b[0].shape[0], n = b[1].shape[0], d = b[0].shape[1], c = b[3].shape[0];
        const int64_t *ip = (const int64_t *)b[2].buf, *cp = (const int64_t *)b[3].buf;
        const int64_t *ep = (const int64_t *)b[5].buf;
        Py_ssize_t nb = b[5].shape[0];
        ok = ip[0] == 0 && ip[m] == c && ep[nb - 1] == d;
        for (Py_ssize_t a = 0; a < m && ok; a++) ok = ip[a] <= ip[a + 1];
        for (Py_ssize_t p = 0; p < c && ok; p++) ok = cp[p] >= 0 && cp[p] < n;
        for (Py_ssize_t j = 0; j < nb && ok; j++) ok = ep[j] > (j ? ep[j - 1] : 0);
        if (ok) {
            const float *qp = (const float *)b[0].buf, *xp = (const float *)b[1].buf;
            const float *op = held[4] ? (const float *)b[4].buf : NULL;
            float *outp = (float *)b[6].buf;
            Py_BEGIN_ALLOW_THREADS;
            for (Py_ssize_t a = 0; a < m; a++)
                if (ip[a + 1] > ip[a])
                    chain(qp + a * d, xp, d, cp + ip[a], ip[a + 1] - ip[a], ep, nb, op, outp + ip[a]);
            Py_END_ALLOW_THREADS;
        }
    }
    for (int j = 0; j < 7; j++)
        if (held[j]) PyBuffer_Release(&b[j]);
    if (!ok) {
        PyErr_SetString(PyExc_ValueError,
                        "chain_scores expects q (m, d) and x (n, d) float32, indptr (m + 1,) int64 "
                        "from 0 to len(cols), non-decreasing, cols (c,) int64 in [0, n), offset (n,) "
                        "float32 or None, ends (nb,) int64 increasing to d, out (c,) float32, "
                        "C-contiguous");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"bf16_prepare", bf16_prepare, METH_VARARGS,
     "bf16_prepare(x, bits, sq, rsq): bf16 bits (or None), squared norms and squared bf16 "
     "residual norms of the rows of a float32 matrix."},
    {"chain_scores", chain_scores, METH_VARARGS,
     "chain_scores(q, x, indptr, cols, offset, ends, out): the dot products of the given pairs as "
     "the BLAS's sgemm forms them (FMA chains restarted at the K panel ends), offset subtracted."},
    {"push", push, METH_VARARGS,
     "push(scores, offset, id_start, ids, rows, v, id, fill, thr, flo, k, floor_rank): offer a "
     "tile of scores to the running top-k (see the module comment)."},
    {"finish", finish, METH_VARARGS,
     "finish(v, id, fill, thr, flo, k): merge the buffers; v/id[:, :k] best first."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_topk_kernel", "Running top-k over streamed score tiles (C).", -1,
    methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__topk_kernel(void) {
    choose_isa();
    choose_chain_isa();
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddStringConstant(m, "ISA", ISA) < 0 ||
        PyModule_AddStringConstant(m, "CHAIN_ISA", CHAIN_ISA) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
