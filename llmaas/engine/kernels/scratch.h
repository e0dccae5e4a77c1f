// A per-thread float scratch buffer that grows to the largest size asked of it and is kept for the thread's life
// (OpenMP's pool threads persist, so a kernel's scratch is allocated once, not per call, and its size does not grow
// with the batch as one buffer per work item would).
#pragma once

#include <cstdint>
#include <vector>

namespace llmaas {

inline float* scratch(int64_t floats) {
  thread_local std::vector<float> buf;
  if (static_cast<int64_t>(buf.size()) < floats) buf.resize(static_cast<size_t>(floats));
  return buf.data();
}

}  // namespace llmaas
