// Formatting shared by the IDX reader and the dataset loaders.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace axon::data {

// "60000x28x28", the way error messages show IDX dimensions.
inline std::string join_dims(const std::vector<uint32_t>& dims) {
  std::string out;
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i > 0) out += 'x';
    out += std::to_string(dims[i]);
  }
  return out;
}

}  // namespace axon::data
