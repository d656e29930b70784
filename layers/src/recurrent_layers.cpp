// The recurrent layers and their builders (axon/recurrent_layers.h).
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <stdexcept>

#include "axon/autograd.h"
#include "axon/recurrent_layers.h"

namespace axon {

namespace {

enum class RnnKind { lstm, gru, conv_lstm };

const char* kind_name(RnnKind k) { return k == RnnKind::lstm ? "lstm" : k == RnnKind::gru ? "gru" : "conv_lstm"; }
int64_t gate_count(RnnKind k) { return k == RnnKind::gru ? 3 : 4; }
size_t state_count(RnnKind k) { return k == RnnKind::gru ? 1 : 2; }

bool elementwise(Activation a) {
  return a.kind != Activation::Kind::softmax && a.kind != Activation::Kind::log_softmax &&
         a.kind != Activation::Kind::log_sumexp;
}

// Draws each of the `blocks` gate blocks of the last axis separately, so fan-based initializers
// see one gate's fans (the seed's separate wii, wif, ... parameters).
Initializer per_gate(Initializer init, int64_t blocks) {
  return [init, blocks](const Shape& shape, Generator& gen) {
    Shape one = shape;
    one.back() /= blocks;
    std::vector<Tensor> parts;
    for (int64_t k = 0; k < blocks; ++k) parts.push_back(init(one, gen));
    return concatenate(parts, -1);
  };
}

class RecurrentLayer : public Layer {
 public:
  RecurrentLayer(RnnKind kind, int64_t units, const RecurrentOptions& o, const ConvLstmOptions& conv, bool has_state,
                 bool has_mask)
      : kind_(kind), units_(units), o_(o), conv_(conv), has_state_(has_state), has_mask_(has_mask) {
    o_.mask = Model();
    conv_.mask = Model();
    if (kind == RnnKind::conv_lstm) {
      o_.unroll = conv.unroll, o_.use_bias = conv.use_bias, o_.kernel_initializer = conv.kernel_initializer;
      o_.bias_initializer = conv.bias_initializer, o_.recurrent_initializer = conv.recurrent_initializer;
      o_.seed = conv.seed;
    }
    if (units <= 0) throw std::invalid_argument(fmt::format("{}: units must be positive, got {}", describe(), units));
    if (!elementwise(o_.activation) || !elementwise(o_.gate))
      throw std::invalid_argument(fmt::format("{}: activation and gate must be element-wise functions", describe()));
    if (!o_.kernel_initializer || (o_.use_bias && !o_.bias_initializer) || (!has_state && !o_.recurrent_initializer))
      throw std::invalid_argument(fmt::format("{}: an initializer is empty", describe()));
    if (kind == RnnKind::conv_lstm) {
      if (conv.kernel_size.empty()) throw std::invalid_argument(fmt::format("{}: kernel_size is empty", describe()));
      for (int64_t k : conv.kernel_size)
        if (k < 1) throw std::invalid_argument(fmt::format("{}: kernel_size must be positive", describe()));
      for (int64_t s : conv.strides)
        if (s < 1) throw std::invalid_argument(fmt::format("{}: strides must be positive", describe()));
    }
  }

  std::string op() const override { return kind_name(kind_); }

  std::string describe() const {
    if (kind_ == RnnKind::conv_lstm)
      return fmt::format("conv_lstm ({} units, kernel_size [{}], strides [{}], padding {}, unroll {})", units_,
                         fmt::join(conv_.kernel_size, ", "), fmt::join(conv_.strides, ", "),
                         padding_str(conv_.padding),
                         o_.unroll == Unroll::dynamic ? "dynamic" : "static");
    return fmt::format("{} ({} units, activation {}, gate {}, unroll {})", op(), units_, activation_name(o_.activation),
                       activation_name(o_.gate), o_.unroll == Unroll::dynamic ? "dynamic" : "static");
  }

  // {sequence, state...} for these inputs; throws naming the layer, its options and the shapes.
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override {
    const size_t expected = 1 + (has_state_ ? state_count(kind_) : 0) + (has_mask_ ? 1 : 0);
    if (inputs.size() != expected)
      throw std::invalid_argument(fmt::format("{}: takes {} inputs, got {}", describe(), expected, inputs.size()));
    const Shape& x = inputs[0];
    std::vector<Shape> out;
    Shape state;
    if (kind_ == RnnKind::conv_lstm) {
      if (x.size() < 4 || x.size() > 6 || x[2] <= 0)
        throw std::invalid_argument(fmt::format("{}: input of shape {} must be {{batch, time, channels, 1 to 3 spatial "
                                                "dims}} with a known channel count",
                                                describe(), shape_str(x)));
      Shape step(x);
      step.erase(step.begin() + 1);
      const ConvOptions co = conv_options();
      Shape gates;
      try {
        gates = conv_output_shape(step, kernel_shape(x, false), co);
        Shape hidden = gates;
        hidden[1] = units_;
        const Shape hidden_gates = conv_output_shape(hidden, kernel_shape(x, true), co);
        if (hidden_gates != gates)
          throw std::invalid_argument(fmt::format("the hidden convolution maps the state {} to {}, not {}: strides and "
                                                  "padding must keep the spatial shape",
                                                  shape_str(hidden), shape_str(hidden_gates), shape_str(gates)));
      } catch (const std::invalid_argument& e) {
        throw std::invalid_argument(fmt::format("{}: input of shape {}: {}", describe(), shape_str(x), e.what()));
      }
      Shape seq = gates;
      seq[1] = units_;
      state = seq;
      state.insert(state.begin() + 1, 1);
      seq.insert(seq.begin() + 1, x[1]);
      out.push_back(seq);
    } else {
      if (x.size() != 3 || x[2] <= 0)
        throw std::invalid_argument(fmt::format("{}: input of shape {} must be {{batch, time, features}} with a known "
                                                "feature size",
                                                describe(), shape_str(x)));
      out.push_back({x[0], x[1], units_});
      state = {x[0], units_};
    }
    for (size_t k = 0; k < state_count(kind_); ++k) out.push_back(state);
    auto fits = [](const Shape& want, const Shape& got) {
      if (want.size() != got.size()) return false;
      for (size_t d = 0; d < want.size(); ++d)
        if (want[d] != got[d] && want[d] != -1 && got[d] != -1) return false;
      return true;
    };
    if (has_state_)
      for (size_t k = 0; k < state_count(kind_); ++k)
        if (!fits(state, inputs[1 + k]))
          throw std::invalid_argument(fmt::format("{}: initial state {} of shape {} does not fit input {} (expected {})",
                                                  describe(), state_names()[k], shape_str(inputs[1 + k]), shape_str(x),
                                                  shape_str(state)));
    if (has_mask_ && !fits({x[0], x[1]}, inputs.back()))
      throw std::invalid_argument(fmt::format("{}: mask of shape {} does not fit input {} (expected {{batch, time}})",
                                              describe(), shape_str(inputs.back()), shape_str(x)));
    return out;
  }

  // The outputs packed along axis 1: the sequence's time steps, then each state (with a time
  // axis of 1): {B, T + states, U, ...}.
  Shape output_shape(const std::vector<Shape>& inputs) const override {
    Shape packed = output_shapes(inputs)[0];
    if (packed[1] >= 0) packed[1] += static_cast<int64_t>(state_count(kind_));
    return packed;
  }

  std::vector<ParamSpec> params(const std::vector<Shape>& inputs) const override {
    const Shape& x = inputs.at(0);
    const int64_t G = gate_count(kind_);
    std::vector<ParamSpec> specs;
    if (kind_ == RnnKind::conv_lstm) {
      specs.push_back({"input_kernel", kernel_shape(x, false), per_gate(o_.kernel_initializer, G)});
      specs.push_back({"hidden_kernel", kernel_shape(x, true), per_gate(o_.kernel_initializer, G)});
    } else {
      specs.push_back({"input_kernel", {x[2], G * units_}, per_gate(o_.kernel_initializer, G)});
      specs.push_back({"hidden_kernel", {units_, G * units_}, per_gate(o_.kernel_initializer, G)});
    }
    if (o_.use_bias) specs.push_back({"bias", {4 * units_}, o_.bias_initializer});
    return specs;
  }

  Tensor forward(const std::vector<Tensor>& inputs, std::span<const Tensor> params, const ForwardContext&) const override {
    const Tensor& x = inputs.at(0);
    std::vector<Shape> shapes;
    for (const Tensor& t : inputs) shapes.push_back(t.shape());
    const std::vector<Shape> outs = output_shapes(shapes);
    std::vector<Tensor> state;
    if (has_state_) {
      for (size_t k = 0; k < state_count(kind_); ++k) state.push_back(inputs[1 + k]);
    } else {
      Generator gen(o_.seed);
      for (size_t k = 0; k < state_count(kind_); ++k) {
        Tensor s = o_.recurrent_initializer(outs[1 + k], gen);
        if (s.shape() != outs[1 + k])
          throw std::invalid_argument(fmt::format("{}: recurrent_initializer returned shape {}, expected {}", describe(),
                                                  shape_str(s.shape()), shape_str(outs[1 + k])));
        state.push_back(s.to(x.dtype()).to(x.device()));
      }
    }
    const Tensor mask = has_mask_ ? inputs.back().to(x.dtype()) : Tensor();
    const Tensor bias = o_.use_bias ? params[2] : Tensor();
    UnrollResult r;
    switch (kind_) {
      case RnnKind::lstm:
        r = lstm(x, state, mask, params[0], params[1], bias, o_.unroll, o_.gate, o_.activation);
        break;
      case RnnKind::gru:
        r = gru(x, state, mask, params[0], params[1], bias, o_.unroll, o_.gate, o_.activation);
        break;
      case RnnKind::conv_lstm:
        r = conv_lstm(x, state, mask, params[0], params[1], bias, conv_options(), o_.unroll);
        break;
    }
    std::vector<Tensor> parts{r.sequence};
    for (const Tensor& s : r.state) {
      Shape shape = s.shape();
      if (kind_ != RnnKind::conv_lstm) shape.insert(shape.begin() + 1, 1);
      parts.push_back(s.reshape(shape));
    }
    return concatenate(parts, 1);
  }

  RnnKind kind() const { return kind_; }

 private:
  std::vector<std::string> state_names() const {
    return kind_ == RnnKind::gru ? std::vector<std::string>{"h"} : std::vector<std::string>{"c", "h"};
  }
  ConvOptions conv_options() const {
    ConvOptions co;
    co.strides = conv_.strides;
    co.padding = conv_.padding;
    co.channels = ChannelsLayout::first;
    return co;
  }
  // conv_lstm's kernels {k..., in, 4U} for input {B, T, C, spatial...}.
  Shape kernel_shape(const Shape& x, bool hidden) const {
    const size_t dims = x.size() - 3;
    Shape k;
    if (conv_.kernel_size.size() == 1)
      k.assign(dims, conv_.kernel_size[0]);
    else if (conv_.kernel_size.size() == dims)
      k = conv_.kernel_size;
    else
      throw std::invalid_argument(fmt::format("{}: kernel_size has {} values but input of shape {} has {} spatial dims",
                                              describe(), conv_.kernel_size.size(), shape_str(x), dims));
    k.push_back(hidden ? units_ : x[2]);
    k.push_back(4 * units_);
    return k;
  }

  RnnKind kind_;
  int64_t units_;
  RecurrentOptions o_;
  ConvLstmOptions conv_;
  bool has_state_, has_mask_;
};

// One output of a RecurrentLayer: part 0 the sequence, part k the k-th state.
class RecurrentPartLayer : public Layer {
 public:
  RecurrentPartLayer(RnnKind kind, size_t part) : kind_(kind), part_(part) {}
  std::string op() const override {
    const std::string base = kind_name(kind_);
    if (part_ == 0) return base + "_sequence";
    return base + (kind_ == RnnKind::gru || part_ == 2 ? "_h" : "_c");
  }
  Shape output_shape(const std::vector<Shape>& inputs) const override {
    if (inputs.size() != 1) throw std::invalid_argument(fmt::format("{} takes 1 input", op()));
    Shape s = inputs[0];
    const int64_t states = static_cast<int64_t>(state_count(kind_));
    if (part_ == 0) {
      if (s[1] >= 0) s[1] -= states;
    } else if (kind_ == RnnKind::conv_lstm) {
      s[1] = 1;
    } else {
      s.erase(s.begin() + 1);
    }
    return s;
  }
  Tensor forward(const std::vector<Tensor>& inputs, std::span<const Tensor>, const ForwardContext&) const override {
    const Tensor& packed = inputs.at(0);
    const int64_t states = static_cast<int64_t>(state_count(kind_));
    const int64_t steps = packed.size(1) - states;
    if (part_ == 0) return slice(packed, 1, 0, steps);
    Tensor s = slice(packed, 1, steps + static_cast<int64_t>(part_) - 1, 1);
    return kind_ == RnnKind::conv_lstm ? s : s.reshape(output_shape({packed.shape()}));
  }

 private:
  RnnKind kind_;
  size_t part_;
};

class ReverseLayer : public Layer {
 public:
  explicit ReverseLayer(int64_t axis) : axis_(axis) {}
  std::string op() const override { return "reverse"; }
  Shape output_shape(const std::vector<Shape>& inputs) const override {
    if (inputs.size() != 1) throw std::invalid_argument("reverse takes 1 input");
    const int64_t rank = static_cast<int64_t>(inputs[0].size());
    const int64_t a = axis_ < 0 ? axis_ + rank : axis_;
    if (a <= 0 || a >= rank)
      throw std::invalid_argument(fmt::format("reverse (axis {}): the axis must be inside input shape {} and not the batch axis",
                                              axis_, shape_str(inputs[0])));
    return inputs[0];
  }
  Tensor forward(const std::vector<Tensor>& inputs, std::span<const Tensor>, const ForwardContext&) const override {
    return reverse(inputs.at(0), axis_);
  }

 private:
  int64_t axis_;
};

class MaskLayer : public Layer {
 public:
  explicit MaskLayer(int64_t eos) : eos_(eos) {}
  std::string op() const override { return "mask"; }
  Shape output_shape(const std::vector<Shape>& inputs) const override {
    if (inputs.size() != 1) throw std::invalid_argument(fmt::format("mask (eos_token {}) takes 1 input", eos_));
    return inputs[0];
  }
  Tensor forward(const std::vector<Tensor>& inputs, std::span<const Tensor>, const ForwardContext&) const override {
    const Tensor& x = inputs.at(0);
    std::vector<float> m;
    for (double v : x.to_double_vector()) m.push_back(static_cast<int64_t>(v) == eos_ ? 1.0f : 0.0f);
    return Tensor::from_vector(x.shape(), m).to(x.device());
  }

 private:
  int64_t eos_;
};

RecurrentOutput build(RnnKind kind, const Model& x, const std::vector<Model>& state, bool has_state, int64_t units,
                      const RecurrentOptions& o, const ConvLstmOptions& co) {
  const Model& mask_model = kind == RnnKind::conv_lstm ? co.mask : o.mask;
  auto layer = std::make_shared<RecurrentLayer>(kind, units, o, co, has_state, mask_model.defined());
  if (has_state && state.size() != state_count(kind))
    throw std::invalid_argument(fmt::format("{}: {} initial state models given, expected {}", layer->describe(),
                                            state.size(), kind == RnnKind::gru ? "1 {h}" : "2 {c, h}"));
  std::vector<Model> inputs{x};
  if (has_state) inputs.insert(inputs.end(), state.begin(), state.end());
  if (mask_model.defined()) inputs.push_back(mask_model);
  const Model packed = Model::apply(layer, inputs);
  RecurrentOutput out;
  out.sequence = Model::apply(std::make_shared<RecurrentPartLayer>(kind, 0), {packed});
  for (size_t k = 1; k <= state_count(kind); ++k)
    out.state.push_back(Model::apply(std::make_shared<RecurrentPartLayer>(kind, k), {packed}));
  return out;
}

}  // namespace

RecurrentOutput lstm(const Model& x, int64_t units, RecurrentOptions options) {
  return build(RnnKind::lstm, x, {}, false, units, options, {});
}
RecurrentOutput lstm(const Model& x, const std::vector<Model>& state, int64_t units, RecurrentOptions options) {
  return build(RnnKind::lstm, x, state, true, units, options, {});
}
RecurrentOutput gru(const Model& x, int64_t units, RecurrentOptions options) {
  return build(RnnKind::gru, x, {}, false, units, options, {});
}
RecurrentOutput gru(const Model& x, const std::vector<Model>& state, int64_t units, RecurrentOptions options) {
  return build(RnnKind::gru, x, state, true, units, options, {});
}
RecurrentOutput conv_lstm(const Model& x, int64_t units, ConvLstmOptions options) {
  return build(RnnKind::conv_lstm, x, {}, false, units, {}, options);
}
RecurrentOutput conv_lstm(const Model& x, const std::vector<Model>& state, int64_t units, ConvLstmOptions options) {
  return build(RnnKind::conv_lstm, x, state, true, units, {}, options);
}

LayerStep lstm(int64_t units, RecurrentOptions options) {
  // Built once here so bad options fail when the step is made, as the other builders.
  RecurrentLayer check(RnnKind::lstm, units, options, {}, false, options.mask.defined());
  return {[units, options](const Model& m) { return lstm(m, units, options).sequence; }};
}
LayerStep gru(int64_t units, RecurrentOptions options) {
  RecurrentLayer check(RnnKind::gru, units, options, {}, false, options.mask.defined());
  return {[units, options](const Model& m) { return gru(m, units, options).sequence; }};
}

Model mask(const Model& x, int64_t eos_token) { return Model::apply(std::make_shared<MaskLayer>(eos_token), {x}); }

Model reverse(const Model& x, int64_t axis) { return Model::apply(std::make_shared<ReverseLayer>(axis), {x}); }

Model bidirectional(const Model& x, const std::function<Model(const Model&)>& forward_fun,
                    const std::function<Model(const Model&, const Model&)>& merge_fun, int64_t axis) {
  if (!forward_fun || !merge_fun) throw std::invalid_argument("bidirectional: forward_fun and merge_fun must be set");
  const Model forward = forward_fun(x);
  const Model backward = reverse(forward_fun(reverse(x, axis)), axis);
  return merge_fun(forward, backward);
}

}  // namespace axon
