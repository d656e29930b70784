// Row gathers: the batch of a device-resident dataset (and, later, embedding lookups).
#include "axon/ops.h"
#include "common.h"

namespace axon {

Tensor gather_rows(const Tensor& src, const Tensor& indices) {
  if (src.dim() < 1) throw std::invalid_argument("gather_rows: source must have a row axis, got a scalar");
  if (indices.dim() != 1 || indices.dtype() != DType::i64)
    throw std::invalid_argument(fmt::format("gather_rows: indices must be i64 {{k}}, got {} of shape {}",
                                            dtype_name(indices.dtype()), shape_str(indices.shape())));
  if (indices.device() != src.device())
    throw std::invalid_argument(fmt::format("gather_rows: source on {} but indices on {}", src.device().str(),
                                            indices.device().str()));
  if (indices.device().is_cpu()) {
    const int64_t* p = indices.data_as<int64_t>();
    for (int64_t k = 0; k < indices.numel(); ++k)
      if (p[k] < 0 || p[k] >= src.size(0))
        throw std::out_of_range(fmt::format("gather_rows: index {} at position {} is out of range for {} rows", p[k], k,
                                            src.size(0)));
  }
  Shape shape = src.shape();
  shape[0] = indices.numel();
  Tensor out = Tensor::empty(shape, src.options());
  if (out.numel() > 0) backend(src.device()).gather_rows(src, indices, out);
  return out;
}

}  // namespace axon
