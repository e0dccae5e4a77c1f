// A vectorizable exp for float (std::exp is a scalar library call inside the loops that use it).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace llmaas {

// exp(x) for |x| < 88: 2^n * p(r), r = x - n*ln2 in two parts, Cephes' degree-6 polynomial (about 1 ulp); plain
// arithmetic so that the loops around it vectorize (std::exp does not, here).
inline float fast_exp(float x) {
  x = x < -87.f ? -87.f : (x > 88.f ? 88.f : x);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  float r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.f;
  const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  return y * scale;
}

}  // namespace llmaas
