// A vectorizable exp for float (std::exp is a scalar library call inside the loops that use it).
#pragma once

#include <cmath>
#include <cstdint>

namespace llmaas {

// exp(x) for |x| < 88: 2^n * p(r), r = x - n*ln2 in two parts, Cephes' degree-6 polynomial (about 1 ulp); plain
// arithmetic so that the loops around it vectorize (std::exp does not, here).
inline float fast_exp(float x) {
  // std::fma, not a * b + c: the kernels are built with -ffp-contract=off (for exact roundings elsewhere), and
  // the polynomial is a dependency chain, so fused steps halve its latency.
  x = x < -87.f ? -87.f : (x > 88.f ? 88.f : x);
  const float n = std::floor(std::fma(x, 1.44269504088896341f, 0.5f));
  const float r = std::fma(n, 2.12194440e-4f, std::fma(n, -0.693359375f, x));
  float p = 1.9875691500e-4f;
  p = std::fma(p, r, 1.3981999507e-3f);
  p = std::fma(p, r, 8.3334519073e-3f);
  p = std::fma(p, r, 4.1665795894e-2f);
  p = std::fma(p, r, 1.6666665459e-1f);
  p = std::fma(p, r, 5.0000001201e-1f);
  const float y = std::fma(p * r, r, r + 1.f);
  const float scale = __builtin_bit_cast(float, static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23);
  return y * scale;
}

}  // namespace llmaas
