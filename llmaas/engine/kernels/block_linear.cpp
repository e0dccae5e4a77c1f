// y = x W^T in fp32 for weights stored in llama.cpp's blocks of 32 along K, dequantized on the fly exactly as
// gguf-py (and so transformers) dequantizes them: Q4_1, W = (d * q) + m with q in [0, 15], and Q8_0, W = q * d with
// q in [-128, 127]; d and m are fp16 values held as fp32, products and sums rounded one by one (built with
// -ffp-contract=off, so the compiler fuses nothing the reference does not). The weights are then the fp32 weights
// bit for bit; only the order of the dot products' additions differs from MKL's.
//
// Why: a GGUF model served in fp32 streams 4 bytes per weight per decode step; these blocks are 0.75 (Q4_1) or 1.125
// (Q8_0), scales included. Two paths by row count, both on those exact weights:
// - up to kDirectRows rows (decode at low concurrency, bound by how fast weights are made): each block's weights are
//   made in registers and used by every row at once (`direct`);
// - more rows (prefill, many streams), compute-bound: each thread dequantizes a panel of its output rows into L2,
//   and a register tile multiplies it by x^T 16 rows at a time (`outer`, BLIS's outer-product shape: x^T packed
//   once per call, 6 weights broadcast per step of k). A scratch timing on Zen 3 (2 threads, a SmolLM2 step's 120
//   layer projections, weights from memory): 1.5x OpenBLAS's sgemm on the same dequantized panels at 16 rows, 1.16x at
//   64, even at 256-512 (~160 GFLOP/s, 80% of the cores' FMA peak), and 1.4-1.7x our earlier dot-product tiles.
//
// Layouts: x [M, K] fp32, K a multiple of 32; Q4_1: q [N, K / 2] uint8, byte j of block g holding q[32g + j] in its
// low nibble and q[32g + 16 + j] in its high one (GGUF's order), d and m [N, K / 32] fp32; Q8_0: q [N, K] int8, d
// [N, K / 32] fp32; y [M, N] fp32. OpenMP over output rows.

#include <cstdint>
#include <vector>

#include <omp.h>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define LLMAAS_AVX2 1
#endif

namespace {

constexpr int64_t kGroup = 32;
// Up to this many rows, `direct`; above, `outer`. Measured on Zen 3 (2 threads, 120 layer projections): direct is
// 1.4-1.7x outer at 5-8 rows (outer's 16-row slab costs the same at any row count up to 16) and even at 9-12.
constexpr int64_t kDirectRows = 8;
constexpr int64_t kDirectCols = 4;  // output rows direct makes at once
constexpr int64_t kPrefetchRows = kDirectCols;  // a thread's next group of output rows (static schedule)
constexpr int64_t kSlabRows = 16;  // x rows per outer tile: 2 vectors
constexpr int64_t kOuterCols = 6;  // weight rows per outer tile: 6 x 2 accumulators, 2 x vectors, 1 broadcast
constexpr int64_t kDepth = 256;  // steps of k per pass of a tile: its slab of x^T (16 KB) stays in L1
constexpr int64_t kChunkSlabs = 8;  // slabs per pass over a panel: x^T's share stays in L2 beside it
constexpr int64_t kPanelBytes = 128 << 10;  // a thread's dequantized panel

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

#if defined(LLMAAS_AVX2)
// y[i, n0 + j] for i < R, j < C straight from the blocks, for the few rows of a decode step at low concurrency: each
// block's weight vectors are made in registers and used by all R rows at once, where writing a panel and reading it
// back (outer's way) costs more than the multiplies.
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

#if defined(LLMAAS_AVX2)
// acc[j][0, 16) (+)= a slab of x^T [steps][16] times C dequantized weight rows (stride K) over `steps` values of k,
// one outer product per k: 2 x vectors, C broadcast weights, 2C FMAs. The sums start from zero where `first`, else
// from acc, so each runs through k in order whatever the blocking.
template <int C>
void outer(const float* xt, const float* w, float* acc, int64_t steps, int64_t K, bool first) {
  __m256 lo[C], hi[C];  // GCC keeps these in registers only with its loops over j unrolled
#pragma GCC unroll 8
  for (int j = 0; j < C; ++j) {
    lo[j] = first ? _mm256_setzero_ps() : _mm256_load_ps(acc + j * kSlabRows);
    hi[j] = first ? _mm256_setzero_ps() : _mm256_load_ps(acc + j * kSlabRows + 8);
  }
#pragma GCC unroll 4
  for (int64_t k = 0; k < steps; ++k) {
    const __m256 a0 = _mm256_load_ps(xt + k * kSlabRows), a1 = _mm256_load_ps(xt + k * kSlabRows + 8);
#pragma GCC unroll 8
    for (int j = 0; j < C; ++j) {
      const __m256 b = _mm256_broadcast_ss(w + j * K + k);
      lo[j] = _mm256_fmadd_ps(a0, b, lo[j]);
      hi[j] = _mm256_fmadd_ps(a1, b, hi[j]);
    }
  }
#pragma GCC unroll 8
  for (int j = 0; j < C; ++j) {
    _mm256_store_ps(acc + j * kSlabRows, lo[j]);
    _mm256_store_ps(acc + j * kSlabRows + 8, hi[j]);
  }
}

void outer_cols(int64_t cols, const float* xt, const float* w, float* acc, int64_t steps, int64_t K, bool first) {
  switch (cols) {
    case 6: outer<6>(xt, w, acc, steps, K, first); break;
    case 5: outer<5>(xt, w, acc, steps, K, first); break;
    case 4: outer<4>(xt, w, acc, steps, K, first); break;
    case 3: outer<3>(xt, w, acc, steps, K, first); break;
    case 2: outer<2>(xt, w, acc, steps, K, first); break;
    default: outer<1>(xt, w, acc, steps, K, first); break;
  }
}

// A float buffer of n, 32-byte aligned, reused across calls.
float* aligned(std::vector<float>& store, int64_t n) {
  store.resize(n + 8);
  return reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(store.data()) + 31) & ~uintptr_t(31));
}

// x^T in slabs of 16 rows, [slab][K][16], rows past M zero.
void pack_slabs(const float* x, float* xt, int64_t M, int64_t K) {
  const int64_t slabs = (M + kSlabRows - 1) / kSlabRows;
#pragma omp for schedule(static)
  for (int64_t s = 0; s < slabs; ++s)
    for (int64_t i = 0; i < kSlabRows; ++i) {
      const int64_t m = s * kSlabRows + i;
      float* col = xt + s * K * kSlabRows + i;
      for (int64_t k = 0; k < K; ++k) col[k * kSlabRows] = m < M ? x[m * K + k] : 0.f;
    }
}

// Many rows: each thread dequantizes panels of its contiguous share of the output rows; per chunk of slabs and
// depth of k, every 6 panel rows (in L1 for the chunk) meet every slab; sums wait in `acc` ([slab][panel row][16],
// in L1/L2) until the last depth, then go to y.
template <typename W>
void outer_linear(const float* x, const W& w, float* y, int64_t M, int64_t K, int64_t N) {
  const int64_t slabs = (M + kSlabRows - 1) / kSlabRows;
  thread_local std::vector<float> xt_store;
  float* xt = aligned(xt_store, slabs * K * kSlabRows);
  const int64_t fit = kPanelBytes / (K * 4) / kOuterCols * kOuterCols;
  const int64_t panel_rows = fit < kOuterCols ? kOuterCols : fit;
#pragma omp parallel
  {
    pack_slabs(x, xt, M, K);  // ends on the barrier of its omp for
    thread_local std::vector<float> panel_store, acc_store;
    float* panel = aligned(panel_store, panel_rows * K);
    float* acc = aligned(acc_store, kChunkSlabs * panel_rows * kSlabRows);
    const int64_t parts = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t share = (N + parts - 1) / parts;
    const int64_t begin = t * share, end = begin + share < N ? begin + share : N;
    for (int64_t n0 = begin; n0 < end; n0 += panel_rows) {
      const int64_t rows = end - n0 < panel_rows ? end - n0 : panel_rows;
      for (int64_t r = 0; r < rows; ++r) dequantize_row(w, n0 + r, K, panel + r * K);
      for (int64_t s0 = 0; s0 < slabs; s0 += kChunkSlabs) {
        const int64_t s1 = s0 + kChunkSlabs < slabs ? s0 + kChunkSlabs : slabs;
        for (int64_t k0 = 0; k0 < K; k0 += kDepth) {
          const int64_t steps = K - k0 < kDepth ? K - k0 : kDepth;
          for (int64_t c0 = 0; c0 < rows; c0 += kOuterCols)
            for (int64_t s = s0; s < s1; ++s)
              outer_cols(rows - c0 < kOuterCols ? rows - c0 : kOuterCols, xt + (s * K + k0) * kSlabRows,
                         panel + c0 * K + k0, acc + ((s - s0) * panel_rows + c0) * kSlabRows, steps, K, k0 == 0);
        }
        for (int64_t s = s0; s < s1; ++s)
          for (int64_t i = 0; i < kSlabRows && s * kSlabRows + i < M; ++i)
            for (int64_t c = 0; c < rows; ++c)
              y[(s * kSlabRows + i) * N + n0 + c] = acc[((s - s0) * panel_rows + c) * kSlabRows + i];
      }
    }
  }
}
#endif

template <typename W>
void linear(const float* x, const W& w, float* y, int64_t M, int64_t K, int64_t N) {
#if defined(LLMAAS_AVX2)
  if (M > kDirectRows) {
    outer_linear(x, w, y, M, K, N);
    return;
  }
  const int64_t col_groups = (N + kDirectCols - 1) / kDirectCols;
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < col_groups; ++c) {
    const int64_t n0 = c * kDirectCols;
    direct_rows(x, w, n0, N - n0 < kDirectCols ? N - n0 : kDirectCols, y + n0, M, K, N);
  }
#else
#pragma omp parallel
  {
    thread_local std::vector<float> row;
    row.resize(K);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      dequantize_row(w, n, K, row.data());
      for (int64_t i = 0; i < M; ++i) {
        float s = 0.f;
        for (int64_t k = 0; k < K; ++k) s += x[i * K + k] * row[k];
        y[i * N + n] = s;
      }
    }
  }
#endif
}

template <typename W>
void dequantize(const W& w, float* out, int64_t N, int64_t K) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) dequantize_row(w, n, K, out + n * K);
}

}  // namespace

extern "C" {

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
