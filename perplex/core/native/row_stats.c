/* Statistics of logit rows for the logit lens, built and loaded by row_stats.py.
 *
 * A row's state is its k largest logits (descending; ties: the lower token id first), the
 * first of which is its largest logit m, and sums accumulated in double with e = exp(z - m):
 *   sums[0] = sum e, sums[1] = sum e * z, sums[2] = sum p_final * z,
 *   sums[3] = the number of logits above `hi`,
 * plus the logits in the band (lo, hi], kept for the caller to count exactly. A row is fed
 * span by span (all of it at once, or one vocabulary tile at a time), each span read twice
 * while it is in cache: top-k, then one fused pass of exp and sums. When a later
 * span raises m, the sums of e so far are rescaled (as in an online softmax).
 * Log Z, entropy, KL and probabilities are arithmetic on these, done in Python.
 *
 * Built with OpenMP, rows are split between n_threads threads of the process's OpenMP
 * runtime: torch's own (it ships libgomp.so.1, which the loader reuses), whose workers are
 * still spinning after the matmul that made the logits, so they start at once.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define LANES 8

/* exp of 8 floats x <= 0 (Cephes' expf: x = n ln 2 + r, |r| <= ln 2 / 2, exp r by a degree-6
 * polynomial), within 2e-7 relative; below -87.3 (where expf leaves the normal floats) it
 * gives exp(-87.3). */
static inline __m256 exp8(__m256 x) {
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.3f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i two_n = _mm256_slli_epi32(
        _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(two_n));
}

/* natural log of 8 floats x > 0 (Cephes' logf: x = 2^e * f, f in [sqrt(1/2), sqrt(2)), log f
 * by a degree-8 polynomial in f - 1), within 2e-7 relative; x below the normal floats
 * is taken as FLT_MIN. */
static inline __m256 log8(__m256 x) {
    x = _mm256_max_ps(x, _mm256_set1_ps(1.17549435e-38f));
    __m256i bits = _mm256_castps_si256(x);
    __m256 e = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(bits, 23),
                                                   _mm256_set1_epi32(126)));
    /* the mantissa as f in [0.5, 1) */
    __m256 f = _mm256_castsi256_ps(_mm256_or_si256(
        _mm256_and_si256(bits, _mm256_set1_epi32(0x007fffff)), _mm256_set1_epi32(0x3f000000)));
    __m256 small = _mm256_cmp_ps(f, _mm256_set1_ps(0.707106781186547524f), _CMP_LT_OQ);
    e = _mm256_sub_ps(e, _mm256_and_ps(small, _mm256_set1_ps(1.0f)));
    f = _mm256_add_ps(_mm256_sub_ps(f, _mm256_set1_ps(1.0f)), _mm256_and_ps(small, f));
    __m256 z = _mm256_mul_ps(f, f);
    __m256 y = _mm256_set1_ps(7.0376836292e-2f);
    y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(-1.1514610310e-1f));
    y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(1.1676998740e-1f));
    y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(-1.2420140846e-1f));
    y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(1.4249322787e-1f));
    y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(-1.6668057665e-1f));
    y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(2.0000714765e-1f));
    y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(-2.4999993993e-1f));
    y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(3.3333331174e-1f));
    y = _mm256_mul_ps(_mm256_mul_ps(y, f), z);
    y = _mm256_fmadd_ps(e, _mm256_set1_ps(-2.12194440e-4f), y);
    y = _mm256_fnmadd_ps(z, _mm256_set1_ps(0.5f), y);
    return _mm256_fmadd_ps(e, _mm256_set1_ps(0.693359375f), _mm256_add_ps(f, y));
}

static double sum_lanes(__m256d v) {
    double lanes[4];
    _mm256_storeu_pd(lanes, v);
    return (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
}

/* Adds 8 floats to 4 doubles (low and high halves summed lane-wise). */
static __m256d add_to_double(__m256d acc, __m256 v) {
    return _mm256_add_pd(acc, _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)),
                                            _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1))));
}
#else
#define LANES 1
#endif

/* Elements summed in float before their sums join the double totals: each float lane adds
 * at most BLOCK / 16 terms, so its rounding stays near 1e-7 relative. */
#define BLOCK 256

typedef struct {
    float *top_vals;    /* [k]; top_vals[0] is m */
    int64_t *top_ids;   /* [k] */
    double *sums;       /* [4] */
    float *band;        /* [band_cap] or NULL */
    int32_t *band_count;
} RowState;

/* Put (v, id) into the descending list of k, dropping its last entry; equal values keep
 * their earlier (lower-id) entries ahead. */
static void insert_top(float *vals, int64_t *ids, int k, float v, int64_t id) {
    int j = k - 1;
    while (j > 0 && vals[j - 1] < v) {
        vals[j] = vals[j - 1];
        ids[j] = ids[j - 1];
        j--;
    }
    vals[j] = v;
    ids[j] = id;
}

/* Pass 1: the span's candidates for the top-k. */
static void add_top_k(const float *z, int64_t n, int64_t id0, int k, RowState s) {
    float *vals = s.top_vals;
    int64_t *ids = s.top_ids, i = 0;
#if LANES == 8
    __m256 low = _mm256_set1_ps(vals[k - 1]);
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(z + i);
        int mask = _mm256_movemask_ps(_mm256_cmp_ps(v, low, _CMP_GT_OQ));
        if (mask == 0) continue;
        for (; mask; mask &= mask - 1) {
            int b = __builtin_ctz(mask);
            if (z[i + b] > vals[k - 1]) insert_top(vals, ids, k, z[i + b], id0 + i + b);
        }
        low = _mm256_set1_ps(vals[k - 1]);
    }
#endif
    for (; i < n; i++) {
        if (z[i] > vals[k - 1]) insert_top(vals, ids, k, z[i], id0 + i);
    }
}

static void keep_in_band(RowState s, int band_cap, float v) {
    if (*s.band_count < band_cap) s.band[*s.band_count] = v;
    ++*s.band_count;
}

/* Pass 2: exp and the sums of one span, with e = exp(z - m) for the row's current m. */
static void add_sums(const float *z, int64_t n, float lo, float hi, const float *p_final,
                     float *p_out, RowState s, int band_cap) {
    const float m = s.top_vals[0];
    double total = 0.0, weighted = 0.0, cross = 0.0;
    int64_t above = 0, i = 0;
    int band = s.band != 0 && lo < hi;
#if LANES == 8
    const __m256 max8 = _mm256_set1_ps(m), lo8 = _mm256_set1_ps(lo), hi8 = _mm256_set1_ps(hi);
    __m256d total4 = _mm256_setzero_pd(), weighted4 = total4, cross4 = total4;
    __m256i count = _mm256_setzero_si256();
    for (; i + BLOCK <= n; i += BLOCK) {
        /* two interleaved sets of accumulators, so that additions do not wait on each other */
        __m256 t0 = _mm256_setzero_ps(), t1 = t0, w0 = t0, w1 = t0, c0 = t0, c1 = t0;
        for (int64_t j = i; j < i + BLOCK; j += 16) {
            __m256 v0 = _mm256_loadu_ps(z + j), v1 = _mm256_loadu_ps(z + j + 8);
            __m256 e0 = exp8(_mm256_sub_ps(v0, max8)), e1 = exp8(_mm256_sub_ps(v1, max8));
            if (p_out) {
                _mm256_storeu_ps(p_out + j, e0);
                _mm256_storeu_ps(p_out + j + 8, e1);
            }
            t0 = _mm256_add_ps(t0, e0);
            t1 = _mm256_add_ps(t1, e1);
            w0 = _mm256_fmadd_ps(e0, v0, w0);
            w1 = _mm256_fmadd_ps(e1, v1, w1);
            if (p_final) {
                c0 = _mm256_fmadd_ps(_mm256_loadu_ps(p_final + j), v0, c0);
                c1 = _mm256_fmadd_ps(_mm256_loadu_ps(p_final + j + 8), v1, c1);
            }
            /* a comparison's lanes are all ones (-1) where it holds */
            __m256 up0 = _mm256_cmp_ps(v0, hi8, _CMP_GT_OQ);
            __m256 up1 = _mm256_cmp_ps(v1, hi8, _CMP_GT_OQ);
            count = _mm256_sub_epi32(count, _mm256_castps_si256(up0));
            count = _mm256_sub_epi32(count, _mm256_castps_si256(up1));
            if (band) {
                int in0 = _mm256_movemask_ps(_mm256_andnot_ps(
                    up0, _mm256_cmp_ps(v0, lo8, _CMP_GT_OQ)));
                int in1 = _mm256_movemask_ps(_mm256_andnot_ps(
                    up1, _mm256_cmp_ps(v1, lo8, _CMP_GT_OQ)));
                for (; in0; in0 &= in0 - 1) keep_in_band(s, band_cap, z[j + __builtin_ctz(in0)]);
                for (; in1; in1 &= in1 - 1)
                    keep_in_band(s, band_cap, z[j + 8 + __builtin_ctz(in1)]);
            }
        }
        total4 = add_to_double(total4, _mm256_add_ps(t0, t1));
        weighted4 = add_to_double(weighted4, _mm256_add_ps(w0, w1));
        cross4 = add_to_double(cross4, _mm256_add_ps(c0, c1));
    }
    total = sum_lanes(total4);
    weighted = sum_lanes(weighted4);
    cross = sum_lanes(cross4);
    int32_t counts[8];
    _mm256_storeu_si256((__m256i *)counts, count);
    for (int j = 0; j < 8; j++) above += counts[j];
#endif
    for (; i < n; i++) {
        float e = expf(z[i] - m);
        if (p_out) p_out[i] = e;
        total += e;
        weighted += (double)e * z[i];
        if (p_final) cross += (double)p_final[i] * z[i];
        above += z[i] > hi;
        if (band && z[i] > lo && z[i] <= hi) keep_in_band(s, band_cap, z[i]);
    }
    s.sums[0] += total;
    s.sums[1] += weighted;
    s.sums[2] += cross;
    s.sums[3] += (double)above;
}

/* Both passes over one span of a row, rescaling the sums of e when m rises. */
static void add_span(const float *z, int64_t n, int64_t id0, int k, float lo, float hi,
                     const float *p_final, float *p_out, RowState s, int band_cap) {
    float before = s.top_vals[0];
    add_top_k(z, n, id0, k, s);
    if (s.top_vals[0] > before) {
        double scale = exp((double)before - (double)s.top_vals[0]); /* 0 for the first span */
        s.sums[0] *= scale;
        s.sums[1] *= scale;
    }
    add_sums(z, n, lo, hi, p_final, p_out, s, band_cap);
}

static void start_row(RowState s, int k) {
    for (int j = 0; j < k; j++) {
        s.top_vals[j] = -INFINITY;
        s.top_ids[j] = -1;
    }
    for (int j = 0; j < 4; j++) s.sums[j] = 0.0;
}

/* 1 where the functions below split their rows between threads themselves. */
int splits_rows(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

/* Whole rows [n_rows, n_vocab] of logits z (contiguous), each in one span. final_ids: the
 * token whose rank is counted (sums[3] = logits above its logit), or NULL for each row's own
 * top-1. p_final [n_rows, n_vocab] or NULL; p_out, the same or NULL, receives each row's
 * probabilities. top_vals, top_ids: [n_rows, k]; sums: [n_rows, 4]. n_threads: see the top. */
void row_stats(const float *z, int64_t n_rows, int64_t n_vocab, int k, const int64_t *final_ids,
               const float *p_final, float *p_out, float *top_vals, int64_t *top_ids,
               double *sums, int n_threads) {
    (void)n_threads;
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int64_t r = 0; r < n_rows; r++) {
        const float *row = z + r * n_vocab;
        RowState s = {top_vals + r * k, top_ids + r * k, sums + 4 * r, 0, 0};
        start_row(s, k);
        /* the final token's logit is only known after pass 1 when it is the row's top-1 */
        add_top_k(row, n_vocab, 0, k, s);
        float z_final = row[final_ids ? final_ids[r] : s.top_ids[0]];
        float *probs = p_out ? p_out + r * n_vocab : 0;
        add_sums(row, n_vocab, z_final, z_final, p_final ? p_final + r * n_vocab : 0, probs, s,
                 0);
        if (probs) {
            float scale = (float)(1.0 / s.sums[0]);
            for (int64_t j = 0; j < n_vocab; j++) probs[j] *= scale;
        }
    }
}

/* One vocabulary tile z [n_rows, n_cols] (token ids col0 ...) of rows whose state persists
 * between calls; start = 1 on a row's first tile. Row r is at position r % positions: its
 * final token final_ids[position], p_final's row `position` (row stride n_vocab, or NULL).
 * Logits above hi[r] are counted, those in (lo[r], hi[r]] kept in band [n_rows, band_cap]
 * (band_count counts them all, past band_cap too), and the final token's own logit is
 * written to final_logit[r] when its tile comes. n_threads: see the top. */
void tile_stats(const float *z, int64_t n_rows, int64_t n_cols, int64_t col0, int k,
                int start, int64_t first_row, int64_t positions, const int64_t *final_ids,
                const float *p_final, int64_t n_vocab, const float *lo, const float *hi,
                float *top_vals, int64_t *top_ids, double *sums, float *band,
                int32_t *band_count, int band_cap, float *final_logit, int n_threads) {
    (void)n_threads;
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int64_t r = 0; r < n_rows; r++) {
        const float *row = z + r * n_cols;
        int64_t position = (first_row + r) % positions, final_id = final_ids[position];
        RowState s = {top_vals + r * k, top_ids + r * k, sums + 4 * r, band + r * band_cap,
                      band_count + r};
        if (start) {
            start_row(s, k);
            *s.band_count = 0;
        }
        add_span(row, n_cols, col0, k, lo[r], hi[r],
                 p_final ? p_final + position * n_vocab + col0 : 0, 0, s, band_cap);
        if (final_id >= col0 && final_id < col0 + n_cols) final_logit[r] = row[final_id - col0];
    }
}

/* Pass 1 of a pair of rows: both largest logits, and whether the rows differ anywhere. */
static int pair_max(const float *za, const float *zb, int64_t n, float *ma, float *mb) {
    float a = -INFINITY, b = -INFINITY;
    int differ = 0;
    int64_t i = 0;
#if LANES == 8
    __m256 a8 = _mm256_set1_ps(-INFINITY), b8 = a8;
    __m256 diff8 = _mm256_setzero_ps();
    for (; i + 8 <= n; i += 8) {
        __m256 va = _mm256_loadu_ps(za + i), vb = _mm256_loadu_ps(zb + i);
        a8 = _mm256_max_ps(a8, va);
        b8 = _mm256_max_ps(b8, vb);
        diff8 = _mm256_or_ps(diff8, _mm256_cmp_ps(va, vb, _CMP_NEQ_UQ));
    }
    float lanes_a[8], lanes_b[8];
    _mm256_storeu_ps(lanes_a, a8);
    _mm256_storeu_ps(lanes_b, b8);
    for (int j = 0; j < 8; j++) {
        a = lanes_a[j] > a ? lanes_a[j] : a;
        b = lanes_b[j] > b ? lanes_b[j] : b;
    }
    differ = _mm256_movemask_ps(diff8) != 0;
#endif
    for (; i < n; i++) {
        a = za[i] > a ? za[i] : a;
        b = zb[i] > b ? zb[i] : b;
        differ |= za[i] != zb[i];
    }
    *ma = a;
    *mb = b;
    return differ;
}

/* Pass 2: with s = z - m and e = exp s on each side, sums[0..5] = sum e_a, sum e_b,
 * sum e_a s_a, sum e_b s_b, sum e_a (s_a - s_b), sum e_b (s_b - s_a); e_a, e_b kept. */
static void pair_sums(const float *za, const float *zb, int64_t n, float ma, float mb,
                      float *ea, float *eb, double *sums) {
    double t[6] = {0, 0, 0, 0, 0, 0};
    int64_t i = 0;
#if LANES == 8
    const __m256 ma8 = _mm256_set1_ps(ma), mb8 = _mm256_set1_ps(mb);
    __m256d acc[6];
    for (int j = 0; j < 6; j++) acc[j] = _mm256_setzero_pd();
    for (; i + BLOCK <= n; i += BLOCK) {
        __m256 f[6];
        for (int j = 0; j < 6; j++) f[j] = _mm256_setzero_ps();
        for (int64_t j = i; j < i + BLOCK; j += 8) {
            __m256 sa = _mm256_sub_ps(_mm256_loadu_ps(za + j), ma8);
            __m256 sb = _mm256_sub_ps(_mm256_loadu_ps(zb + j), mb8);
            __m256 xa = exp8(sa), xb = exp8(sb), d = _mm256_sub_ps(sa, sb);
            _mm256_storeu_ps(ea + j, xa);
            _mm256_storeu_ps(eb + j, xb);
            f[0] = _mm256_add_ps(f[0], xa);
            f[1] = _mm256_add_ps(f[1], xb);
            f[2] = _mm256_fmadd_ps(xa, sa, f[2]);
            f[3] = _mm256_fmadd_ps(xb, sb, f[3]);
            f[4] = _mm256_fmadd_ps(xa, d, f[4]);
            f[5] = _mm256_fnmadd_ps(xb, d, f[5]);
        }
        for (int j = 0; j < 6; j++) acc[j] = add_to_double(acc[j], f[j]);
    }
    for (int j = 0; j < 6; j++) t[j] = sum_lanes(acc[j]);
#endif
    for (; i < n; i++) {
        float sa = za[i] - ma, sb = zb[i] - mb, xa = expf(sa), xb = expf(sb);
        ea[i] = xa;
        eb[i] = xb;
        t[0] += xa;
        t[1] += xb;
        t[2] += (double)xa * sa;
        t[3] += (double)xb * sb;
        t[4] += (double)xa * (sa - sb);
        t[5] += (double)xb * (sb - sa);
    }
    for (int j = 0; j < 6; j++) sums[j] = t[j];
}

/* Pass 3: sum m and sum m log m for the mixture m = ca e_a + cb e_b (0 log 0 = 0). */
static void mixture_sums(const float *ea, const float *eb, int64_t n, float ca, float cb,
                         double *mass, double *mlogm) {
    double total = 0.0, weighted = 0.0;
    int64_t i = 0;
#if LANES == 8
    const __m256 ca8 = _mm256_set1_ps(ca), cb8 = _mm256_set1_ps(cb);
    __m256d total4 = _mm256_setzero_pd(), weighted4 = total4;
    for (; i + BLOCK <= n; i += BLOCK) {
        __m256 t = _mm256_setzero_ps(), w = t;
        for (int64_t j = i; j < i + BLOCK; j += 8) {
            __m256 m = _mm256_fmadd_ps(_mm256_loadu_ps(ea + j), ca8,
                                       _mm256_mul_ps(_mm256_loadu_ps(eb + j), cb8));
            t = _mm256_add_ps(t, m);
            w = _mm256_fmadd_ps(m, log8(m), w);
        }
        total4 = add_to_double(total4, t);
        weighted4 = add_to_double(weighted4, w);
    }
    total = sum_lanes(total4);
    weighted = sum_lanes(weighted4);
#endif
    for (; i < n; i++) {
        float m = ea[i] * ca + eb[i] * cb;
        total += m;
        if (m > 0) weighted += (double)m * logf(m);
    }
    *mass = total;
    *mlogm = weighted;
}

/* KL(p||q), KL(q||p) and JS (nats) of the softmax of rows za, zb [n_rows, n_vocab] (finite
 * logits, contiguous), into out [n_rows, 3]: three passes over each pair of rows, sums in
 * double. Rows that are equal everywhere give exactly 0. Returns 0, or -1 where the scratch
 * space (2 n_vocab floats per thread) could not be allocated. n_threads: see the top. */
int pair_divergence(const float *za, const float *zb, int64_t n_rows, int64_t n_vocab,
                    double *out, int n_threads) {
    int failed = 0;
    (void)n_threads;
#pragma omp parallel num_threads(n_threads) reduction(| : failed)
    {
        float *scratch = malloc(2 * (size_t)n_vocab * sizeof(float));
        failed = scratch == 0;
#pragma omp for schedule(static)
        for (int64_t r = 0; r < n_rows; r++) {
            const float *a = za + r * n_vocab, *b = zb + r * n_vocab;
            double *o = out + 3 * r;
            float ma, mb;
            if (!scratch || !pair_max(a, b, n_vocab, &ma, &mb)) {
                o[0] = o[1] = o[2] = 0.0;
                continue;
            }
            double s[6], mass, mlogm;
            pair_sums(a, b, n_vocab, ma, mb, scratch, scratch + n_vocab, s);
            double log_a = log(s[0]), log_b = log(s[1]);
            o[0] = s[4] / s[0] - log_a + log_b;
            o[1] = s[5] / s[1] - log_b + log_a;
            mixture_sums(scratch, scratch + n_vocab, n_vocab, (float)(0.5 / s[0]),
                         (float)(0.5 / s[1]), &mass, &mlogm);
            /* the mixture's float weights sum to `mass`, 1 up to rounding: H of the
             * normalised mixture is (log mass - mlogm / mass) */
            double h_m = log(mass) - mlogm / mass;
            double h_a = log_a - s[2] / s[0], h_b = log_b - s[3] / s[1];
            o[2] = h_m - 0.5 * (h_a + h_b);
        }
        free(scratch);
    }
    return failed ? -1 : 0;
}
