#include "axon/initializers.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

namespace axon::initializers {

namespace {

void check_positive(const char* name, const char* option, float value) {
  if (!(value > 0.0f) || !std::isfinite(value))
    throw std::invalid_argument(fmt::format("initializer {}: {} must be positive and finite, got {}", name, option, value));
}

// The standard deviation of N(0, 1) cut to [−2, 2]: √(1 − 4φ(2)/(2Φ(2) − 1)).
constexpr double kTruncatedStddev = 0.87962566103423978;

const char* distribution_name(Distribution d) {
  switch (d) {
    case Distribution::normal: return "normal";
    case Distribution::truncated_normal: return "truncated_normal";
    case Distribution::uniform: return "uniform";
  }
  return "?";
}

// N(0, 1) cut to [−2, 2], by rejection (95.4% of draws are kept).
float truncated_standard_normal(Generator& gen) {
  for (;;) {
    const float z = gen.normal();
    if (z >= -2.0f && z <= 2.0f) return z;
  }
}

Tensor draw(const Shape& shape, Distribution distribution, double variance, Generator& gen) {
  Tensor t = Tensor::empty(shape);
  switch (distribution) {
    case Distribution::normal: {
      const float stddev = static_cast<float>(std::sqrt(variance));
      for (float& v : t.values()) v = stddev * gen.normal();
      break;
    }
    case Distribution::truncated_normal: {
      const float stddev = static_cast<float>(std::sqrt(variance) / kTruncatedStddev);
      for (float& v : t.values()) v = stddev * truncated_standard_normal(gen);
      break;
    }
    case Distribution::uniform: {
      const float limit = static_cast<float>(std::sqrt(3.0 * variance));
      for (float& v : t.values()) v = gen.uniform(-limit, limit);
      break;
    }
  }
  return t;
}

Initializer scaled(const char* name, float scale, FanMode mode, Distribution distribution) {
  check_positive(name, "scale", scale);
  return [=](const Shape& shape, Generator& gen) {
    const auto [fan_in, fan_out] = fans(shape);
    const double n = mode == FanMode::fan_in ? fan_in : mode == FanMode::fan_out ? fan_out : (fan_in + fan_out) / 2.0;
    return draw(shape, distribution, static_cast<double>(scale) / std::max(1.0, n), gen);
  };
}

// Q of A = QR (A k×k, row-major, overwritten), by Householder reflections, with Q's columns
// multiplied by the signs of R's diagonal. Golub & Van Loan, "Matrix Computations", §5.2.
std::vector<double> orthogonal_factor(std::vector<double> a, int64_t k) {
  std::vector<double> q(static_cast<size_t>(k * k), 0.0);
  for (int64_t i = 0; i < k; ++i) q[i * k + i] = 1.0;
  std::vector<double> v(static_cast<size_t>(k));
  std::vector<double> sign(static_cast<size_t>(k), 1.0);
  for (int64_t j = 0; j < k; ++j) {
    // v = x + sign(x0)·‖x‖·e1 for x = A[j:, j]; H = I − 2vvᵀ/vᵀv.
    double norm = 0.0;
    for (int64_t i = j; i < k; ++i) norm += a[i * k + j] * a[i * k + j];
    norm = std::sqrt(norm);
    const double x0 = a[j * k + j];
    const double alpha = x0 >= 0 ? -norm : norm;  // R[j][j] after the reflection
    sign[j] = alpha < 0 ? -1.0 : 1.0;
    double vnorm2 = 0.0;
    for (int64_t i = j; i < k; ++i) {
      v[i] = a[i * k + j] - (i == j ? alpha : 0.0);
      vnorm2 += v[i] * v[i];
    }
    if (vnorm2 == 0.0) continue;  // the column is already reduced
    // A[j:, j:] -= 2 v (vᵀ A[j:, j:]) / vᵀv
    for (int64_t c = j; c < k; ++c) {
      double dot = 0.0;
      for (int64_t i = j; i < k; ++i) dot += v[i] * a[i * k + c];
      const double f = 2.0 * dot / vnorm2;
      for (int64_t i = j; i < k; ++i) a[i * k + c] -= f * v[i];
    }
    // Q = Q·H: Q[:, j:] -= 2 (Q[:, j:] v) vᵀ / vᵀv
    for (int64_t r = 0; r < k; ++r) {
      double dot = 0.0;
      for (int64_t i = j; i < k; ++i) dot += q[r * k + i] * v[i];
      const double f = 2.0 * dot / vnorm2;
      for (int64_t i = j; i < k; ++i) q[r * k + i] -= f * v[i];
    }
  }
  for (int64_t r = 0; r < k; ++r)
    for (int64_t c = 0; c < k; ++c) q[r * k + c] *= sign[c];
  return q;
}

}  // namespace

std::pair<double, double> fans(const Shape& shape) {
  if (shape.empty()) return {1.0, 1.0};
  if (shape.size() == 1) return {static_cast<double>(shape[0]), static_cast<double>(shape[0])};
  // {..., in, out}: leading dims form the receptive field (conv kernels).
  double receptive = 1.0;
  for (size_t i = 0; i + 2 < shape.size(); ++i) receptive *= static_cast<double>(shape[i]);
  const double in = static_cast<double>(shape[shape.size() - 2]);
  const double out = static_cast<double>(shape[shape.size() - 1]);
  return {in * receptive, out * receptive};
}

Initializer zeros() { return full(0.0f); }
Initializer ones() { return full(1.0f); }
Initializer full(float value) {
  return [value](const Shape& shape, Generator&) { return Tensor::full(shape, value); };
}

Initializer identity() {
  return [](const Shape& shape, Generator&) {
    if (shape.size() < 2)
      throw std::invalid_argument(fmt::format("initializer identity: needs a shape of rank 2 or more, got {}", shape_str(shape)));
    Tensor t = Tensor::zeros(shape);
    const int64_t rows = shape[shape.size() - 2], cols = shape[shape.size() - 1];
    const int64_t blocks = rows * cols == 0 ? 0 : t.numel() / (rows * cols);
    float* p = t.data();
    for (int64_t b = 0; b < blocks; ++b)
      for (int64_t i = 0; i < std::min(rows, cols); ++i) p[b * rows * cols + i * cols + i] = 1.0f;
    return t;
  };
}

Initializer uniform(float scale) {
  check_positive("uniform", "scale", scale);
  return [scale](const Shape& shape, Generator& gen) { return axon::uniform(shape, -scale, scale, gen); };
}

Initializer normal(float mean, float scale) {
  check_positive("normal", "scale", scale);
  if (!std::isfinite(mean)) throw std::invalid_argument(fmt::format("initializer normal: mean must be finite, got {}", mean));
  return [mean, scale](const Shape& shape, Generator& gen) { return axon::normal(shape, mean, scale, gen); };
}

Initializer variance_scaling(float scale, FanMode mode, Distribution distribution) {
  return scaled("variance_scaling", scale, mode, distribution);
}

Initializer lecun_uniform(float scale) { return scaled("lecun_uniform", scale, FanMode::fan_in, Distribution::uniform); }
Initializer lecun_normal(float scale) {
  return scaled("lecun_normal", scale, FanMode::fan_in, Distribution::truncated_normal);
}
Initializer glorot_uniform(float scale) {
  return scaled("glorot_uniform", scale, FanMode::fan_avg, Distribution::uniform);
}
Initializer glorot_normal(float scale) {
  return scaled("glorot_normal", scale, FanMode::fan_avg, Distribution::truncated_normal);
}
Initializer he_uniform(float scale) { return scaled("he_uniform", scale, FanMode::fan_in, Distribution::uniform); }
Initializer he_normal(float scale) { return scaled("he_normal", scale, FanMode::fan_in, Distribution::truncated_normal); }

Initializer orthogonal(Distribution distribution) {
  if (distribution == Distribution::truncated_normal)
    throw std::invalid_argument(fmt::format("initializer orthogonal: distribution must be normal or uniform, got {}",
                                            distribution_name(distribution)));
  return [distribution](const Shape& shape, Generator& gen) {
    if (shape.size() < 2)
      throw std::invalid_argument(
          fmt::format("initializer orthogonal: needs a shape of rank 2 or more, got {}", shape_str(shape)));
    const int64_t n = shape.back();
    const int64_t m = n == 0 ? 0 : shape_numel(shape) / n;
    const int64_t k = std::max(m, n);
    std::vector<double> a(static_cast<size_t>(k * k));
    for (double& v : a)
      v = distribution == Distribution::uniform ? static_cast<double>(gen.uniform(-1.0f, 1.0f))
                                                : static_cast<double>(gen.normal());
    const std::vector<double> q = orthogonal_factor(std::move(a), k);
    Tensor t = Tensor::empty(shape);
    float* p = t.data();
    for (int64_t r = 0; r < m; ++r)
      for (int64_t c = 0; c < n; ++c) p[r * n + c] = static_cast<float>(q[r * k + c]);
    return t;
  };
}

Initializer parse(const std::string& name) {
  if (name == "zeros") return zeros();
  if (name == "ones") return ones();
  if (name == "identity") return identity();
  if (name == "uniform") return uniform();
  if (name == "normal") return normal();
  if (name == "lecun_uniform") return lecun_uniform();
  if (name == "lecun_normal") return lecun_normal();
  if (name == "glorot_uniform") return glorot_uniform();
  if (name == "glorot_normal") return glorot_normal();
  if (name == "he_uniform") return he_uniform();
  if (name == "he_normal") return he_normal();
  if (name == "variance_scaling") return variance_scaling();
  if (name == "orthogonal") return orthogonal();
  throw std::invalid_argument(fmt::format(
      "unknown initializer '{}' (expected zeros, ones, identity, uniform, normal, lecun_uniform, lecun_normal, "
      "glorot_uniform, glorot_normal, he_uniform, he_normal, variance_scaling or orthogonal)",
      name));
}

}  // namespace axon::initializers
