// y = x W^T in fp32 for weights stored in llama.cpp's blocks of 32 along K, dequantized on the fly exactly as
// gguf-py (and so transformers) dequantizes them: Q4_1, W = (d * q) + m with q in [0, 15], and Q8_0, W = q * d with
// q in [-128, 127]; d and m are fp16 values held as fp32, products and sums rounded one by one (built with
// -ffp-contract=off, so the compiler fuses nothing the reference does not). The weights are then the fp32 weights
// bit for bit; only the order of the dot products' additions differs from MKL's.
//
// Why: a GGUF model served in fp32 streams 4 bytes per weight per decode step; these blocks are 0.75 (Q4_1) or 1.125
// (Q8_0), scales included. Three paths by row count, all on those exact weights:
// - up to kDirectRows rows (decode at low concurrency, bound by how fast weights are made): each block's weights are
//   made in registers and used by every row at once (`direct`);
// - more rows, compute-bound, one of two paths, whichever block_linear.py times faster on the CPU at load:
//   - each thread dequantizes panels of its output rows and hands them to OpenBLAS's sgemm (`panels`), whose packed
//     micro-kernels beat ours on Zen 3 (1.2-1.6x) and lose on Zen 1 (0.5x);
//   - a few output rows are dequantized into a per-thread scratch (in L1), then register tiles of 3 rows x 4
//     outputs multiply it by chunks of up to 64 input rows (`tile`), adding in direct's order.
//
// Layouts: x [M, K] fp32, K a multiple of 32; Q4_1: q [N, K / 2] uint8, byte j of block g holding q[32g + j] in its
// low nibble and q[32g + 16 + j] in its high one (GGUF's order), d and m [N, K / 32] fp32; Q8_0: q [N, K] int8, d
// [N, K / 32] fp32; y [M, N] fp32. OpenMP over groups of output rows.

#include <cstdint>
#include <vector>

#include <omp.h>

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
// Up to this many rows, `direct`; above, OpenBLAS where it is handed over, else the tiles. Measured on Zen 3 (2
// threads, a SmolLM2 step's 121 projections, weights from memory): direct 1.3-1.5x the tiles at 1-8 rows; OpenBLAS
// on dequantized panels 1.2-1.4x the tiles at 32-64 rows (even inside whole decode steps) and 1.6x at 170 (a
// 128-token prefill: 1.39x, bench/engine_step.py), where it is also 1.7x MKL on the dequantized weight.
constexpr int64_t kDirectRows = 8;
constexpr int64_t kPanelBytes = 256 << 10;  // a thread's dequantized panel: stays in L2 while sgemm packs it
constexpr int64_t kPrefetchRows = kTileCols;  // a thread's next group of output rows (static schedule)

struct Q4 {
  const uint8_t* q;
  const float* d;
  const float* m;
};

struct Q8 {
  const int8_t* q;
  const float* d;
};

#if defined(LLMAAS_AVX2)
// Block g of weight row n as 4 vectors, weights [32g + 8p, 32g + 8p + 8) in v[p], rounded as gguf-py rounds them.
inline void block_vectors(const Q4& w, int64_t n, int64_t g, int64_t K, __m256 v[4]) {
  const int64_t groups = K / kGroup;
  const uint8_t* b = w.q + n * (K / 2) + g * (kGroup / 2);
  const __m256 d = _mm256_set1_ps(w.d[n * groups + g]);
  const __m256 m = _mm256_set1_ps(w.m[n * groups + g]);
  for (int h = 0; h < 2; ++h) {  // bytes [8h, 8h + 8) hold q[8h + t] in their low nibbles, q[16 + 8h + t] in high
    const __m256i q = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(b + 8 * h)));
    const __m256 lo = _mm256_cvtepi32_ps(_mm256_and_si256(q, _mm256_set1_epi32(0x0f)));
    const __m256 hi = _mm256_cvtepi32_ps(_mm256_srli_epi32(q, 4));
    v[h] = _mm256_add_ps(_mm256_mul_ps(d, lo), m);
    v[2 + h] = _mm256_add_ps(_mm256_mul_ps(d, hi), m);
  }
}

inline void block_vectors(const Q8& w, int64_t n, int64_t g, int64_t K, __m256 v[4]) {
  const int8_t* q = w.q + n * K + g * kGroup;
  const __m256 d = _mm256_set1_ps(w.d[n * (K / kGroup) + g]);
  for (int p = 0; p < 4; ++p) {
    const __m256i qi = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + 8 * p)));
    v[p] = _mm256_mul_ps(_mm256_cvtepi32_ps(qi), d);
  }
}

// Block g of row n into the cache ahead of its use: the hardware prefetcher alone left a batch-1 step compute-idle
// waiting for weights (~15% slower), with a thread walking 4 rows' q, d and m at once.
inline void prefetch(const Q4& w, int64_t n, int64_t g, int64_t K) {
  _mm_prefetch(reinterpret_cast<const char*>(w.q + n * (K / 2) + g * (kGroup / 2)), _MM_HINT_T0);
  if (g % 16 == 0) {  // 16 scales per cache line
    _mm_prefetch(reinterpret_cast<const char*>(w.d + n * (K / kGroup) + g), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(w.m + n * (K / kGroup) + g), _MM_HINT_T0);
  }
}

inline void prefetch(const Q8& w, int64_t n, int64_t g, int64_t K) {
  _mm_prefetch(reinterpret_cast<const char*>(w.q + n * K + g * kGroup), _MM_HINT_T0);
  if (g % 16 == 0) _mm_prefetch(reinterpret_cast<const char*>(w.d + n * (K / kGroup) + g), _MM_HINT_T0);
}

// Row n of the weight, dequantized into out[0, K).
template <typename W>
void dequantize_row(const W& w, int64_t n, int64_t K, float* out) {
  for (int64_t g = 0; g < K / kGroup; ++g) {
    __m256 v[4];
    block_vectors(w, n, g, K, v);
    for (int p = 0; p < 4; ++p) _mm256_storeu_ps(out + g * kGroup + 8 * p, v[p]);
  }
}
#else
void dequantize_row(const Q4& w, int64_t n, int64_t K, float* out) {
  const int64_t groups = K / kGroup;
  for (int64_t g = 0; g < groups; ++g) {
    const uint8_t* b = w.q + n * (K / 2) + g * (kGroup / 2);
    const float d = w.d[n * groups + g], m = w.m[n * groups + g];
    for (int64_t j = 0; j < kGroup / 2; ++j) {
      out[g * kGroup + j] = d * static_cast<float>(b[j] & 0x0f) + m;
      out[g * kGroup + j + kGroup / 2] = d * static_cast<float>(b[j] >> 4) + m;
    }
  }
}

void dequantize_row(const Q8& w, int64_t n, int64_t K, float* out) {
  const int64_t groups = K / kGroup;
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t i = 0; i < kGroup; ++i)
      out[g * kGroup + i] = static_cast<float>(w.q[n * K + g * kGroup + i]) * w.d[n * groups + g];
}
#endif

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

#if defined(LLMAAS_AVX2)
// y[i, n0 + j] for i < R, j < C straight from the blocks, for the few rows of a decode step at low concurrency: each
// block's weight vectors are made in registers and used by all R rows at once, where writing a scratch row and
// reading it back (tile's way) cost more than the multiplies. The same weights and order of additions as tile().
template <int R, int C, typename W>
void direct(const float* x, const W& w, int64_t n0, float* y, int64_t K, int64_t N) {
  __m256 acc[R][C];
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < C; ++j) acc[i][j] = _mm256_setzero_ps();
  for (int64_t g = 0; g < K / kGroup; ++g)
    for (int j = 0; j < C; ++j) {
      if (n0 + j + kPrefetchRows < N) prefetch(w, n0 + j + kPrefetchRows, g, K);
      __m256 v[4];
      block_vectors(w, n0 + j, g, K, v);
      for (int p = 0; p < 4; ++p)
        for (int i = 0; i < R; ++i)
          acc[i][j] = _mm256_fmadd_ps(_mm256_loadu_ps(x + i * K + g * kGroup + 8 * p), v[p], acc[i][j]);
    }
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < C; ++j) y[i * N + j] = hsum(acc[i][j]);
}

template <int R, typename W>
void direct_cols(const float* x, const W& w, int64_t n0, int64_t cols, float* y, int64_t K, int64_t N) {
  switch (cols) {
    case 4: direct<R, 4, W>(x, w, n0, y, K, N); break;
    case 3: direct<R, 3, W>(x, w, n0, y, K, N); break;
    case 2: direct<R, 2, W>(x, w, n0, y, K, N); break;
    default: direct<R, 1, W>(x, w, n0, y, K, N); break;
  }
}

template <typename W>
void direct_rows(const float* x, const W& w, int64_t n0, int64_t cols, float* y, int64_t M, int64_t K, int64_t N) {
  for (int64_t m0 = 0; m0 < M; m0 += 4) {  // blocks of up to 4 rows; a column's blocks are still in L1 for the next
    const float* xm = x + m0 * K;
    float* ym = y + m0 * N;
    switch (M - m0) {
      case 1: direct_cols<1>(xm, w, n0, cols, ym, K, N); break;
      case 2: direct_cols<2>(xm, w, n0, cols, ym, K, N); break;
      case 3: direct_cols<3>(xm, w, n0, cols, ym, K, N); break;
      default: direct_cols<4>(xm, w, n0, cols, ym, K, N); break;
    }
  }
}
#endif

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

// cblas_sgemm as OpenBLAS exports it (32-bit ints), handed over by llmaas_block_linear_use_sgemm; null without it.
using Sgemm = void (*)(int order, int trans_a, int trans_b, int M, int N, int K, float alpha, const float* A, int lda,
                       const float* B, int ldb, float beta, float* C, int ldc);
Sgemm g_sgemm = nullptr;
constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;

// Many rows (prefill, many streams): compute-bound, where a GEMM library's packed micro-kernels beat our tiles. Each
// thread dequantizes panels of its share of the output rows into its own scratch (sized to stay in L2) and runs a
// single-threaded sgemm on each: the threads stay OpenMP's, so nothing else spins on the cores.
template <typename W>
void panels(const float* x, const W& w, float* y, int64_t M, int64_t K, int64_t N) {
  const int64_t panel_rows = kPanelBytes / (K * 4) < 16 ? 16 : kPanelBytes / (K * 4) / 16 * 16;
#pragma omp parallel
  {
    thread_local std::vector<float> panel;
    panel.resize(panel_rows * K);
    const int64_t parts = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t share = (N + parts - 1) / parts;
    const int64_t begin = t * share, end = begin + share < N ? begin + share : N;
    for (int64_t n0 = begin; n0 < end; n0 += panel_rows) {
      const int64_t rows = end - n0 < panel_rows ? end - n0 : panel_rows;
      for (int64_t r = 0; r < rows; ++r) dequantize_row(w, n0 + r, K, panel.data() + r * K);
      g_sgemm(kRowMajor, kNoTrans, kTrans, static_cast<int>(M), static_cast<int>(rows), static_cast<int>(K), 1.f, x,
              static_cast<int>(K), panel.data(), static_cast<int>(K), 0.f, y + n0, static_cast<int>(N));
    }
  }
}

template <typename W>
void linear(const float* x, const W& w, float* y, int64_t M, int64_t K, int64_t N) {
  const int64_t col_groups = (N + kTileCols - 1) / kTileCols;
  if (g_sgemm != nullptr && M > kDirectRows) {
    panels(x, w, y, M, K, N);
    return;
  }
#if defined(LLMAAS_AVX2)
  if (M <= kDirectRows) {
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < col_groups; ++c) {
      const int64_t n0 = c * kTileCols;
      direct_rows(x, w, n0, N - n0 < kTileCols ? N - n0 : kTileCols, y + n0, M, K, N);
    }
    return;
  }
#endif
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
#if defined(LLMAAS_AVX2)
        for (int64_t n = n0 + kTileCols; n < n0 + kTileCols + kPrefetchRows && n < N; ++n)
          for (int64_t g = 0; g < K / kGroup; ++g) prefetch(w, n, g, K);
#endif
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

// OpenBLAS's cblas_sgemm (set to one thread: it runs inside ours), or null to keep every row count on our paths.
void llmaas_block_linear_use_sgemm(void* sgemm) { g_sgemm = reinterpret_cast<Sgemm>(sgemm); }

int llmaas_block_linear_direct_rows() { return static_cast<int>(kDirectRows); }

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
