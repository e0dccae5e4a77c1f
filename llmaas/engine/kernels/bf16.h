// bfloat16 stored as uint16_t: load to float, store with torch's rounding (round to nearest even, NaN kept).
#pragma once

#include <cstdint>

namespace llmaas {

inline float load(float x) { return x; }
// Branch-free bit casts, so that loops over them vectorize.
inline float load(uint16_t x) { return __builtin_bit_cast(float, static_cast<uint32_t>(x) << 16); }
inline uint16_t to_bf16(float x) {
  const uint32_t u = __builtin_bit_cast(uint32_t, x);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return static_cast<uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? 0x7fc0u : rounded);  // NaN stays a quiet NaN
}
inline void store(float x, float* out) { *out = x; }
inline void store(float x, uint16_t* out) { *out = to_bf16(x); }

// What a torch op computing in float and storing as T leaves behind: identity for float, bf16 rounding for bf16.
template <typename T>
inline float round_to(float x);
template <>
inline float round_to<float>(float x) { return x; }
template <>
inline float round_to<uint16_t>(float x) { return load(to_bf16(x)); }

}  // namespace llmaas
