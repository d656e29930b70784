// Deterministic random numbers: the same seed gives the same values on every platform and
// standard library (std:: distributions differ between implementations, so we do our own).
#pragma once

#include <cstdint>
#include <random>
#include <string>

#include "axon/tensor.h"

namespace axon {

class Generator {
 public:
  explicit Generator(uint64_t seed) : engine_(seed) {}

  uint64_t next_u64() { return engine_(); }
  // Uniform in [0, 1) with 24 random bits (every float step is reachable).
  float uniform01() { return static_cast<float>(engine_() >> 40) * 0x1.0p-24f; }
  float uniform(float low, float high) { return low + (high - low) * uniform01(); }
  // Standard normal by Box–Muller.
  float normal();

  // The engine's full state as text (std::mt19937_64's standard stream format), for checkpoints:
  // a generator restored with set_state continues the same sequence. set_state throws
  // std::invalid_argument when the text is not such a state.
  std::string state() const;
  void set_state(const std::string& text);

 private:
  std::mt19937_64 engine_;
};

Tensor uniform(const Shape& shape, float low, float high, Generator& gen);
Tensor normal(const Shape& shape, float mean, float stddev, Generator& gen);

}  // namespace axon
