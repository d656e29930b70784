// Parameter initializers, with the names, options and defaults of Elixir Axon's Axon.Initializers
// (shared/notes/axon-inventory.md §2).
//
// An Initializer makes a parameter's initial value: given the parameter's shape and the model's
// Generator it returns an f32 tensor of that shape on the CPU (init() converts it to the
// parameters' dtype and device). init(model, seed) runs every layer's initializers in parameter
// order from one Generator(seed), so the same seed gives the same parameters bit for bit on every
// platform (axon/random.h draws its own numbers; no std:: distribution is used).
//
// Shapes follow the seed: a dense kernel is {in, out}; an n-d kernel is {spatial..., in, out}.
// Options are checked when the initializer is made (std::invalid_argument naming it and the
// option); shapes when it runs (std::invalid_argument naming it and the shape; init() adds the
// parameter's name, "dense_2.kernel: ...").
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>

#include "axon/random.h"
#include "axon/tensor.h"

namespace axon {

using Initializer = std::function<Tensor(const Shape& shape, Generator& gen)>;

namespace initializers {

// ---- constants ----
Initializer zeros();
Initializer ones();
Initializer full(float value);
// Ones where the last two indices are equal, zeros elsewhere (an identity matrix for each leading
// index; a rectangular {m, n} gets min(m, n) ones). Rank ≥ 2.
Initializer identity();

// ---- random, fixed scale ----
// U(−scale, scale): variance scale²/3. scale > 0 (default 0.01, as the seed).
Initializer uniform(float scale = 0.01f);
// N(mean, scale²). scale > 0 (default 0.01, as the seed).
Initializer normal(float mean = 0.0f, float scale = 0.01f);

// ---- variance scaling: variance = scale / max(1, n), n from the fans ----
enum class FanMode { fan_in, fan_out, fan_avg };  // n = fan_in, fan_out, or (fan_in + fan_out)/2
enum class Distribution {
  normal,            // N(0, variance)
  truncated_normal,  // N(0, σ²) cut to [−2σ, 2σ], σ = √variance / 0.87962566103423978 (the cut
                     // normal's standard deviation is 0.8796…·σ, so the result has the variance)
  uniform,           // U(−l, l), l = √(3·variance)
};
// scale > 0. Defaults as the seed: scale 1, fan_in, normal.
Initializer variance_scaling(float scale = 1.0f, FanMode mode = FanMode::fan_in,
                             Distribution distribution = Distribution::normal);

// The named schemes, each a variance_scaling (the seed's *_normal ones are truncated normals):
// LeCun et al. 1998, "Efficient BackProp": variance = scale / fan_in.
Initializer lecun_uniform(float scale = 1.0f);
Initializer lecun_normal(float scale = 1.0f);
// Glorot & Bengio 2010, "Understanding the difficulty of training deep feedforward neural
// networks": variance = 2·scale / (fan_in + fan_out), i.e. uniform limit √(6·scale/(fan_in + fan_out)).
Initializer glorot_uniform(float scale = 1.0f);
Initializer glorot_normal(float scale = 1.0f);
// He et al. 2015, "Delving Deep into Rectifiers": variance = scale / fan_in with scale 2.
Initializer he_uniform(float scale = 2.0f);
Initializer he_normal(float scale = 2.0f);

// Saxe, McClelland & Ganguli 2014, "Exact solutions to the nonlinear dynamics of learning in deep
// linear neural networks". The shape (rank ≥ 2) is viewed as {m, n} = {product of all but the last
// dim, last dim}; a k×k matrix (k = max(m, n)) of N(0, 1) (or U(−1, 1) with `uniform`) is factored
// A = QR by Householder reflections in double, Q's columns are multiplied by the signs of R's
// diagonal (so Q is Haar-distributed, Mezzadri 2007; the seed leaves this out), and the top-left
// {m, n} block is returned: orthonormal columns when m ≥ n, orthonormal rows when m < n.
// `distribution` is normal or uniform. Costs O(k³): about a second for k = 1000.
Initializer orthogonal(Distribution distribution = Distribution::normal);

// The initializer of a seed name with its defaults: zeros, ones, identity, uniform, normal,
// lecun_uniform, lecun_normal, glorot_uniform, glorot_normal, he_uniform, he_normal,
// variance_scaling, orthogonal. Throws std::invalid_argument listing them on an unknown name.
Initializer parse(const std::string& name);

// fan_in and fan_out of a shape, as the seed: {} gives (1, 1); {n} gives (n, n); {in, out};
// {spatial..., in, out} multiplies both by the receptive field (the product of the spatial dims).
std::pair<double, double> fans(const Shape& shape);

}  // namespace initializers
}  // namespace axon
