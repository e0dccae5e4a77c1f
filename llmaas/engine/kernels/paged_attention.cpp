// Decode attention over the paged KV cache, read in place: one query token per sequence, keys and values taken from
// the cache blocks named by the sequence's block table (no gather into contiguous tensors first).
//
// Layouts (those of llmaas.engine.models.llama): q and out [S, Hkv*G, D]; k_cache and v_cache [Hkv, N, bs, D];
// block_table [S, nb] int64; lens [S] int64 (keys visible to each sequence's query); work [S*Hkv, G, L] fp32 scratch.
// Scores, softmax and the weighted sum are fp32 whatever the storage type (float or bf16 as uint16).
// Plain C ABI, called through ctypes; OpenMP over (sequence, KV head) shares torch's libgomp (same soname).

#include <cmath>
#include <cstdint>
#include <cstring>

namespace {

inline float load(float x) { return x; }
inline float load(uint16_t x) {
  uint32_t u = static_cast<uint32_t>(x) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline void store(float x, float* out) { *out = x; }
inline void store(float x, uint16_t* out) {  // round to nearest even, as torch's float -> bfloat16
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) { *out = 0x7fc0; return; }  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  *out = static_cast<uint16_t>(u >> 16);
}

constexpr int64_t kMaxGD = 8192;  // G*D held on the stack per (sequence, head)

template <typename T>
void decode(const T* q, const T* k_cache, const T* v_cache, const int64_t* table, const int64_t* lens, T* out,
            int64_t S, int64_t Hkv, int64_t G, int64_t D, int64_t N, int64_t bs, int64_t nb, float scale,
            float* work, int64_t L) {
  const int64_t H = Hkv * G;
#pragma omp parallel for schedule(dynamic, 1) if (S * Hkv >= 4)
  for (int64_t sh = 0; sh < S * Hkv; ++sh) {
    const int64_t s = sh / Hkv, h = sh % Hkv;
    const int64_t len = lens[s];
    float* scores = work + sh * G * L;  // [G, L]
    float qf[kMaxGD], acc[kMaxGD];
    for (int64_t g = 0; g < G; ++g)
      for (int64_t d = 0; d < D; ++d) qf[g * D + d] = load(q[(s * H + h * G + g) * D + d]);
    for (int64_t t = 0; t < len; ++t) {
      const int64_t block = table[s * nb + t / bs];
      const T* k = k_cache + ((h * N + block) * bs + t % bs) * D;
      for (int64_t g = 0; g < G; ++g) {
        const float* qg = qf + g * D;
        float dot = 0.f;
#pragma omp simd reduction(+ : dot)
        for (int64_t d = 0; d < D; ++d) dot += qg[d] * load(k[d]);
        scores[g * L + t] = dot * scale;
      }
    }
    float inv[64];
    for (int64_t g = 0; g < G; ++g) {
      float* sc = scores + g * L;
      float m = -INFINITY;
      for (int64_t t = 0; t < len; ++t) m = sc[t] > m ? sc[t] : m;
      float sum = 0.f;
      for (int64_t t = 0; t < len; ++t) {
        sc[t] = std::exp(sc[t] - m);
        sum += sc[t];
      }
      inv[g] = 1.f / sum;
    }
    for (int64_t i = 0; i < G * D; ++i) acc[i] = 0.f;
    for (int64_t t = 0; t < len; ++t) {
      const int64_t block = table[s * nb + t / bs];
      const T* v = v_cache + ((h * N + block) * bs + t % bs) * D;
      for (int64_t g = 0; g < G; ++g) {
        const float w = scores[g * L + t];
        float* a = acc + g * D;
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) a[d] += w * load(v[d]);
      }
    }
    for (int64_t g = 0; g < G; ++g)
      for (int64_t d = 0; d < D; ++d) store(acc[g * D + d] * inv[g], out + (s * H + h * G + g) * D + d);
  }
}

}  // namespace

extern "C" {

int llmaas_max_group_dim() { return static_cast<int>(kMaxGD); }

void llmaas_paged_decode_f32(const float* q, const float* k, const float* v, const int64_t* table, const int64_t* lens,
                             float* out, int64_t S, int64_t Hkv, int64_t G, int64_t D, int64_t N, int64_t bs,
                             int64_t nb, float scale, float* work, int64_t L) {
  decode(q, k, v, table, lens, out, S, Hkv, G, D, N, bs, nb, scale, work, L);
}

void llmaas_paged_decode_bf16(const uint16_t* q, const uint16_t* k, const uint16_t* v, const int64_t* table,
                              const int64_t* lens, uint16_t* out, int64_t S, int64_t Hkv, int64_t G, int64_t D,
                              int64_t N, int64_t bs, int64_t nb, float scale, float* work, int64_t L) {
  decode(q, k, v, table, lens, out, S, Hkv, G, D, N, bs, nb, scale, work, L);
}
}
