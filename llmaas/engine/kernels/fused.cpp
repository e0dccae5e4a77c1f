// The element-wise steps of a transformer layer fused into one pass each, in place of several eager torch ops (each
// of which reads and writes its whole tensor and pays dispatch): rotary embedding + the K/V write into the paged
// cache, residual add + RMSNorm, and SiLU(gate) * up.
//
// Each rounds exactly where the torch ops it replaces round (see llmaas.engine.kernels.fused for which are
// bit-identical to them). Built with -ffp-contract=off so that a*b + c*d is never contracted into an FMA that torch
// would not do. Plain C ABI through ctypes; OpenMP over rows shares torch's libgomp.

#include <cmath>
#include <cstdint>

#include "bf16.h"
#include "fast_exp.h"

namespace {

using llmaas::fast_exp;
using llmaas::load;
using llmaas::round_to;
using llmaas::store;

// Rotate q and k (HF's rotate_half layout) of T tokens, write q to q_out [T, H, D], and k and v into the paged
// caches [Hkv, slots, D] at each token's slot. qkv rows are [q (H*D) | k (Hkv*D) | v (Hkv*D)], `stride` apart;
// cos and sin [T, D] are each token's rows of the rotary tables.
// Per element as torch computes x*cos + cat(-x2, x1)*sin: each product and the sum rounded to T.
template <typename T>
void rope_kv(const T* qkv, int64_t rows, int64_t stride, int64_t H, int64_t Hkv, int64_t D, const T* cos,
             const T* sin, const int64_t* slots, int64_t cache_slots, T* k_cache, T* v_cache, T* q_out) {
  const int64_t half = D / 2;
#pragma omp parallel for if (rows >= 16)
  for (int64_t t = 0; t < rows; ++t) {
    const T* c = cos + t * D;
    const T* s = sin + t * D;
    const T* row = qkv + t * stride;
    for (int64_t j = 0; j < H + Hkv; ++j) {
      const T* x = row + j * D;
      T* out = j < H ? q_out + (t * H + j) * D : k_cache + ((j - H) * cache_slots + slots[t]) * D;
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) {
        const float rot = d < half ? -load(x[d + half]) : load(x[d - half]);
        store(round_to<T>(load(x[d]) * load(c[d])) + round_to<T>(rot * load(s[d])), out + d);
      }
    }
    for (int64_t h = 0; h < Hkv; ++h) {
      const T* v = row + (H + Hkv + h) * D;
      T* out = v_cache + (h * cache_slots + slots[t]) * D;
      for (int64_t d = 0; d < D; ++d) out[d] = v[d];
    }
  }
}

// h = x + delta (rounded to T, as torch's add), then normed = weight * T(h * rsqrt(mean(h^2) + eps)).
// delta may be null (RMSNorm alone: h is x). Sums in fp32.
template <typename T>
void add_rms_norm(const T* x, const T* delta, const T* weight, T* h_out, T* normed, int64_t rows, int64_t dim,
                  float eps) {
#pragma omp parallel for if (rows >= 16)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * dim;
    T* hr = h_out + r * dim;
    float ss = 0.f;
    if (delta != nullptr) {
      const T* dr = delta + r * dim;
#pragma omp simd reduction(+ : ss)
      for (int64_t i = 0; i < dim; ++i) {
        const float h = round_to<T>(load(xr[i]) + load(dr[i]));
        store(h, hr + i);
        ss += h * h;
      }
    } else {
#pragma omp simd reduction(+ : ss)
      for (int64_t i = 0; i < dim; ++i) ss += load(xr[i]) * load(xr[i]);
      hr = const_cast<T*>(xr);
    }
    const float inv = 1.f / std::sqrt(ss / static_cast<float>(dim) + eps);
    T* nr = normed + r * dim;
#pragma omp simd
    for (int64_t i = 0; i < dim; ++i) store(load(weight[i]) * round_to<T>(load(hr[i]) * inv), nr + i);
  }
}

// out [rows, inter] = T(silu(gate)) * up, rounded as torch's silu then mul; gate_up rows are [gate | up].
template <typename T>
void silu_mul(const T* gate_up, T* out, int64_t rows, int64_t inter) {
#pragma omp parallel for if (rows >= 8)
  for (int64_t r = 0; r < rows; ++r) {
    const T* g = gate_up + r * 2 * inter;
    const T* u = g + inter;
    T* o = out + r * inter;
#pragma omp simd
    for (int64_t i = 0; i < inter; ++i) {
      const float x = load(g[i]);
      store(round_to<T>(x / (1.f + fast_exp(-x))) * load(u[i]), o + i);
    }
  }
}

}  // namespace

extern "C" {

#define LLMAAS_FUSED(SUFFIX, T)                                                                                        \
  void llmaas_rope_kv_##SUFFIX(const T* qkv, int64_t rows, int64_t stride, int64_t H, int64_t Hkv, int64_t D,          \
                               const T* cos, const T* sin, const int64_t* slots,                                       \
                               int64_t cache_slots, T* k_cache, T* v_cache, T* q_out) {                                \
    rope_kv(qkv, rows, stride, H, Hkv, D, cos, sin, slots, cache_slots, k_cache, v_cache, q_out);                      \
  }                                                                                                                    \
  void llmaas_add_rms_norm_##SUFFIX(const T* x, const T* delta, const T* weight, T* h_out, T* normed, int64_t rows,    \
                                    int64_t dim, float eps) {                                                          \
    add_rms_norm(x, delta, weight, h_out, normed, rows, dim, eps);                                                     \
  }                                                                                                                    \
  void llmaas_silu_mul_##SUFFIX(const T* gate_up, T* out, int64_t rows, int64_t inter) {                               \
    silu_mul(gate_up, out, rows, inter);                                                                               \
  }

LLMAAS_FUSED(f32, float)
LLMAAS_FUSED(bf16, uint16_t)
}
