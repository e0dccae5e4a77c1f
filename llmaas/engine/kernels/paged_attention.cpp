// Attention over the paged KV cache, read in place: each query row attends to the first lens[r] keys of its
// sequence, taken from the cache blocks named by that sequence's block table (no gather into contiguous tensors).
// A decode is one row per sequence; a prefill chunk is one row per prompt token, all on the same table row, each
// seeing one key more than the last (causal, with no mask). One call serves a whole mixed batch.
//
// Layouts (those of llmaas.engine.models.llama): q and out [R, Hkv*G, D]; k_cache and v_cache [Hkv, N, bs, D];
// block_table [S, nb] int64; row_seq [R] int64, the table row of each query row (null: row r uses table row r);
// lens [R] int64. Scores, softmax and the weighted sum are fp32 whatever the storage type (float or bf16 as
// uint16), in a per-thread scratch row of G * nb * bs floats. Work items run KV-head-major, so consecutive items are
// consecutive rows of one head: a prefill chunk's rows read the same keys while they are still in L2.
// Plain C ABI, called through ctypes; OpenMP over (KV head, row) shares torch's libgomp (same soname).

#include <cmath>
#include <cstdint>

#include "bf16.h"
#include "fast_exp.h"
#include "paged_attention_bf16.h"
#include "scratch.h"

namespace {

using llmaas::fast_exp;
using llmaas::load;
using llmaas::store;

constexpr int64_t kMaxGD = 8192;  // G*D held on the stack per (sequence, head)
constexpr int64_t kMaxD = 1024;

// Each key and value row is converted to fp32 once and used by all G query heads of its KV head (GQA), and the G
// dot products per key run in one pass over the row: the loads and conversions, not the multiplies, bound this loop.
// kD > 0: the head dimension fixed at compile time (the inner loops unroll into whole vectors); 0: `D` at run time.
template <typename T, int64_t kD>
void attend(const T* q, const T* k_cache, const T* v_cache, const int64_t* table_rows, const int64_t* row_seq,
            const int64_t* lens, T* out, int64_t S, int64_t Hkv, int64_t G, int64_t head_dim, int64_t N, int64_t bs,
            int64_t nb, float scale) {
  const int64_t D = kD > 0 ? kD : head_dim;
  const int64_t H = Hkv * G, L = nb * bs;
#pragma omp parallel for schedule(dynamic, 1) if (S * Hkv >= 4)
  for (int64_t hs = 0; hs < S * Hkv; ++hs) {
    const int64_t h = hs / S, s = hs % S;
    const int64_t len = lens[s];
    const int64_t* table = table_rows + (row_seq ? row_seq[s] : s) * nb;
    float* scores = llmaas::scratch(G * L);  // [G, L]
    float qf[kMaxGD], acc[kMaxGD], row[kMaxD];
    for (int64_t g = 0; g < G; ++g)
      for (int64_t d = 0; d < D; ++d) qf[g * D + d] = load(q[(s * H + h * G + g) * D + d]) * scale;
    // Block by block: one table lookup per block, no division per key.
    for (int64_t b = 0, t0 = 0; t0 < len; ++b, t0 += bs) {
      const T* kb = k_cache + (h * N + table[b]) * bs * D;
      const int64_t n = len - t0 < bs ? len - t0 : bs;
      for (int64_t j = 0; j < n; ++j) {
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) row[d] = load(kb[j * D + d]);
        for (int64_t g = 0; g < G; ++g) {
          const float* qg = qf + g * D;
          float dot = 0.f;
#pragma omp simd reduction(+ : dot)
          for (int64_t d = 0; d < D; ++d) dot += qg[d] * row[d];
          scores[g * L + t0 + j] = dot;
        }
      }
    }
    float inv[64];
    for (int64_t g = 0; g < G; ++g) {
      float* sc = scores + g * L;
      float m = -INFINITY, sum = 0.f;
      for (int64_t t = 0; t < len; ++t) m = sc[t] > m ? sc[t] : m;
#pragma omp simd reduction(+ : sum)
      for (int64_t t = 0; t < len; ++t) {
        sc[t] = fast_exp(sc[t] - m);
        sum += sc[t];
      }
      inv[g] = 1.f / sum;
    }
    for (int64_t i = 0; i < G * D; ++i) acc[i] = 0.f;
    for (int64_t b = 0, t0 = 0; t0 < len; ++b, t0 += bs) {
      const T* vb = v_cache + (h * N + table[b]) * bs * D;
      const int64_t n = len - t0 < bs ? len - t0 : bs;
      for (int64_t j = 0; j < n; ++j) {
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) row[d] = load(vb[j * D + d]);
        for (int64_t g = 0; g < G; ++g) {
          const float w = scores[g * L + t0 + j];
          float* a = acc + g * D;
#pragma omp simd
          for (int64_t d = 0; d < D; ++d) a[d] += w * row[d];
        }
      }
    }
    for (int64_t g = 0; g < G; ++g)
      for (int64_t d = 0; d < D; ++d) store(acc[g * D + d] * inv[g], out + (s * H + h * G + g) * D + d);
  }
}

template <typename T>
void dispatch(const T* q, const T* k, const T* v, const int64_t* table, const int64_t* row_seq, const int64_t* lens,
              T* out, int64_t S, int64_t Hkv, int64_t G, int64_t D, int64_t N, int64_t bs, int64_t nb, float scale) {
  if (D == 64) return attend<T, 64>(q, k, v, table, row_seq, lens, out, S, Hkv, G, D, N, bs, nb, scale);
  if (D == 128) return attend<T, 128>(q, k, v, table, row_seq, lens, out, S, Hkv, G, D, N, bs, nb, scale);
  attend<T, 0>(q, k, v, table, row_seq, lens, out, S, Hkv, G, D, N, bs, nb, scale);
}

}  // namespace

extern "C" {

int llmaas_max_group_dim() { return static_cast<int>(kMaxGD); }
int llmaas_max_head_dim() { return static_cast<int>(kMaxD); }

void llmaas_paged_attention_f32(const float* q, const float* k, const float* v, const int64_t* table,
                                const int64_t* row_seq, const int64_t* lens, float* out, int64_t R, int64_t Hkv,
                                int64_t G, int64_t D, int64_t N, int64_t bs, int64_t nb, float scale) {
  dispatch(q, k, v, table, row_seq, lens, out, R, Hkv, G, D, N, bs, nb, scale);
}

void llmaas_paged_attention_bf16(const uint16_t* q, const uint16_t* k, const uint16_t* v, const int64_t* table,
                                 const int64_t* row_seq, const int64_t* lens, uint16_t* out, int64_t R, int64_t Hkv,
                                 int64_t G, int64_t D, int64_t N, int64_t bs, int64_t nb, float scale) {
#ifdef LLMAAS_HAVE_AVX512_BF16
  if (llmaas::attend_bf16_fast(q, k, v, table, row_seq, lens, out, R, Hkv, G, D, N, bs, nb, scale)) return;
#endif
  dispatch(q, k, v, table, row_seq, lens, out, R, Hkv, G, D, N, bs, nb, scale);
}
}
