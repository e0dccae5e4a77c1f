// y = x W^T in bf16 with AVX-512 BF16 dot products, on the weight packed once into "panels" of 64 output columns:
// panel g holds W[64g : 64g + 64, :] as [K/2][64][2], i.e. for each pair of inputs (2j, 2j + 1) the 64 columns'
// two weights side by side, which is the operand layout of vdpbf16ps. One broadcast of a row's input pair then
// multiplies 64 columns in four instructions, with no horizontal sums, for any number of rows: a decode row streams
// the panel once (memory-bound), a prefill's rows reuse it from L2 in tiles of kRows (compute-bound).
//
// Every output element is the same chain of dot products over j whatever the row count or the tile it falls in, so
// a row's result never depends on the rest of its batch (bit for bit). Sums in fp32, one bf16 rounding at the end.
//
// Layouts: x [M, K] bf16 (uint16), rows contiguous; panels [N/64][K/2][64][2] bf16; y [M, N] bf16, or fp32 (the
// sums unrounded: the LM head's logits, which the sampler wants in fp32 anyway). N a multiple of 64, K even (pack
// checks both). OpenMP over (panel, tile of rows) pairs, panel-major, so that each thread works through whole
// panels where it can and small projections still split over the threads.

#include <cstdint>
#include <cstring>

#if defined(__AVX512BF16__)
#include <immintrin.h>
#endif

namespace {

constexpr int64_t kCols = 64;  // output columns per panel: 4 zmm of 16 fp32 sums
constexpr int kRows = 6;       // rows per tile: 24 accumulators + 4 weights + 1 broadcast of the 32 zmm registers

void pack(const uint16_t* w, uint16_t* panels, int64_t N, int64_t K) {
  const int64_t pairs = K / 2;
#pragma omp parallel for schedule(static)
  for (int64_t g = 0; g < N / kCols; ++g)
    for (int64_t j = 0; j < pairs; ++j) {
      uint16_t* out = panels + (g * pairs + j) * kCols * 2;
      for (int64_t c = 0; c < kCols; ++c) {
        const uint16_t* row = w + (g * kCols + c) * K + 2 * j;
        out[2 * c] = row[0];
        out[2 * c + 1] = row[1];
      }
    }
}

#if defined(__AVX512BF16__)
// Rows [0, R) of x times one panel -> y's 64 columns of those rows (x and y point at the tile's first row and the
// panel's first column).
inline void store16(uint16_t* y, __m512 v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(y), (__m256i)_mm512_cvtneps_pbh(v));
}
inline void store16(float* y, __m512 v) { _mm512_storeu_ps(y, v); }

template <int R, typename Out>
inline void tile(const uint16_t* x, const uint16_t* panel, Out* y, int64_t K, int64_t N) {
  __m512 acc[R][4];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < 4; ++c) acc[r][c] = _mm512_setzero_ps();
  for (int64_t j = 0; j < K / 2; ++j) {
    const uint16_t* wj = panel + j * kCols * 2;
    const __m512bh w0 = (__m512bh)_mm512_loadu_si512(wj), w1 = (__m512bh)_mm512_loadu_si512(wj + 32),
                   w2 = (__m512bh)_mm512_loadu_si512(wj + 64), w3 = (__m512bh)_mm512_loadu_si512(wj + 96);
    for (int r = 0; r < R; ++r) {
      int32_t pair;
      std::memcpy(&pair, x + r * K + 2 * j, sizeof pair);
      const __m512bh xb = (__m512bh)_mm512_set1_epi32(pair);
      acc[r][0] = _mm512_dpbf16_ps(acc[r][0], xb, w0);
      acc[r][1] = _mm512_dpbf16_ps(acc[r][1], xb, w1);
      acc[r][2] = _mm512_dpbf16_ps(acc[r][2], xb, w2);
      acc[r][3] = _mm512_dpbf16_ps(acc[r][3], xb, w3);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < 4; ++c) store16(y + r * N + c * 16, acc[r][c]);
}

template <typename Out>
void linear(const uint16_t* x, const uint16_t* panels, Out* y, int64_t M, int64_t K, int64_t N) {
  using Tile = void (*)(const uint16_t*, const uint16_t*, Out*, int64_t, int64_t);
  constexpr Tile kTiles[kRows + 1] = {nullptr,       tile<1, Out>, tile<2, Out>, tile<3, Out>,
                                      tile<4, Out>, tile<5, Out>, tile<6, Out>};
  const int64_t groups = N / kCols, tiles = (M + kRows - 1) / kRows;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < groups * tiles; ++t) {
    const int64_t g = t / tiles, m = (t % tiles) * kRows;
    const int64_t rows = M - m < kRows ? M - m : kRows;
    kTiles[rows](x + m * K, panels + g * (K / 2) * kCols * 2, y + m * N + g * kCols, K, N);
  }
}
#endif

}  // namespace

extern "C" {

int llmaas_bf16_linear_available() {
#if defined(__AVX512BF16__)
  return 1;
#else
  return 0;
#endif
}

int64_t llmaas_bf16_linear_cols() { return kCols; }

void llmaas_bf16_linear_pack(const uint16_t* w, uint16_t* panels, int64_t N, int64_t K) { pack(w, panels, N, K); }

void llmaas_bf16_linear(const uint16_t* x, const uint16_t* panels, uint16_t* y, int64_t M, int64_t K, int64_t N) {
#if defined(__AVX512BF16__)
  linear(x, panels, y, M, K, N);
#else
  (void)x, (void)panels, (void)y, (void)M, (void)K, (void)N;
#endif
}

void llmaas_bf16_linear_f32out(const uint16_t* x, const uint16_t* panels, float* y, int64_t M, int64_t K, int64_t N) {
#if defined(__AVX512BF16__)
  linear(x, panels, y, M, K, N);
#else
  (void)x, (void)panels, (void)y, (void)M, (void)K, (void)N;
#endif
}
}
