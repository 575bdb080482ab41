/* Statistics of logit rows in two passes over each row, for the logit lens.
 *
 * Built and loaded by perplex/row_stats_native.py. For each row z of n_vocab logits:
 *   pass 1: the k largest logits, descending (ties: the lower token id first);
 *   pass 2: with m = the largest logit and e = exp(z - m), the sums
 *           sums[0] = sum e, sums[1] = sum e * z, sums[2] = sum p_final * z (0 without
 *           p_final), sums[3] = the number of logits above z[final_id],
 *           accumulated in double. With p_out, the row's probabilities e / sum e.
 * Everything else (log Z, entropy, KL, probabilities) is arithmetic on these in Python.
 */
#include <math.h>
#include <stdint.h>

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
#else
#define LANES 1
#endif

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

static void top_k(const float *z, int64_t n, int k, float *vals, int64_t *ids) {
    for (int j = 0; j < k; j++) {
        vals[j] = -INFINITY;
        ids[j] = -1;
    }
    for (int64_t i = 0; i < k; i++) {
        insert_top(vals, ids, (int)(i + 1), z[i], i);
    }
    int64_t i = k;
#if LANES == 8
    __m256 low = _mm256_set1_ps(vals[k - 1]);
    for (; i + 8 <= n; i += 8) {
        int mask = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(z + i), low, _CMP_GT_OQ));
        if (mask == 0) continue;
        for (; mask; mask &= mask - 1) {
            int b = __builtin_ctz(mask);
            if (z[i + b] > vals[k - 1]) insert_top(vals, ids, k, z[i + b], i + b);
        }
        low = _mm256_set1_ps(vals[k - 1]);
    }
#endif
    for (; i < n; i++) {
        if (z[i] > vals[k - 1]) insert_top(vals, ids, k, z[i], i);
    }
}

#if LANES == 8
static double sum_lanes(__m256d a, __m256d b) {
    double lanes[4];
    _mm256_storeu_pd(lanes, _mm256_add_pd(a, b));
    return (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
}

/* Adds 8 floats to 4 doubles (low and high halves summed lane-wise). */
static __m256d add_to_double(__m256d acc, __m256 v) {
    return _mm256_add_pd(acc, _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)),
                                            _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1))));
}
#endif

/* Elements summed in float before their sums join the double totals: each float lane adds
 * at most BLOCK / 16 terms, so its rounding stays near 1e-7 relative. */
#define BLOCK 256

static void row_sums(const float *z, int64_t n, float m, float z_final, const float *p_final,
                     float *p_out, double *sums) {
    double total = 0.0, weighted = 0.0, cross = 0.0;
    int64_t above = 0, i = 0;
#if LANES == 8
    const __m256 max8 = _mm256_set1_ps(m), final8 = _mm256_set1_ps(z_final);
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
            /* a comparison's lanes are all ones (-1) where v > z_final */
            count = _mm256_sub_epi32(count, _mm256_castps_si256(
                _mm256_cmp_ps(v0, final8, _CMP_GT_OQ)));
            count = _mm256_sub_epi32(count, _mm256_castps_si256(
                _mm256_cmp_ps(v1, final8, _CMP_GT_OQ)));
        }
        total4 = add_to_double(total4, _mm256_add_ps(t0, t1));
        weighted4 = add_to_double(weighted4, _mm256_add_ps(w0, w1));
        cross4 = add_to_double(cross4, _mm256_add_ps(c0, c1));
    }
    total = sum_lanes(total4, _mm256_setzero_pd());
    weighted = sum_lanes(weighted4, _mm256_setzero_pd());
    cross = sum_lanes(cross4, _mm256_setzero_pd());
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
        above += z[i] > z_final;
    }
    if (p_out) {
        float scale = (float)(1.0 / total);
        for (int64_t j = 0; j < n; j++) p_out[j] *= scale;
    }
    sums[0] = total;
    sums[1] = weighted;
    sums[2] = cross;
    sums[3] = (double)above;
}

/* Rows [n_rows, n_vocab] of logits z (contiguous). final_ids: the token each row's rank is
 * taken of, or NULL for each row's own top-1. p_final [n_rows, n_vocab] or NULL; p_out the
 * same or NULL. top_vals, top_ids: [n_rows, k]; sums: [n_rows, 4] (see the top). */
void row_stats(const float *z, int64_t n_rows, int64_t n_vocab, int k, const int64_t *final_ids,
               const float *p_final, float *p_out, float *top_vals, int64_t *top_ids,
               double *sums) {
    for (int64_t r = 0; r < n_rows; r++) {
        const float *row = z + r * n_vocab;
        float *vals = top_vals + r * k;
        int64_t *ids = top_ids + r * k;
        top_k(row, n_vocab, k, vals, ids);
        int64_t final_id = final_ids ? final_ids[r] : ids[0];
        row_sums(row, n_vocab, vals[0], row[final_id], p_final ? p_final + r * n_vocab : 0,
                 p_out ? p_out + r * n_vocab : 0, sums + 4 * r);
    }
}
