// bfloat16 stored as uint16_t: load to float, store with torch's rounding (round to nearest even, NaN kept).
#pragma once

#include <cstdint>
#include <cstring>

namespace llmaas {

inline float load(float x) { return x; }
inline float load(uint16_t x) {
  uint32_t u = static_cast<uint32_t>(x) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline void store(float x, float* out) { *out = x; }
inline void store(float x, uint16_t* out) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) { *out = 0x7fc0; return; }  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  *out = static_cast<uint16_t>(u >> 16);
}
// What a torch op computing in float and storing as T leaves behind: identity for float, bf16 rounding for bf16.
template <typename T>
inline float round_to(float x) {
  T t;
  store(x, &t);
  return load(t);
}

}  // namespace llmaas
