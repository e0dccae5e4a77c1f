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
//
// Where the CPU has AMX, every call runs on its tiles instead (where K is a multiple of 32), from the same panels:
// a panel's [K/2][64][2] is AMX's B-tile layout already (a tile row is one input pair of 16 columns, 256 bytes
// apart). The tiles' sums are not bit for bit those of vdpbf16ps, so all rows of a weight take one path or the
// other, never both. On a 2-core Xeon (`python bench/projections.py`: a SmolLM2 step's 121 projections) the tiles
// stream the weights at the memory's speed at one row too, 1.2x the dot products, and run 2.8-8.6x faster than
// them from 16 rows on; against oneDNN's AMX matmul 1.3-1.4x at 1-32 rows, 1.1-1.2x at 64-128 and 512, 1.03x at 256.

#include <cstdint>
#include <cstring>

#if defined(__AVX512BF16__)
#include <immintrin.h>
#endif
#if defined(__AMX_BF16__) && defined(__AMX_TILE__)
#include <sys/syscall.h>
#include <unistd.h>
#define LLMAAS_AMX 1
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

#if defined(LLMAAS_AMX)
// tmm0-3: fp32 sums (16 columns each), tmm4: x (32 inputs per row), tmm5-7: weights (16 input pairs x 16 columns).
// A call's last rows (fewer than 16) run with tmm0-4 configured to that many rows.
struct TileConfig {
  explicit TileConfig(uint8_t tail_rows) {
    for (int t = 0; t < 8; ++t) bytes_per_row[t] = 64, rows[t] = t <= 4 ? tail_rows : 16;
  }
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t bytes_per_row[16] = {};
  uint8_t rows[16] = {};
};

// Linux hands out the 8 KB of tile state only to a process that asks (once; oneDNN asks the same way).
bool amx_permitted() {
  static const bool ok = [] {
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return ok;
}

// Sums tile t (its configured `rows`) -> y's 16 columns of those rows. _tile_stored names its register in the
// instruction's text, so t must be spelled out.
template <int t>
inline void stored(float* out, int64_t stride_bytes) {
  if constexpr (t == 0) _tile_stored(0, out, stride_bytes);
  if constexpr (t == 1) _tile_stored(1, out, stride_bytes);
  if constexpr (t == 2) _tile_stored(2, out, stride_bytes);
  if constexpr (t == 3) _tile_stored(3, out, stride_bytes);
}
template <int t>
inline void store_sums(uint16_t* y, int64_t N, int rows) {
  alignas(64) float sums[16 * 16];
  stored<t>(sums, 64);
  for (int r = 0; r < rows; ++r) store16(y + r * N, _mm512_load_ps(sums + r * 16));
}
template <int t>
inline void store_sums(float* y, int64_t N, int) {
  stored<t>(y, N * 4);
}

// Up to 16 rows (as configured) x one panel's 64 columns: one x tile against the four column tiles (tmm5-7 take
// turns holding them). Meanwhile `ahead` lines from `prefetch` on are asked into L2, spread over the steps.
template <typename Out>
void amx_rows16(const uint16_t* x, const uint16_t* panel, Out* y, int64_t K, int64_t N, int rows,
                const char* prefetch = nullptr, int64_t ahead = 0) {
  const int64_t steps = K / 32, per_step = (ahead + steps - 1) / steps;
  _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
  for (int64_t k = 0, line = 0; k < K; k += 32) {
    const uint16_t* w = panel + k * kCols;
    for (int64_t i = 0; i < per_step && line < ahead; ++i, ++line) _mm_prefetch(prefetch + line * 64, _MM_HINT_T1);
    _tile_loadd(4, x + k, K * 2);
    _tile_loadd(6, w, kCols * 4);
    _tile_loadd(7, w + 32, kCols * 4);
    _tile_loadd(5, w + 64, kCols * 4);
    _tile_dpbf16ps(0, 4, 6);
    _tile_loadd(6, w + 96, kCols * 4);
    _tile_dpbf16ps(1, 4, 7); _tile_dpbf16ps(2, 4, 5); _tile_dpbf16ps(3, 4, 6);
  }
  store_sums<0>(y, N, rows); store_sums<1>(y + 16, N, rows); store_sums<2>(y + 32, N, rows); store_sums<3>(y + 48, N, rows);
}

// Every row on the tiles, so that a row's sums never depend on how many rows came with it (AMX does not round
// exactly as vdpbf16ps does): blocks of 16 rows, then the last rows with tmm0-4 configured to that many. The
// threads split the (panel, block) pairs panel-major, so a thread's blocks of one panel read it from L2 after the
// first, which streams it from memory in order (4 KB per step of 32 inputs, the four column tiles side by side).
// Blocks of 32 x 32 (2 x 2 tiles, fewer tile loads per product) ran slower at 32-512 rows in scratch A/Bs, at
// 32-64 rows 1.1-1.2x (they read half of each 256-byte panel row at a time), at 256 1.05-1.1x.
template <typename Out>
void amx_linear(const uint16_t* x, const uint16_t* panels, Out* y, int64_t M, int64_t K, int64_t N) {
  const int64_t groups = N / kCols, pairs = K / 2, blocks = M / 16, done = blocks * 16, tail = M - done;
#pragma omp parallel
  {
    if (blocks) {
      const TileConfig config(16);
      _tile_loadconfig(&config);
#pragma omp for schedule(static) nowait
      for (int64_t t = 0; t < groups * blocks; ++t) {
        const int64_t g = t / blocks, b = t % blocks, m = b * 16;
        const uint16_t* panel = panels + g * pairs * kCols * 2;
        // Where a panel serves several blocks, each block also asks for its share of the next panel, so that memory
        // keeps streaming while the blocks after the first compute from L2 (otherwise the two take turns: 1.1x
        // at 512 rows, nothing measurable at 32-128).
        const int64_t lines = K * kCols * 2 / 64, share = (lines + blocks - 1) / blocks;
        const char* next = reinterpret_cast<const char*>(panel + pairs * kCols * 2) + b * share * 64;
        const int64_t ahead = blocks > 1 && g + 1 < groups ? (b + 1 == blocks ? lines - b * share : share) : 0;
        amx_rows16(x + m * K, panel, y + m * N + g * kCols, K, N, 16, next, ahead);
      }
    }
    if (tail) {
      const TileConfig config(static_cast<uint8_t>(tail));
      _tile_loadconfig(&config);
#pragma omp for schedule(static)
      for (int64_t g = 0; g < groups; ++g)
        amx_rows16(x + done * K, panels + g * pairs * kCols * 2, y + done * N + g * kCols, K, N, tail);
    }
    _tile_release();  // no tile state left for the kernel to save at a context switch
  }
}
#endif

template <typename Out>
void linear(const uint16_t* x, const uint16_t* panels, Out* y, int64_t M, int64_t K, int64_t N) {
#if defined(LLMAAS_AMX)
  if (K % 32 == 0 && amx_permitted()) return amx_linear(x, panels, y, M, K, N);
#endif
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

// 1 where the tiles run (built for AMX, and the OS lets this process use them): every call whose K is a multiple of 32.
int llmaas_bf16_linear_amx() {
#if defined(LLMAAS_AMX)
  return amx_permitted();
#else
  return 0;
#endif
}

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
