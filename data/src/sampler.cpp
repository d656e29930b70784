// Deterministic permutations and the distributed sampler built on them.
#include <limits>
#include <numeric>
#include <random>
#include <stdexcept>
#include <utility>

#include "axon/data.h"

namespace axon::data {
namespace {

// A uniform integer in [0, bound), bound > 0. Taking x % bound directly would favour small
// results; rejecting the 2^64 mod bound lowest raw values leaves a range that is an exact
// multiple of bound. Written out (rather than std::uniform_int_distribution) because the
// standard leaves that distribution's algorithm, and so its outputs, to each library.
uint64_t uniform_below(std::mt19937_64& rng, uint64_t bound) {
  const uint64_t threshold = (0 - bound) % bound;  // == 2^64 mod bound
  for (;;) {
    const uint64_t x = rng();
    if (x >= threshold) return x % bound;
  }
}

}  // namespace

std::vector<size_t> permutation(size_t n, uint64_t seed, uint64_t epoch) {
  std::vector<size_t> perm(n);
  std::iota(perm.begin(), perm.end(), size_t{0});
  // The multiplier (2^64 / golden ratio) spreads consecutive epochs over the seed space.
  std::mt19937_64 rng(seed ^ (epoch * 0x9E3779B97F4A7C15ULL));
  // Fisher–Yates, hand-written for the same reason as uniform_below: std::shuffle's
  // algorithm differs between standard libraries.
  for (size_t i = n; i > 1; --i) {
    const auto j = static_cast<size_t>(uniform_below(rng, i));
    std::swap(perm[i - 1], perm[j]);
  }
  return perm;
}

DistributedSampler::DistributedSampler(size_t dataset_size, int rank, int world_size,
                                       uint64_t seed, bool shuffle, bool drop_last)
    : dataset_size_(dataset_size),
      rank_(rank),
      world_size_(world_size),
      seed_(seed),
      shuffle_(shuffle),
      num_samples_(0) {
  const std::string where = "DistributedSampler(dataset_size=" + std::to_string(dataset_size) +
                            ", rank=" + std::to_string(rank) +
                            ", world_size=" + std::to_string(world_size) + "): ";
  if (world_size < 1) throw std::runtime_error(where + "world_size must be at least 1");
  if (rank < 0 || rank >= world_size) {
    throw std::runtime_error(where + "rank must be in [0, world_size)");
  }
  if (dataset_size == 0) throw std::runtime_error(where + "the dataset is empty");
  const auto world = static_cast<size_t>(world_size);
  if (drop_last) {
    if (dataset_size < world) {
      throw std::runtime_error(where + "drop_last with fewer samples than ranks leaves every "
                                       "rank with nothing");
    }
    num_samples_ = dataset_size / world;
  } else {
    num_samples_ = dataset_size / world + (dataset_size % world != 0 ? 1 : 0);
    if (num_samples_ > std::numeric_limits<size_t>::max() / world) {
      throw std::runtime_error(where + "padded size overflows size_t");
    }
  }
}

std::vector<size_t> DistributedSampler::indices(uint64_t epoch) const {
  std::vector<size_t> order;
  if (shuffle_) {
    order = permutation(dataset_size_, seed_, epoch);
  } else {
    order.resize(dataset_size_);
    std::iota(order.begin(), order.end(), size_t{0});
  }
  // Position p of the padded (or truncated) order is order[p % dataset_size]: padding wraps
  // around to the start, as often as needed when there are more ranks than samples. This
  // rank takes positions rank, rank + W, rank + 2W, ...
  const auto world = static_cast<size_t>(world_size_);
  std::vector<size_t> mine(num_samples_);
  for (size_t k = 0; k < num_samples_; ++k) {
    mine[k] = order[(static_cast<size_t>(rank_) + k * world) % dataset_size_];
  }
  return mine;
}

size_t DistributedSampler::num_samples() const { return num_samples_; }

size_t DistributedSampler::total_size() const {
  return num_samples_ * static_cast<size_t>(world_size_);
}

}  // namespace axon::data
