#include "axon/minimize.h"

#include <fmt/format.h>

#include <cmath>
#include <stdexcept>

#include "axon/autograd.h"

namespace axon {

namespace {

double evaluate(const std::function<Tensor(const Tensor&)>& f, const Tensor& x) {
  Tensor loss = f(x);
  if (!loss.defined() || loss.numel() != 1)
    throw std::invalid_argument(
        fmt::format("minimize: f must return one element, got shape {}", loss.defined() ? shape_str(loss.shape()) : "undefined"));
  return loss.item_double();
}

}  // namespace

MinimizeResult minimize(const std::function<Tensor(const Tensor&)>& f, Tensor params, Optimizer& optimizer,
                        int64_t steps) {
  if (!f) throw std::invalid_argument("minimize: no function");
  if (steps < 0) throw std::invalid_argument(fmt::format("minimize: steps must be >= 0, got {}", steps));
  if (params.dtype() != DType::f32)
    throw std::invalid_argument(fmt::format("minimize: params must be f32, got {}", dtype_name(params.dtype())));
  MinimizeResult result{params, 0.0, 0};
  for (int64_t t = 0; t < steps; ++t) {
    Tensor x = params.detach();
    x.set_requires_grad();
    Tensor loss = f(x);
    if (!loss.defined() || loss.numel() != 1)
      throw std::invalid_argument(fmt::format("minimize: f must return one element, got shape {}",
                                              loss.defined() ? shape_str(loss.shape()) : "undefined"));
    if (!std::isfinite(loss.item_double())) break;
    loss.backward();
    const Tensor g = x.grad();
    if (!g.defined()) throw std::invalid_argument("minimize: f's result does not depend on the parameters");
    optimizer.step(params, g);
    ++result.steps;
    if (optimizer.nonfinite_flag().item() != 0.0f) break;
  }
  NoGradGuard no_grad;
  result.loss = evaluate(f, params.detach());
  return result;
}

}  // namespace axon
