// Paged attention for bf16 caches on CPUs with AVX-512 BF16 (Zen 4/5, Cooper Lake, Sapphire Rapids and later): the
// same contract as `attend` in paged_attention.cpp, for block sizes that are multiples of 16 and G query heads per KV
// head known at compile time.
//
// Scores: q.k with vdpbf16ps straight from the cache (bf16 pairs multiplied exactly, summed in fp32; no conversion
// pass), 16 keys at a time, their 16 partial-sum vectors reduced together by one transpose-and-add (~3 ops per key
// instead of a horizontal sum each), the softmax's max kept as they come. Values: two keys per vdpbf16ps against
// their weights rounded to bf16, accumulated in fp32 into G x D/16 registers.
#pragma once

#if defined(__AVX512BF16__) && defined(__AVX512F__)
#define LLMAAS_HAVE_AVX512_BF16 1

#include <immintrin.h>

#include <cmath>
#include <cstdint>

#include "bf16.h"
#include "fast_exp.h"
#include "scratch.h"

namespace llmaas {

// r[j] = sum of the 16 lanes of v[j], for j < 16.
inline __m512 sum16x16(__m512 v[16]) {
  __m512 s2[8], s4[4];
  for (int i = 0; i < 8; ++i)  // per 128-bit lane: [v2i_a, v2i+1_a, v2i_b, v2i+1_b]
    s2[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  for (int i = 0; i < 4; ++i)  // per 128-bit lane: the lane's sums of v4i .. v4i+3
    s4[i] = _mm512_add_ps(_mm512_shuffle_ps(s2[2 * i], s2[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                          _mm512_shuffle_ps(s2[2 * i], s2[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512 y01 = _mm512_add_ps(_mm512_shuffle_f32x4(s4[0], s4[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_f32x4(s4[0], s4[1], _MM_SHUFFLE(3, 1, 3, 1)));
  const __m512 y23 = _mm512_add_ps(_mm512_shuffle_f32x4(s4[2], s4[3], _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_f32x4(s4[2], s4[3], _MM_SHUFFLE(3, 1, 3, 1)));
  return _mm512_add_ps(_mm512_shuffle_f32x4(y01, y23, _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_f32x4(y01, y23, _MM_SHUFFLE(3, 1, 3, 1)));
}

// Blocks lie scattered over the cache, so the hardware prefetcher stops at each block's end: ask for the block two
// ahead while this one is computed. (What the kernel gains as a whole: bench/engine_step.py, "no paged attention".)
constexpr int64_t kAhead = 2;
inline void prefetch_block(const uint16_t* p, int64_t elems) {
  for (int64_t i = 0; i < elems; i += 32) _mm_prefetch(reinterpret_cast<const char*>(p + i), _MM_HINT_T0);
}

template <int G, int NV>  // NV: head_dim / 32 (one vdpbf16ps covers 32 elements)
void attend_bf16_avx512(const uint16_t* q, const uint16_t* k_cache, const uint16_t* v_cache,
                        const int64_t* table_rows, const int64_t* row_seq, const int64_t* lens, uint16_t* out,
                        int64_t S, int64_t Hkv, int64_t N, int64_t bs, int64_t nb, float scale) {
  constexpr int64_t D = NV * 32;
  const int64_t H = Hkv * G, L = nb * bs;
#pragma omp parallel for schedule(dynamic, 1) if (S * Hkv >= 4)
  for (int64_t hs = 0; hs < S * Hkv; ++hs) {
    const int64_t h = hs / S, s = hs % S, len = lens[s];
    const int64_t nblk = (len + bs - 1) / bs;
    const int64_t* table = table_rows + (row_seq ? row_seq[s] : s) * nb;
    float* scores = scratch(G * L);  // [G, L]
    __m512bh qv[G][NV];
    for (int g = 0; g < G; ++g)
      for (int v = 0; v < NV; ++v)
        qv[g][v] = (__m512bh)_mm512_loadu_si512(q + (s * H + h * G + g) * D + v * 32);
    const __m512 vscale = _mm512_set1_ps(scale);
    __m512 vmax[G];
    for (int g = 0; g < G; ++g) vmax[g] = _mm512_set1_ps(-INFINITY);
    for (int64_t b = 0, t0 = 0; t0 < len; ++b, t0 += bs) {
      const uint16_t* kb = k_cache + (h * N + table[b]) * bs * D;
      const int64_t ahead = b + kAhead;  // past the keys' last block: the values' first blocks
      if (ahead < nblk) prefetch_block(k_cache + (h * N + table[ahead]) * bs * D, bs * D);
      else if (ahead < 2 * nblk) prefetch_block(v_cache + (h * N + table[ahead - nblk]) * bs * D, bs * D);
      for (int64_t c = 0; c < bs && t0 + c < len; c += 16) {  // 16 keys of this block
        const int64_t n = len - t0 - c < 16 ? len - t0 - c : 16;
        __m512bh kv[16][NV];
        for (int64_t j = 0; j < 16; ++j)
          for (int v = 0; v < NV; ++v)
            kv[j][v] = (__m512bh)(j < n ? _mm512_loadu_si512(kb + (c + j) * D + v * 32) : _mm512_setzero_si512());
        for (int g = 0; g < G; ++g) {
          __m512 part[16];
          for (int j = 0; j < 16; ++j) {
            part[j] = _mm512_dpbf16_ps(_mm512_setzero_ps(), qv[g][0], kv[j][0]);
            for (int v = 1; v < NV; ++v) part[j] = _mm512_dpbf16_ps(part[j], qv[g][v], kv[j][v]);
          }
          const __mmask16 valid = (__mmask16)((1u << n) - 1u);
          const __m512 sc = _mm512_mul_ps(sum16x16(part), vscale);
          _mm512_mask_storeu_ps(scores + g * L + t0 + c, valid, sc);
          vmax[g] = _mm512_mask_max_ps(vmax[g], valid, vmax[g], sc);  // the softmax's max, as the scores come
        }
      }
    }
    float inv[G];
    for (int g = 0; g < G; ++g) {
      float* sc = scores + g * L;
      const float m = _mm512_reduce_max_ps(vmax[g]);
      float sum = 0.f;
#pragma omp simd reduction(+ : sum)
      for (int64_t t = 0; t < len; ++t) {
        sc[t] = fast_exp(sc[t] - m);
        sum += sc[t];
      }
      inv[g] = 1.f / sum;
    }
    // Values, two keys per vdpbf16ps: their rows interleaved (unpacked within 128-bit lanes) against their two
    // weights as one bf16 pair, the weights rounded to bf16 as torch's CPU attention rounds them for its bf16
    // matmul (a third of the instructions of widening every row to fp32). The weights are written as bf16 over the
    // start of their own fp32 row (element t's two bytes never pass float t, read before), plus a zero weight
    // after an odd last key.
    for (int g = 0; g < G; ++g) {
      char* row = reinterpret_cast<char*>(scores + g * L);
      for (int64_t t = 0; t < len; t += 16) {
        const __mmask16 m = len - t >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (len - t)) - 1u);
        const __m256bh w = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, row + 4 * t));
        _mm256_mask_storeu_epi16(row + 2 * t, m, (__m256i)w);
      }
      if (len % 2) reinterpret_cast<uint16_t*>(row)[len] = 0;
    }
    __m512 acc[G][2 * NV];  // [2v] lanes (k, i): dim 32v + 8k + i; [2v + 1]: dim 32v + 8k + 4 + i
    for (int g = 0; g < G; ++g)
      for (int v = 0; v < 2 * NV; ++v) acc[g][v] = _mm512_setzero_ps();
    for (int64_t b = 0, t0 = 0; t0 < len; ++b, t0 += bs) {
      const uint16_t* vb = v_cache + (h * N + table[b]) * bs * D;
      if (b + kAhead < nblk) prefetch_block(v_cache + (h * N + table[b + kAhead]) * bs * D, bs * D);
      const int64_t n = len - t0 < bs ? len - t0 : bs;
      for (int64_t j = 0; j < n; j += 2) {
        __m512i lo[NV], hi[NV];
        for (int v = 0; v < NV; ++v) {
          const __m512i a = _mm512_loadu_si512(vb + j * D + v * 32);
          const __m512i b2 = j + 1 < n ? _mm512_loadu_si512(vb + (j + 1) * D + v * 32) : _mm512_setzero_si512();
          lo[v] = _mm512_unpacklo_epi16(a, b2);
          hi[v] = _mm512_unpackhi_epi16(a, b2);
        }
        for (int g = 0; g < G; ++g) {
          uint32_t pair;
          __builtin_memcpy(&pair, reinterpret_cast<const char*>(scores + g * L) + 2 * (t0 + j), 4);
          const __m512bh w = (__m512bh)_mm512_set1_epi32(static_cast<int>(pair));
          for (int v = 0; v < NV; ++v) {
            acc[g][2 * v] = _mm512_dpbf16_ps(acc[g][2 * v], (__m512bh)lo[v], w);
            acc[g][2 * v + 1] = _mm512_dpbf16_ps(acc[g][2 * v + 1], (__m512bh)hi[v], w);
          }
        }
      }
    }
    for (int g = 0; g < G; ++g) {
      alignas(64) float o[2 * NV][16];
      for (int v = 0; v < 2 * NV; ++v) _mm512_store_ps(o[v], _mm512_mul_ps(acc[g][v], _mm512_set1_ps(inv[g])));
      uint16_t* dst = out + (s * H + h * G + g) * D;
      for (int v = 0; v < NV; ++v)
        for (int k = 0; k < 4; ++k)
          for (int i = 0; i < 4; ++i) {
            store(o[2 * v][4 * k + i], dst + 32 * v + 8 * k + i);
            store(o[2 * v + 1][4 * k + i], dst + 32 * v + 8 * k + 4 + i);
          }
    }
  }
}

// True when it ran (a supported G, head dim and block size); false: the caller runs the portable loops.
inline bool attend_bf16_fast(const uint16_t* q, const uint16_t* k, const uint16_t* v, const int64_t* table,
                             const int64_t* row_seq, const int64_t* lens, uint16_t* out, int64_t S, int64_t Hkv,
                             int64_t G, int64_t D, int64_t N, int64_t bs, int64_t nb, float scale) {
  if (bs % 16 != 0) return false;
#define LLMAAS_CASE(g, nv)                                                                                     \
  if (G == g && D == nv * 32) {                                                                                \
    attend_bf16_avx512<g, nv>(q, k, v, table, row_seq, lens, out, S, Hkv, N, bs, nb, scale);                   \
    return true;                                                                                               \
  }
  LLMAAS_CASE(1, 2) LLMAAS_CASE(2, 2) LLMAAS_CASE(3, 2) LLMAAS_CASE(4, 2) LLMAAS_CASE(5, 2) LLMAAS_CASE(6, 2)
  LLMAAS_CASE(7, 2) LLMAAS_CASE(8, 2) LLMAAS_CASE(1, 4) LLMAAS_CASE(2, 4) LLMAAS_CASE(4, 4) LLMAAS_CASE(8, 4)
#undef LLMAAS_CASE
  return false;
}

}  // namespace llmaas

#endif
