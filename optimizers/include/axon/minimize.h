// Any differentiable objective: minimize(f, params, optimizer, steps) runs an optimizer on a
// function built from tensor ops (axon/ops.h), not only on models.
#pragma once

#include <cstdint>
#include <functional>

#include "axon/optimizers.h"
#include "axon/tensor.h"

namespace axon {

struct MinimizeResult {
  Tensor params;      // the final point (the tensor passed in, updated in place)
  double loss = 0.0;  // f at the final point
  int64_t steps = 0;  // steps taken: `steps`, or fewer when f or a parameter became inf or NaN
};

// Takes `steps` optimizer steps on f from params (f32, any shape, any device; updated in place):
// each evaluates loss = f(x) with x a view of params that requires grad, back-propagates, and steps
// the optimizer with the gradient. f must return a one-element floating tensor that depends on x.
// Stops early when the loss or a parameter is not finite. Throws std::invalid_argument naming f's
// result shape, a non-f32 params or a negative step count.
MinimizeResult minimize(const std::function<Tensor(const Tensor&)>& f, Tensor params, Optimizer& optimizer,
                        int64_t steps);

}  // namespace axon
