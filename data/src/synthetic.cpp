// Synthetic Fashion-MNIST-shaped data, for benchmarks that must not wait on disk or depend on
// the dataset being installed.
#include <cstdint>

#include "axon/data.h"

namespace axon::data {

namespace {
// SplitMix64 (Steele, Lea & Flood 2014): tiny, fast, and the same on every platform.
uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
}  // namespace

Dataset synthetic_fashion_mnist(size_t count, uint64_t seed) {
  Dataset ds;
  ds.count = count;
  ds.sample_shape = {28, 28};
  ds.sample_size = 28 * 28;
  ds.num_classes = 10;
  ds.source = "synthetic(" + std::to_string(count) + " samples, seed " + std::to_string(seed) + ")";
  ds.images.resize(count * ds.sample_size);
  ds.labels.resize(count);
  uint64_t state = seed;
  // Pixels k/255 like the real data, so the input distribution has the same range.
  for (float& x : ds.images) x = static_cast<float>(splitmix64(state) % 256) / 255.0f;
  for (int32_t& y : ds.labels) y = static_cast<int32_t>(splitmix64(state) % 10);
  return ds;
}

}  // namespace axon::data
