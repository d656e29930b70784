// Optimizers on any objective: every optimizer minimizes the Rosenbrock function
//   f(x, y) = (1 - x)² + 100·(y - x²)²   (minimum 0 at (1, 1))
// from (-1.5, 2), written with tensor ops and handed to minimize() (axon/minimize.h).
//   build/bin/rosenbrock            the table: optimizer, learning rate, steps, final point, final loss
// Each optimizer runs with its default options except the learning rate and the step count below,
// chosen so that those that can converge do (loss < 1e-3; the program exits 1 when one of them does
// not). Fromage and LAMB scale each step by |p| / |update| (their layer-wise trust ratio), so the
// step does not shrink near the minimum and they circle the valley floor (LAMB at larger rates, and
// at smaller ones its steps vanish where the path passes the origin); Noisy SGD's gradient noise
// keeps it moving. RAdam takes plain momentum steps of lr·m̂ until its variance estimate is
// tractable (about 5 steps), so it needs a rate these gradients (~150) do not blow up.
#include <cstdio>
#include <string>
#include <vector>

#include "axon/minimize.h"
#include "axon/ops.h"
#include "axon/optimizers.h"

using namespace axon;

namespace {

struct Run {
  const char* optimizer;
  double lr;
  int64_t steps;
  bool converges;  // expected to reach loss < 1e-3
};

const std::vector<Run> kRuns = {
    {"sgd", 1e-3, 20000, true},      {"adam", 2e-2, 5000, true},     {"adamw", 2e-2, 5000, true},
    {"adagrad", 0.5, 20000, true},   {"rmsprop", 1e-3, 10000, true}, {"radam", 5e-3, 10000, true},
    {"nadam", 2e-2, 5000, true},     {"adamax", 5e-2, 5000, true},   {"adabelief", 2e-2, 5000, true},
    {"fromage", 1e-2, 5000, false},  {"lamb", 3e-3, 20000, false},    {"noisy_sgd", 1e-3, 20000, false},
    {"yogi", 5e-2, 5000, true},      {"lion", 1e-3, 5000, true},
};

Tensor rosenbrock(const Tensor& p) {
  // p {2}: x and y picked out by products with constant unit columns (differentiable).
  static const Tensor ex = Tensor::from_vector({2, 1}, std::vector<float>{1, 0});
  static const Tensor ey = Tensor::from_vector({2, 1}, std::vector<float>{0, 1});
  const Tensor row = p.reshape({1, 2});
  const Tensor x = matmul(row, ex), y = matmul(row, ey);
  return sum(square(add_scalar(neg(x), 1.0f)) + mul_scalar(square(y - square(x)), 100.0f));
}

}  // namespace

int main() {
  std::printf("%-10s %8s %7s %24s %12s %s\n", "optimizer", "lr", "steps", "final point", "final loss", "converged");
  bool ok = true;
  for (const Run& run : kRuns) {
    Tensor p = Tensor::from_vector({2}, std::vector<float>{-1.5f, 2.0f});
    auto opt = make_optimizer(run.optimizer, run.lr);
    const MinimizeResult r = minimize(rosenbrock, p, *opt, run.steps);
    const std::vector<float> xy = p.to_vector();
    const bool converged = r.loss < 1e-3;
    std::printf("%-10s %8g %7lld %11.6f,%12.6f %12.4g %s\n", run.optimizer, run.lr, static_cast<long long>(r.steps),
                xy[0], xy[1], r.loss, converged ? "yes" : (run.converges ? "NO (expected yes)" : "no (not expected)"));
    ok = ok && (converged || !run.converges);
  }
  return ok ? 0 : 1;
}
