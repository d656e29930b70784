// A small synthetic classification set for trainer tests: 12 features in [-1, 1), 3 classes
// decided by the features, the same on every rank for a given seed.
#pragma once

#include <cstddef>
#include <cstdint>

#include "axon/data.h"
#include "axon/random.h"

namespace axon::testing {

inline data::Dataset synthetic_dataset(size_t count, uint64_t seed) {
  data::Dataset ds;
  ds.count = count;
  ds.sample_shape = {12};
  ds.sample_size = 12;
  ds.num_classes = 3;
  Generator gen(seed);
  ds.images.resize(count * 12);
  ds.labels.resize(count);
  for (float& v : ds.images) v = gen.uniform(-1, 1);
  for (size_t i = 0; i < count; ++i) ds.labels[i] = (ds.images[i * 12] + ds.images[i * 12 + 1] > 0) + (ds.images[i * 12 + 2] > 0.5f);
  return ds;
}

}  // namespace axon::testing
