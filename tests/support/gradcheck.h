// Compares autograd gradients with central finite differences.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "axon/autograd.h"
#include "axon/ops.h"
#include "axon/random.h"

namespace axon::testing {

// f maps the inputs to any tensor; it is reduced to a scalar with fixed random weights so every
// output element contributes. Checks d/d(input) for each input that requires grad.
inline void expect_gradients_match(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                                   std::vector<Tensor> inputs, float eps = 1e-2f, float atol = 2e-3f,
                                   float rtol = 2e-2f) {
  Generator gen(1234);
  Tensor probe = f(inputs);
  Tensor weights = uniform(probe.shape(), -1.0f, 1.0f, gen);
  auto objective = [&](const std::vector<Tensor>& xs) { return sum(mul(f(xs), weights)); };

  for (Tensor& x : inputs) x.set_grad(Tensor());
  objective(inputs).backward();

  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].requires_grad()) continue;
    Tensor analytic = inputs[i].grad();
    ASSERT_TRUE(analytic.defined()) << "input " << i << " got no gradient";
    ASSERT_EQ(analytic.shape(), inputs[i].shape());
    NoGradGuard no_grad;
    for (int64_t k = 0; k < inputs[i].numel(); ++k) {
      float* v = inputs[i].data() + k;
      const float saved = *v;
      *v = saved + eps;
      const double up = objective(inputs).item();
      *v = saved - eps;
      const double down = objective(inputs).item();
      *v = saved;
      const double numeric = (up - down) / (2.0 * eps);
      const double got = analytic.data()[k];
      EXPECT_NEAR(got, numeric, atol + rtol * std::abs(numeric)) << "input " << i << " element " << k;
    }
  }
}

// Central differences (eps 1e-6) of the scalar f64 objective() in every element of each f64 CPU
// input, against the gradients autograd leaves in .grad() (reset first):
// |analytic − numeric| ≤ tol·(1 + |numeric|). `where` names the case in failure messages.
inline void expect_f64_gradients_match(const std::function<Tensor()>& objective, std::vector<Tensor> inputs,
                                       const std::string& where, double tol = 1e-6) {
  for (Tensor& x : inputs) x.set_grad(Tensor());
  objective().backward();
  NoGradGuard no_grad;
  const double eps = 1e-6;
  for (size_t i = 0; i < inputs.size(); ++i) {
    ASSERT_TRUE(inputs[i].grad().defined()) << where << " input " << i << " got no gradient";
    const std::vector<double> analytic = inputs[i].grad().to_double_vector();
    double* v = inputs[i].data_as<double>();
    for (int64_t k = 0; k < inputs[i].numel(); ++k) {
      const double saved = v[k];
      v[k] = saved + eps;
      const double up = objective().item_double();
      v[k] = saved - eps;
      const double down = objective().item_double();
      v[k] = saved;
      const double numeric = (up - down) / (2 * eps);
      EXPECT_NEAR(analytic[static_cast<size_t>(k)], numeric, tol + tol * std::abs(numeric))
          << where << " input " << i << " element " << k;
    }
  }
}

inline Tensor random_tensor(const Shape& shape, uint64_t seed, bool requires_grad = true, float low = -1.0f,
                            float high = 1.0f) {
  Generator gen(seed);
  Tensor t = uniform(shape, low, high, gen);
  t.set_requires_grad(requires_grad);
  return t;
}

}  // namespace axon::testing
