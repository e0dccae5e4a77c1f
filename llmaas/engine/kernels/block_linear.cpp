// y = x W^T in fp32 for weights stored in llama.cpp's blocks of 32 along K, dequantized on the fly exactly as
// gguf-py (and so transformers) dequantizes them: Q4_1, W = (d * q) + m with q in [0, 15], and Q8_0, W = q * d with
// q in [-128, 127]; d and m are fp16 values held as fp32, products and sums rounded one by one (built with
// -ffp-contract=off, so the compiler fuses nothing the reference does not). The weights are then the fp32 weights
// bit for bit; only the order of the dot products' additions differs from MKL's.
//
// Why: a GGUF model served in fp32 streams 4 bytes per weight per decode step; these blocks are 0.75 (Q4_1) or 1.125
// (Q8_0), scales included. One path for every row count: a few output rows are dequantized into a per-thread scratch (in L1/L2),
// then register tiles of 3 rows x 4 outputs multiply it by blocks of up to 64 input rows.
//
// Layouts: x [M, K] fp32, K a multiple of 32; Q4_1: q [N, K / 2] uint8, byte j of block g holding q[32g + j] in its
// low nibble and q[32g + 16 + j] in its high one (GGUF's order), d and m [N, K / 32] fp32; Q8_0: q [N, K] int8, d
// [N, K / 32] fp32; y [M, N] fp32. OpenMP over groups of output rows.

#include <cstdint>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define LLMAAS_AVX2 1
#endif

namespace {

constexpr int64_t kGroup = 32;
// A register tile: 3 x rows by 4 output rows, 12 accumulators and 4 weight vectors. Measured on Zen 3 (AVX2, 2
// threads, weights from memory): 1.2-1.3x the GFLOP/s of 4 x 3 at 32-64 rows, and 4 x 4 (which spills) slower.
constexpr int64_t kTileRows = 3;
constexpr int64_t kTileCols = 4;
constexpr int64_t kChunkRows = 64;  // x rows per pass over the weights: a chunk stays in L2 while it is reused

struct Q4 {
  const uint8_t* q;
  const float* d;
  const float* m;
};

struct Q8 {
  const int8_t* q;
  const float* d;
};

// Row n of the weight, dequantized into out[0, K).
void dequantize_row(const Q4& w, int64_t n, int64_t K, float* out) {
  const int64_t groups = K / kGroup;
  const uint8_t* q = w.q + n * (K / 2);
  const float* d = w.d + n * groups;
  const float* m = w.m + n * groups;
  for (int64_t g = 0; g < groups; ++g) {
    float* o = out + g * kGroup;
    const uint8_t* b = q + g * (kGroup / 2);
#if defined(LLMAAS_AVX2)
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b));
    const __m128i nibble = _mm_set1_epi8(0x0f);
    const __m128i lo = _mm_and_si128(raw, nibble);
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(raw, 4), nibble);
    const __m256 dv = _mm256_set1_ps(d[g]);
    const __m256 mv = _mm256_set1_ps(m[g]);
    const __m128i parts[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
    for (int i = 0; i < 4; ++i) {
      const __m256 qv = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(parts[i]));
      _mm256_storeu_ps(o + 8 * i, _mm256_add_ps(_mm256_mul_ps(dv, qv), mv));
    }
#else
    for (int64_t j = 0; j < kGroup / 2; ++j) {
      o[j] = d[g] * static_cast<float>(b[j] & 0x0f) + m[g];
      o[j + kGroup / 2] = d[g] * static_cast<float>(b[j] >> 4) + m[g];
    }
#endif
  }
}

void dequantize_row(const Q8& w, int64_t n, int64_t K, float* out) {
  const int64_t groups = K / kGroup;
  const int8_t* q = w.q + n * K;
  const float* d = w.d + n * groups;
  for (int64_t g = 0; g < groups; ++g) {
#if defined(LLMAAS_AVX2)
    const __m256 dv = _mm256_set1_ps(d[g]);
    for (int64_t i = 0; i < kGroup; i += 8) {
      const __m128i raw = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + g * kGroup + i));
      _mm256_storeu_ps(out + g * kGroup + i, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(raw)), dv));
    }
#else
    for (int64_t i = 0; i < kGroup; ++i) out[g * kGroup + i] = static_cast<float>(q[g * kGroup + i]) * d[g];
#endif
  }
}

#if defined(LLMAAS_AVX2)
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
#endif

// y[i, j] = x[i, :] . w[j, :] for i < R, j < C: R x C dot products over K, their accumulators in registers.
template <int R, int C>
void tile(const float* x, const float* w, float* y, int64_t K, int64_t N) {
#if defined(LLMAAS_AVX2)
  __m256 acc[R][C];
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < C; ++j) acc[i][j] = _mm256_setzero_ps();
  for (int64_t k = 0; k < K; k += 8) {
    __m256 wv[C];
    for (int j = 0; j < C; ++j) wv[j] = _mm256_loadu_ps(w + j * K + k);
    for (int i = 0; i < R; ++i) {
      const __m256 xv = _mm256_loadu_ps(x + i * K + k);
      for (int j = 0; j < C; ++j) acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);
    }
  }
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < C; ++j) y[i * N + j] = hsum(acc[i][j]);
#else
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < C; ++j) {
      float s = 0.f;
#pragma omp simd reduction(+ : s)
      for (int64_t k = 0; k < K; ++k) s += x[i * K + k] * w[j * K + k];
      y[i * N + j] = s;
    }
#endif
}

template <int C>
void tile_rows(const float* x, const float* w, float* y, int64_t rows, int64_t K, int64_t N) {
  int64_t i = 0;
  for (; i + kTileRows <= rows; i += kTileRows) tile<kTileRows, C>(x + i * K, w, y + i * N, K, N);
  switch (rows - i) {
    case 2: tile<2, C>(x + i * K, w, y + i * N, K, N); break;
    case 1: tile<1, C>(x + i * K, w, y + i * N, K, N); break;
    default: break;
  }
}

template <typename W>
void linear(const float* x, const W& w, float* y, int64_t M, int64_t K, int64_t N) {
  const int64_t col_groups = (N + kTileCols - 1) / kTileCols;
#pragma omp parallel
  {
    thread_local std::vector<float> scratch;
    scratch.resize(kTileCols * K);
    for (int64_t m0 = 0; m0 < M; m0 += kChunkRows) {
      const int64_t rows = M - m0 < kChunkRows ? M - m0 : kChunkRows;
#pragma omp for schedule(static)
      for (int64_t c = 0; c < col_groups; ++c) {
        const int64_t n0 = c * kTileCols;
        const int64_t cols = N - n0 < kTileCols ? N - n0 : kTileCols;
        for (int64_t j = 0; j < cols; ++j) dequantize_row(w, n0 + j, K, scratch.data() + j * K);
        const float* xs = x + m0 * K;
        float* ys = y + m0 * N + n0;
        if (cols == 4)
          tile_rows<4>(xs, scratch.data(), ys, rows, K, N);
        else if (cols == 3)
          tile_rows<3>(xs, scratch.data(), ys, rows, K, N);
        else if (cols == 2)
          tile_rows<2>(xs, scratch.data(), ys, rows, K, N);
        else
          tile_rows<1>(xs, scratch.data(), ys, rows, K, N);
      }
    }
  }
}

template <typename W>
void dequantize(const W& w, float* out, int64_t N, int64_t K) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) dequantize_row(w, n, K, out + n * K);
}

}  // namespace

extern "C" {

// 1 where the AVX2 path is built: the only one measured against the dense matmul, so the only one the engine uses.
int llmaas_block_linear_avx2() {
#if defined(LLMAAS_AVX2)
  return 1;
#else
  return 0;
#endif
}

void llmaas_q4_1_linear(const float* x, const uint8_t* q, const float* d, const float* m, float* y, int64_t M,
                        int64_t K, int64_t N) {
  linear(x, Q4{q, d, m}, y, M, K, N);
}

void llmaas_q8_0_linear(const float* x, const int8_t* q, const float* d, float* y, int64_t M, int64_t K, int64_t N) {
  linear(x, Q8{q, d}, y, M, K, N);
}

void llmaas_q4_1_dequantize(const uint8_t* q, const float* d, const float* m, float* w, int64_t N, int64_t K) {
  dequantize(Q4{q, d, m}, w, N, K);
}

void llmaas_q8_0_dequantize(const int8_t* q, const float* d, float* w, int64_t N, int64_t K) {
  dequantize(Q8{q, d}, w, N, K);
}
}
