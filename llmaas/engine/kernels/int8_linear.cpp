// y = x W^T for weights stored as int8 in groups of 32 along K, each group with its own fp32 scale
// (W[n, 32g + i] = scale[n, g] * q[n, 32g + i], as llama.cpp's Q8_0), for the few rows a decode step has (M <= 8):
// memory-bound at the few rows of a decode step, so reading ~half the bytes of bf16 is the whole point. Each group
// of weights is scaled and widened once per block of up to 8 rows; sums in fp32, one rounding to T at the end.
//
// Layouts: x [M, K] fp32 or, with AVX-512 BF16, `xb` the same rows in bf16 (the weights are then scaled into bf16:
// one vdpbf16ps per 32 weights and row); q [N, K] int8 with K a multiple of 32; scale [N, K / 32] fp32; y [M, N] T
// (float, or bf16 as uint16). OpenMP over output rows.

#include <cstdint>

#include "bf16.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace {

using llmaas::store;

constexpr int64_t kGroup = 32;
constexpr int64_t kMaxRows = 8;

#if defined(__AVX512F__)
inline __m512 widen(const int8_t* p) {  // 16 int8 -> 16 fp32
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}
#endif

// y[m, n] for m < M <= kMaxRows: one output column of a block of rows (x, xb and y point at the block's first row).
template <typename T>
inline void column(const float* xf, const uint16_t* xb, const int8_t* w, const float* sc, T* y, int64_t M, int64_t K,
                   int64_t N) {
  const int64_t groups = K / kGroup;
  float acc[kMaxRows];
#if defined(__AVX512BF16__)
  if (xb != nullptr) {
    __m512 a[kMaxRows];
    for (int64_t m = 0; m < M; ++m) a[m] = _mm512_setzero_ps();
    for (int64_t g = 0; g < groups; ++g) {
      const __m512 s = _mm512_set1_ps(sc[g]);
      const int8_t* wg = w + g * kGroup;
      const __m512 lo = _mm512_mul_ps(widen(wg), s);
      const __m512 hi = _mm512_mul_ps(widen(wg + 16), s);
      const __m512bh wv = _mm512_cvtne2ps_pbh(hi, lo);
      for (int64_t m = 0; m < M; ++m)
        a[m] = _mm512_dpbf16_ps(a[m], (__m512bh)_mm512_loadu_si512(xb + m * K + g * kGroup), wv);
    }
    for (int64_t m = 0; m < M; ++m) acc[m] = _mm512_reduce_add_ps(a[m]);
  } else
#endif
#if defined(__AVX512F__)
  {
    __m512 a[kMaxRows];
    for (int64_t m = 0; m < M; ++m) a[m] = _mm512_setzero_ps();
    for (int64_t g = 0; g < groups; ++g) {
      const __m512 s = _mm512_set1_ps(sc[g]);
      for (int64_t h = 0; h < kGroup; h += 16) {
        const int8_t* wh = w + g * kGroup + h;
        const __m512 wv = _mm512_mul_ps(widen(wh), s);
        for (int64_t m = 0; m < M; ++m)
          a[m] = _mm512_fmadd_ps(_mm512_loadu_ps(xf + m * K + g * kGroup + h), wv, a[m]);
      }
    }
    for (int64_t m = 0; m < M; ++m) acc[m] = _mm512_reduce_add_ps(a[m]);
  }
#else
  {
    for (int64_t m = 0; m < M; ++m) {
      const float* xm = xf + m * K;
      float total = 0.f;
      for (int64_t g = 0; g < groups; ++g) {
        float s = 0.f;
#pragma omp simd reduction(+ : s)
        for (int64_t i = 0; i < kGroup; ++i) s += xm[g * kGroup + i] * static_cast<float>(w[g * kGroup + i]);
        total += s * sc[g];
      }
      acc[m] = total;
    }
  }
#endif
  for (int64_t m = 0; m < M; ++m) store(acc[m], y + m * N);
}

// Rows in blocks of kMaxRows: a block's accumulators stay in registers; each weight row is widened once per block
// (cheap next to the block's multiplies) and stays in L1 across blocks.
template <typename T>
void linear(const float* xf, const uint16_t* xb, const int8_t* q, const float* scale, T* y, int64_t M, int64_t K,
            int64_t N) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t m0 = 0; m0 < M; m0 += kMaxRows)
      column(xf == nullptr ? nullptr : xf + m0 * K, xb == nullptr ? nullptr : xb + m0 * K, q + n * K,
             scale + n * (K / kGroup), y + m0 * N + n, M - m0 < kMaxRows ? M - m0 : kMaxRows, K, N);
}

// w[n, k] = T(scale[n, k / 32] * q[n, k]): the dense weight for a large batch's matmul, rounded as the kernel does.
template <typename T>
void dequantize(const int8_t* q, const float* scale, T* w, int64_t N, int64_t K) {
  const int64_t groups = K / kGroup;
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t g = 0; g < groups; ++g) {
      const float s = scale[n * groups + g];
      const int8_t* qg = q + n * K + g * kGroup;
      T* wg = w + n * K + g * kGroup;
#pragma omp simd
      for (int64_t i = 0; i < kGroup; ++i) store(s * static_cast<float>(qg[i]), wg + i);
    }
}

}  // namespace

extern "C" {

void llmaas_int8_dequantize_f32(const int8_t* q, const float* scale, float* w, int64_t N, int64_t K) {
  dequantize(q, scale, w, N, K);
}

void llmaas_int8_dequantize_bf16(const int8_t* q, const float* scale, uint16_t* w, int64_t N, int64_t K) {
  dequantize(q, scale, w, N, K);
}

int llmaas_int8_group() { return static_cast<int>(kGroup); }

int llmaas_int8_has_bf16_dot() {
#if defined(__AVX512BF16__)
  return 1;
#else
  return 0;
#endif
}

void llmaas_int8_linear_f32(const float* x, const int8_t* q, const float* scale, float* y, int64_t M, int64_t K,
                            int64_t N) {
  linear(x, static_cast<const uint16_t*>(nullptr), q, scale, y, M, K, N);
}

// xb: x in bf16 (used with AVX-512 BF16), x: the same in fp32 (used without); the unused one may be null.
void llmaas_int8_linear_bf16(const float* x, const uint16_t* xb, const int8_t* q, const float* scale, uint16_t* y,
                             int64_t M, int64_t K, int64_t N) {
  linear(x, xb, q, scale, y, M, K, N);
}
}
