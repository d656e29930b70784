// Normalization layers with model state, shape layers, combinators and custom layers: the layer
// classes (private to this file) and their builders (axon/model.h).
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <tuple>

#include "axon/autograd.h"
#include "axon/model.h"
#include "axon/ops.h"

namespace axon {

namespace {

void expect_inputs(const std::vector<Shape>& inputs, size_t n, const std::string& what) {
  if (inputs.size() != n) throw std::invalid_argument(fmt::format("{} takes {} input(s), got {}", what, n, inputs.size()));
}

// The channel axis of `in`, or an error naming the layer's options and the shape.
int64_t channel_axis(const Shape& in, int64_t channel_index, const std::string& what, int64_t min_rank = 2) {
  const int64_t dims = static_cast<int64_t>(in.size());
  if (dims < min_rank)
    throw std::invalid_argument(fmt::format("{}: needs an input of rank {} or more, got {}", what, min_rank, shape_str(in)));
  const int64_t a = channel_index < 0 ? channel_index + dims : channel_index;
  if (a < 0 || a >= dims)
    throw std::invalid_argument(fmt::format("{}: channel_index out of range for input shape {}", what, shape_str(in)));
  if (a == 0) throw std::invalid_argument(fmt::format("{}: channel_index names the batch axis of input shape {}", what, shape_str(in)));
  if (in[a] <= 0)
    throw std::invalid_argument(fmt::format("{}: the channel axis of input shape {} must have a known size", what, shape_str(in)));
  return a;
}

void check_epsilon(const std::string& op, double epsilon) {
  if (!std::isfinite(epsilon) || epsilon < 0.0)
    throw std::invalid_argument(fmt::format("{}: epsilon must be finite and non-negative, got {}", op, epsilon));
}

// ---- batch_norm, group_norm, instance_norm ----

class GroupStatsNormLayer : public Layer {
 public:
  enum class Kind { batch, group, instance };
  GroupStatsNormLayer(Kind kind, int64_t groups, int64_t channel_index, double epsilon, double momentum,
                      Initializer gamma_init, Initializer beta_init)
      : kind_(kind), groups_(groups), channel_index_(channel_index), epsilon_(epsilon), momentum_(momentum),
        gamma_init_(std::move(gamma_init)), beta_init_(std::move(beta_init)) {
    check_epsilon(describe(), epsilon);
    if (!(momentum >= 0.0 && momentum <= 1.0))
      throw std::invalid_argument(fmt::format("{}: momentum must be in [0, 1], got {}", describe(), momentum));
    if (kind == Kind::group && groups < 1)
      throw std::invalid_argument(fmt::format("{}: num_groups must be positive", describe()));
    if (!gamma_init_ || !beta_init_) throw std::invalid_argument(fmt::format("{}: an initializer is empty", describe()));
  }
  std::string op() const override {
    return kind_ == Kind::batch ? "batch_norm" : kind_ == Kind::group ? "group_norm" : "instance_norm";
  }
  Shape output_shape(const std::vector<Shape>& inputs) const override {
    expect_inputs(inputs, 1, op());
    channels(inputs[0]);
    return inputs[0];
  }
  std::vector<ParamSpec> params(const std::vector<Shape>& inputs) const override {
    const int64_t c = channels(inputs.at(0));
    return {{"gamma", {c}, gamma_init_}, {"beta", {c}, beta_init_}};
  }
  std::vector<ParamSpec> state(const std::vector<Shape>& inputs) const override {
    if (kind_ != Kind::batch) return {};
    const int64_t c = channels(inputs.at(0));
    return {{"mean", {c}, initializers::zeros()}, {"var", {c}, initializers::ones()}};
  }
  Tensor forward(const std::vector<Tensor>& inputs, std::span<const Tensor> params,
                 const ForwardContext& ctx) const override {
    const Tensor& x = inputs.at(0);
    switch (kind_) {
      case Kind::batch: {
        const Tensor rm = ctx.state.size() == 2 ? ctx.state[0] : Tensor();
        const Tensor rv = ctx.state.size() == 2 ? ctx.state[1] : Tensor();
        return batch_norm(x, params[0], params[1], rm, rv, ctx.training, momentum_, epsilon_, channel_index_);
      }
      case Kind::group: return group_norm(x, params[0], params[1], groups_, channel_index_, epsilon_);
      case Kind::instance: return instance_norm(x, params[0], params[1], channel_index_, epsilon_);
    }
    return x;
  }

 private:
  std::string describe() const {
    switch (kind_) {
      case Kind::batch:
        return fmt::format("batch_norm (channel_index {}, epsilon {}, momentum {})", channel_index_, epsilon_, momentum_);
      case Kind::group:
        return fmt::format("group_norm (num_groups {}, channel_index {}, epsilon {})", groups_, channel_index_, epsilon_);
      case Kind::instance: return fmt::format("instance_norm (channel_index {}, epsilon {})", channel_index_, epsilon_);
    }
    return op();
  }
  int64_t channels(const Shape& in) const {
    const int64_t a = channel_axis(in, channel_index_, describe(), kind_ == Kind::instance ? 3 : 2);
    if (kind_ == Kind::group && in[a] % groups_ != 0)
      throw std::invalid_argument(fmt::format("{}: num_groups {} does not divide the {} channels of input shape {}",
                                              describe(), groups_, in[a], shape_str(in)));
    return in[a];
  }
  Kind kind_;
  int64_t groups_, channel_index_;
  double epsilon_, momentum_;
  Initializer gamma_init_, beta_init_;
};

// ---- shape layers ----

class ReshapeLayer : public Layer {
 public:
  explicit ReshapeLayer(Shape shape) : shape_(std::move(shape)) {
    int64_t batches = 0, autos = 0;
    for (int64_t d : shape_) {
      if (d == kBatch) ++batches;
      else if (d == kAuto) ++autos;
      else if (d <= 0) throw std::invalid_argument(fmt::format("reshape (shape {}): sizes must be positive, kBatch or kAuto", describe_shape()));
    }
    if (batches > 1 || autos > 1)
      throw std::invalid_argument(fmt::format("reshape (shape {}): at most one kBatch and one kAuto", describe_shape()));
  }
  std::string op() const override { return "reshape"; }
  Shape output_shape(const std::vector<Shape>& inputs) const override {
    expect_inputs(inputs, 1, "reshape");
    return resolve(inputs[0], inputs[0].empty() ? -1 : inputs[0][0]);
  }
  Tensor forward(const std::vector<Tensor>& inputs, std::span<const Tensor>, const ForwardContext&) const override {
    const Tensor& x = inputs.at(0);
    return x.reshape(resolve(x.shape(), x.dim() > 0 ? x.size(0) : 1));
  }

 private:
  std::string describe_shape() const {
    std::string s = "{";
    for (size_t i = 0; i < shape_.size(); ++i)
      s += (i ? ", " : "") + (shape_[i] == kBatch ? std::string("batch") : shape_[i] == kAuto ? std::string("auto") : std::to_string(shape_[i]));
    return s + "}";
  }
  // The new shape for input `in` whose batch size is `batch` (−1: unknown, at planning).
  Shape resolve(const Shape& in, int64_t batch) const {
    const bool has_batch = std::count(shape_.begin(), shape_.end(), kBatch) == 1;
    if (in.empty() || (!has_batch && batch < 0))
      throw std::invalid_argument(fmt::format("reshape (shape {}): the input {} has a batch axis of any size, so the new "
                                              "shape needs kBatch",
                                              describe_shape(), shape_str(in)));
    // Elements per sample on both sides (the batch axis cancels when both have it).
    int64_t in_count = 1;
    for (size_t i = has_batch ? 1 : 0; i < in.size(); ++i) in_count *= i == 0 ? batch : in[i];
    int64_t known = 1;
    for (int64_t d : shape_)
      if (d > 0) known *= d;
    Shape out;
    for (int64_t d : shape_) {
      if (d == kBatch) out.push_back(batch);
      else if (d == kAuto) {
        if (known == 0 || in_count % known != 0)
          throw std::invalid_argument(fmt::format("reshape (shape {}): cannot infer the auto size for input {}",
                                                  describe_shape(), shape_str(in)));
        out.push_back(in_count / known);
      } else out.push_back(d);
    }
    int64_t out_count = 1;
    for (size_t i = 0; i < out.size(); ++i)
      if (shape_[i] != kBatch) out_count *= out[i];
    if (out_count != in_count)
      throw std::invalid_argument(fmt::format("reshape (shape {}): input {} has {} elements per {}, the new shape {}",
                                              describe_shape(), shape_str(in), in_count, has_batch ? "sample" : "batch",
                                              out_count));
    return out;
  }
  Shape shape_;
};

class TransposeLayer : public Layer {
 public:
  explicit TransposeLayer(std::vector<int64_t> perm) : perm_(std::move(perm)) {}
  std::string op() const override { return "transpose"; }
  Shape output_shape(const std::vector<Shape>& inputs) const override {
    expect_inputs(inputs, 1, "transpose");
    const Shape& in = inputs[0];
    const int64_t rank = static_cast<int64_t>(in.size());
    std::vector<bool> seen(in.size(), false);
    Shape out;
    if (perm_.size() != in.size())
      throw std::invalid_argument(fmt::format("transpose (permutation {}): input {} has {} axes", shape_str(perm_),
                                              shape_str(in), in.size()));
    for (int64_t p : perm_) {
      const int64_t a = p < 0 ? p + rank : p;
      if (a < 0 || a >= rank || seen[static_cast<size_t>(a)])
        throw std::invalid_argument(fmt::format("transpose (permutation {}): not a permutation of the axes of input {}",
                                                shape_str(perm_), shape_str(in)));
      seen[static_cast<size_t>(a)] = true;
      out.push_back(in[static_cast<size_t>(a)]);
    }
    return out;
  }
  Tensor forward(const std::vector<Tensor>& inputs, std::span<const Tensor>, const ForwardContext&) const override {
    return permute(inputs.at(0), perm_);
  }

 private:
  std::vector<int64_t> perm_;
};

// The spatial axes of a rank-r input: 1..r-2 (channels last) or 2..r-1 (channels first).
std::pair<int64_t, int64_t> spatial_range(int64_t rank, Channels channels) {
  return channels == Channels::last ? std::pair<int64_t, int64_t>{1, rank - 1} : std::pair<int64_t, int64_t>{2, rank};
}

class PadLayer : public Layer {
 public:
  PadLayer(std::vector<std::pair<int64_t, int64_t>> config, double value, Channels channels)
      : config_(std::move(config)), value_(value), channels_(channels) {}
  std::string op() const override { return "pad"; }
  Shape output_shape(const std::vector<Shape>& inputs) const override {
    expect_inputs(inputs, 1, "pad");
    Shape out = inputs[0];
    const auto [begin, end] = spatial_range(static_cast<int64_t>(out.size()), channels_);
    if (end - begin != static_cast<int64_t>(config_.size()) || end - begin < 1)
      throw std::invalid_argument(fmt::format("{}: {} pairs for input {}, which has {} spatial axes", describe(),
                                              config_.size(), shape_str(out), std::max<int64_t>(0, end - begin)));
    for (int64_t d = begin; d < end; ++d) {
      const auto [lo, hi] = config_[static_cast<size_t>(d - begin)];
      if (out[d] < 0) throw std::invalid_argument(fmt::format("{}: spatial axis {} of input {} has no known size", describe(), d, shape_str(out)));
      out[d] += lo + hi;
      if (out[d] < 0) throw std::invalid_argument(fmt::format("{}: crops more than axis {} of input {}", describe(), d, shape_str(inputs[0])));
    }
    return out;
  }
  Tensor forward(const std::vector<Tensor>& inputs, std::span<const Tensor>, const ForwardContext&) const override {
    const Tensor& x = inputs.at(0);
    std::vector<std::pair<int64_t, int64_t>> full(static_cast<size_t>(x.dim()), {0, 0});
    const auto [begin, end] = spatial_range(x.dim(), channels_);
    for (int64_t d = begin; d < end; ++d) full[static_cast<size_t>(d)] = config_[static_cast<size_t>(d - begin)];
    return axon::pad(x, full, value_);
  }

 private:
  std::string describe() const {
    std::string c;
    for (const auto& [lo, hi] : config_) c += fmt::format("{}{{{}, {}}}", c.empty() ? "" : ", ", lo, hi);
    return fmt::format("pad (config [{}], value {}, channels {})", c, value_, channels_ == Channels::last ? "last" : "first");
  }
  std::vector<std::pair<int64_t, int64_t>> config_;
  double value_;
  Channels channels_;
};

class ResizeLayer : public Layer {
 public:
  ResizeLayer(int64_t h, int64_t w, ResizeMethod method, Channels channels, bool antialias)
      : h_(h), w_(w), method_(method), channels_(channels), antialias_(antialias) {
    if (h <= 0 || w <= 0) throw std::invalid_argument(fmt::format("{}: the size must be positive", describe()));
  }
  std::string op() const override { return "resize"; }
  Shape output_shape(const std::vector<Shape>& inputs) const override {
    expect_inputs(inputs, 1, "resize");
    Shape out = inputs[0];
    if (out.size() != 4)
      throw std::invalid_argument(fmt::format("{}: needs a 4-d input (batch, two spatial axes, channels), got {}", describe(), shape_str(out)));
    const int64_t first = channels_ == Channels::last ? 1 : 2;
    out[first] = h_;
    out[first + 1] = w_;
    return out;
  }
  Tensor forward(const std::vector<Tensor>& inputs, std::span<const Tensor>, const ForwardContext&) const override {
    return axon::resize(inputs.at(0), h_, w_, method_, channels_ == Channels::last, antialias_);
  }

 private:
  std::string describe() const {
    return fmt::format("resize (size {{{}, {}}}, method {}, channels {}, antialias {})", h_, w_,
                       resize_method_name(method_), channels_ == Channels::last ? "last" : "first", antialias_);
  }
  int64_t h_, w_;
  ResizeMethod method_;
  Channels channels_;
  bool antialias_;
};

// ---- combinators ----

std::string shapes_str(const std::vector<Shape>& shapes) {
  std::string s;
  for (const Shape& sh : shapes) s += (s.empty() ? "" : " and ") + shape_str(sh);
  return s;
}

class ElementwiseLayer : public Layer {
 public:
  enum class Kind { add, subtract, multiply };
  explicit ElementwiseLayer(Kind kind) : kind_(kind) {}
  std::string op() const override { return kind_ == Kind::add ? "add" : kind_ == Kind::subtract ? "subtract" : "multiply"; }
  Shape output_shape(const std::vector<Shape>& inputs) const override {
    if (inputs.size() < 2) throw std::invalid_argument(fmt::format("{} takes 2 or more inputs, got {}", op(), inputs.size()));
    Shape out = inputs[0];
    for (size_t k = 1; k < inputs.size(); ++k) {
      const Shape& b = inputs[k];
      Shape merged(std::max(out.size(), b.size()));
      for (size_t i = 0; i < merged.size(); ++i) {
        const int64_t x = i < merged.size() - out.size() ? 1 : out[i - (merged.size() - out.size())];
        const int64_t y = i < merged.size() - b.size() ? 1 : b[i - (merged.size() - b.size())];
        if (x == y || y == 1) merged[i] = x;
        else if (x == 1) merged[i] = y;
        else if (x == -1 || y == -1) merged[i] = -1;  // the batch: any size matches
        else
          throw std::invalid_argument(fmt::format("{}: input shapes {} cannot be merged (axis {}: {} vs {})", op(),
                                                  shapes_str(inputs), i, x, y));
      }
      out = merged;
    }
    return out;
  }
  Tensor forward(const std::vector<Tensor>& inputs, std::span<const Tensor>, const ForwardContext&) const override {
    Tensor out = inputs.at(0);
    for (size_t k = 1; k < inputs.size(); ++k) {
      switch (kind_) {
        case Kind::add: out = axon::add(out, inputs[k]); break;
        case Kind::subtract: out = sub(out, inputs[k]); break;
        case Kind::multiply: out = mul(out, inputs[k]); break;
      }
    }
    return out;
  }

 private:
  Kind kind_;
};

class ConcatenateLayer : public Layer {
 public:
  explicit ConcatenateLayer(int64_t axis) : axis_(axis) {}
  std::string op() const override { return "concatenate"; }
  Shape output_shape(const std::vector<Shape>& inputs) const override {
    if (inputs.empty()) throw std::invalid_argument("concatenate takes 1 or more inputs, got 0");
    const Shape& first = inputs[0];
    const int64_t rank = static_cast<int64_t>(first.size());
    const int64_t a = axis_ < 0 ? axis_ + rank : axis_;
    if (a <= 0 || a >= rank)
      throw std::invalid_argument(fmt::format("concatenate (axis {}): axis out of range or the batch axis for input shapes {}",
                                              axis_, shapes_str(inputs)));
    Shape out = first;
    out[a] = 0;
    for (const Shape& s : inputs) {
      bool fits = s.size() == first.size();
      for (int64_t d = 0; fits && d < rank; ++d) fits = d == a || s[d] == first[d];
      if (!fits || s[a] < 0)
        throw std::invalid_argument(fmt::format("concatenate (axis {}): input shapes {} cannot be merged (they must agree "
                                                "outside axis {} and have a known size on it)",
                                                axis_, shapes_str(inputs), axis_));
      out[a] += s[a];
    }
    return out;
  }
  Tensor forward(const std::vector<Tensor>& inputs, std::span<const Tensor>, const ForwardContext&) const override {
    return axon::concatenate(inputs, axis_);
  }

 private:
  int64_t axis_;
};

class SplitLayer : public Layer {
 public:
  // parts > 0: equal parts; else `sizes`.
  SplitLayer(int64_t parts, std::vector<int64_t> sizes, int64_t index, int64_t axis)
      : parts_(parts), sizes_(std::move(sizes)), index_(index), axis_(axis) {}
  std::string op() const override { return "split"; }
  Shape output_shape(const std::vector<Shape>& inputs) const override {
    expect_inputs(inputs, 1, "split");
    const Shape& in = inputs[0];
    const auto [a, offset, size] = locate(in);
    (void)offset;
    Shape out = in;
    out[a] = size;
    return out;
  }
  Tensor forward(const std::vector<Tensor>& inputs, std::span<const Tensor>, const ForwardContext&) const override {
    const Tensor& x = inputs.at(0);
    const auto [a, offset, size] = locate(x.shape());
    return slice(x, a, offset, size);
  }

 private:
  std::string describe() const {
    return parts_ > 0 ? fmt::format("split ({} parts, axis {})", parts_, axis_)
                      : fmt::format("split (sizes {}, axis {})", shape_str(sizes_), axis_);
  }
  std::tuple<int64_t, int64_t, int64_t> locate(const Shape& in) const {
    const int64_t rank = static_cast<int64_t>(in.size());
    const int64_t a = axis_ < 0 ? axis_ + rank : axis_;
    if (a <= 0 || a >= rank || in[a] < 0)
      throw std::invalid_argument(fmt::format("{}: axis out of range, the batch axis, or of unknown size for input {}",
                                              describe(), shape_str(in)));
    if (parts_ > 0) {
      if (in[a] % parts_ != 0)
        throw std::invalid_argument(fmt::format("{}: {} parts do not divide axis size {} of input {}", describe(), parts_,
                                                in[a], shape_str(in)));
      const int64_t size = in[a] / parts_;
      return {a, index_ * size, size};
    }
    int64_t total = 0, offset = 0;
    for (size_t i = 0; i < sizes_.size(); ++i) {
      if (static_cast<int64_t>(i) == index_) offset = total;
      total += sizes_[i];
    }
    if (total != in[a])
      throw std::invalid_argument(fmt::format("{}: sizes sum to {}, but axis {} of input {} has {}", describe(), total, axis_,
                                              shape_str(in), in[a]));
    return {a, offset, sizes_[static_cast<size_t>(index_)]};
  }
  int64_t parts_;
  std::vector<int64_t> sizes_;
  int64_t index_, axis_;
};

class ConstantLayer : public Layer {
 public:
  explicit ConstantLayer(Tensor value) : value_(std::move(value)) {
    if (!value_.defined() || !is_floating(value_.dtype()))
      throw std::invalid_argument("constant: needs a defined floating tensor");
    value_ = value_.detach();
  }
  std::string op() const override { return "constant"; }
  Shape output_shape(const std::vector<Shape>& inputs) const override {
    expect_inputs(inputs, 0, "constant");
    return value_.shape();
  }
  Tensor forward(const std::vector<Tensor>&, std::span<const Tensor>, const ForwardContext& ctx) const override {
    const DType dtype = is_floating(ctx.options.dtype) ? ctx.options.dtype : value_.dtype();
    return value_.to(dtype).to(ctx.options.device);
  }

 private:
  Tensor value_;
};

class CondLayer : public Layer {
 public:
  explicit CondLayer(std::function<bool(const Tensor&)> predicate) : predicate_(std::move(predicate)) {
    if (!predicate_) throw std::invalid_argument("cond: the predicate is empty");
  }
  std::string op() const override { return "cond"; }
  Shape output_shape(const std::vector<Shape>& inputs) const override {
    expect_inputs(inputs, 3, "cond");
    if (inputs[1] != inputs[2])
      throw std::invalid_argument(fmt::format("cond: the true and false branches have shapes {} and {}; they must agree",
                                              shape_str(inputs[1]), shape_str(inputs[2])));
    return inputs[1];
  }
  Tensor forward(const std::vector<Tensor>& inputs, std::span<const Tensor>, const ForwardContext&) const override {
    return predicate_(inputs.at(0)) ? inputs.at(1) : inputs.at(2);
  }

 private:
  std::function<bool(const Tensor&)> predicate_;
};

class CustomLayer : public Layer {
 public:
  CustomLayer(LayerFunction fn, CustomLayerOptions options) : fn_(std::move(fn)), options_(std::move(options)) {
    if (!fn_) throw std::invalid_argument(fmt::format("{}: the function is empty", options_.op_name));
    if (options_.op_name.empty()) throw std::invalid_argument("layer: op_name is empty");
    for (const ParamSpec& p : options_.params)
      if (p.name.empty() || !p.init)
        throw std::invalid_argument(fmt::format("{}: parameter '{}' needs a name and an initializer", options_.op_name, p.name));
  }
  std::string op() const override { return options_.op_name; }
  Shape output_shape(const std::vector<Shape>& inputs) const override {
    if (options_.output_shape) return options_.output_shape(inputs);
    // Trace on zeros, batch size 2.
    NoGradGuard no_grad;
    std::vector<Tensor> xs;
    bool any_batch = false;
    for (const Shape& s : inputs) {
      Shape concrete = s;
      for (size_t i = 0; i < concrete.size(); ++i)
        if (concrete[i] < 0) {
          concrete[i] = 2;
          any_batch = any_batch || i == 0;
        }
      xs.push_back(Tensor::zeros(concrete));
    }
    std::vector<Tensor> ps;
    for (const ParamSpec& p : options_.params) ps.push_back(Tensor::zeros(p.shape));
    Tensor y;
    try {
      y = fn_(xs, ps);
    } catch (const std::exception& e) {
      throw std::invalid_argument(fmt::format("{}: tracing the output shape on input shapes {} failed: {}", options_.op_name,
                                              shapes_str(inputs), e.what()));
    }
    Shape out = y.shape();
    if (any_batch && !out.empty() && out[0] == 2) out[0] = -1;
    return out;
  }
  std::vector<ParamSpec> params(const std::vector<Shape>&) const override { return options_.params; }
  Tensor forward(const std::vector<Tensor>& inputs, std::span<const Tensor> params, const ForwardContext& ctx) const override {
    using Mode = CustomLayerOptions::Mode;
    if ((options_.mode == Mode::train && !ctx.training) || (options_.mode == Mode::inference && ctx.training))
      return inputs.at(0);
    return fn_(inputs, params);
  }

 private:
  LayerFunction fn_;
  CustomLayerOptions options_;
};

LayerStep single(std::shared_ptr<const Layer> layer) {
  return {[layer](const Model& m) { return Model::apply(layer, {m}); }};
}

Model merge(ElementwiseLayer::Kind kind, const std::vector<Model>& xs) {
  return Model::apply(std::make_shared<ElementwiseLayer>(kind), xs);
}

}  // namespace

LayerStep batch_norm(BatchNormOptions o) {
  return single(std::make_shared<GroupStatsNormLayer>(GroupStatsNormLayer::Kind::batch, 1, o.channel_index, o.epsilon,
                                                      o.momentum, o.gamma_initializer, o.beta_initializer));
}
LayerStep group_norm(int64_t num_groups, GroupNormOptions o) {
  return single(std::make_shared<GroupStatsNormLayer>(GroupStatsNormLayer::Kind::group, num_groups, o.channel_index,
                                                      o.epsilon, 0.0, o.gamma_initializer, o.beta_initializer));
}
LayerStep instance_norm(InstanceNormOptions o) {
  return single(std::make_shared<GroupStatsNormLayer>(GroupStatsNormLayer::Kind::instance, 1, o.channel_index, o.epsilon,
                                                      0.0, o.gamma_initializer, o.beta_initializer));
}

LayerStep reshape(Shape shape) { return single(std::make_shared<ReshapeLayer>(std::move(shape))); }
LayerStep transpose(std::vector<int64_t> permutation) { return single(std::make_shared<TransposeLayer>(std::move(permutation))); }
LayerStep pad(std::vector<std::pair<int64_t, int64_t>> config, double value, Channels channels) {
  return single(std::make_shared<PadLayer>(std::move(config), value, channels));
}
LayerStep resize(int64_t height, int64_t width, ResizeMethod method, Channels channels, bool antialias) {
  return single(std::make_shared<ResizeLayer>(height, width, method, channels, antialias));
}

Model add(const Model& a, const Model& b) { return merge(ElementwiseLayer::Kind::add, {a, b}); }
Model add(const std::vector<Model>& xs) { return merge(ElementwiseLayer::Kind::add, xs); }
Model subtract(const Model& a, const Model& b) { return merge(ElementwiseLayer::Kind::subtract, {a, b}); }
Model subtract(const std::vector<Model>& xs) { return merge(ElementwiseLayer::Kind::subtract, xs); }
Model multiply(const Model& a, const Model& b) { return merge(ElementwiseLayer::Kind::multiply, {a, b}); }
Model multiply(const std::vector<Model>& xs) { return merge(ElementwiseLayer::Kind::multiply, xs); }
Model concatenate(const Model& a, const Model& b, int64_t axis) { return concatenate(std::vector<Model>{a, b}, axis); }
Model concatenate(const std::vector<Model>& xs, int64_t axis) {
  return Model::apply(std::make_shared<ConcatenateLayer>(axis), xs);
}

std::vector<Model> split(const Model& x, int64_t n, int64_t axis) {
  if (n < 1) throw std::invalid_argument(fmt::format("split ({} parts, axis {}): the number of parts must be positive", n, axis));
  std::vector<Model> out;
  for (int64_t i = 0; i < n; ++i) out.push_back(Model::apply(std::make_shared<SplitLayer>(n, std::vector<int64_t>{}, i, axis), {x}));
  return out;
}
std::vector<Model> split(const Model& x, std::vector<int64_t> sizes, int64_t axis) {
  if (sizes.empty()) throw std::invalid_argument(fmt::format("split (axis {}): no sizes given", axis));
  for (int64_t s : sizes)
    if (s < 0) throw std::invalid_argument(fmt::format("split (sizes {}, axis {}): sizes must be non-negative", shape_str(sizes), axis));
  std::vector<Model> out;
  for (size_t i = 0; i < sizes.size(); ++i)
    out.push_back(Model::apply(std::make_shared<SplitLayer>(0, sizes, static_cast<int64_t>(i), axis), {x}));
  return out;
}

Model constant(const Tensor& value) { return Model::apply(std::make_shared<ConstantLayer>(value), {}); }

Model cond(const Model& parent, std::function<bool(const Tensor&)> predicate, const Model& on_true, const Model& on_false) {
  return Model::apply(std::make_shared<CondLayer>(std::move(predicate)), {parent, on_true, on_false});
}

Model layer(LayerFunction function, const std::vector<Model>& inputs, CustomLayerOptions options) {
  return Model::apply(std::make_shared<CustomLayer>(std::move(function), std::move(options)), inputs);
}

LayerStep nx(std::function<Tensor(const Tensor&)> function, std::string op_name) {
  if (!function) throw std::invalid_argument(fmt::format("{}: the function is empty", op_name));
  CustomLayerOptions options;
  options.op_name = std::move(op_name);
  auto l = std::make_shared<CustomLayer>(
      [function](const std::vector<Tensor>& xs, std::span<const Tensor>) { return function(xs.at(0)); }, options);
  return single(l);
}

}  // namespace axon
