// Built into axon_cuda only when NCCL was found (see cuda/CMakeLists.txt).
#include <nccl.h>

#include <string>

#include "axon/cuda.h"

namespace axon::cuda {

std::string nccl_version() {
  int code = 0;
  if (ncclGetVersion(&code) != ncclSuccess || code <= 0) return "";
  // NCCL 2.9 changed the encoding from major*1000+minor*100+patch to major*10000+minor*100+patch.
  int major = code >= 10000 ? code / 10000 : code / 1000;
  int minor = code >= 10000 ? (code % 10000) / 100 : (code % 1000) / 100;
  int patch = code % 100;
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
}

}  // namespace axon::cuda
