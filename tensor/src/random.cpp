#include "axon/random.h"

#include <cmath>
#include <numbers>
#include <sstream>
#include <stdexcept>

namespace axon {

float Generator::normal() {
  // Box–Muller; 1 - u keeps the logarithm's argument in (0, 1].
  float u1 = 1.0f - uniform01();
  float u2 = uniform01();
  return std::sqrt(-2.0f * std::log(u1)) * std::cos(2.0f * std::numbers::pi_v<float> * u2);
}

std::string Generator::state() const {
  std::ostringstream out;
  out << engine_;
  return out.str();
}

void Generator::set_state(const std::string& text) {
  std::istringstream in(text);
  std::mt19937_64 engine;
  in >> engine;
  if (in.fail()) throw std::invalid_argument("random generator: not a saved mt19937_64 state");
  engine_ = engine;
}

Tensor uniform(const Shape& shape, float low, float high, Generator& gen) {
  Tensor t = Tensor::empty(shape);
  for (float& v : t.values()) v = gen.uniform(low, high);
  return t;
}

Tensor normal(const Shape& shape, float mean, float stddev, Generator& gen) {
  Tensor t = Tensor::empty(shape);
  for (float& v : t.values()) v = mean + stddev * gen.normal();
  return t;
}

}  // namespace axon
