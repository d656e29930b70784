// Recurrent layers (axon/recurrent_layers.h): lstm, gru, conv_lstm and bidirectional against
// tests/fixtures/rnn.json (make_rnn_fixtures.py: torch.nn.LSTM/GRU, LSTMCell/GRUCell with the
// seed's mask rule, conv_lstm's formula, torch's bidirectional LSTM) in f64 and f32 with both
// unrolls (the dynamic one is the fused CPU operator), f64 gradients against central finite
// differences, the multi-output model API and summary, and errors at model build time.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "../support/compare.h"
#include "../support/gradcheck.h"
#include "axon/autograd.h"
#include "axon/model.h"
#include "axon/ops.h"
#include "axon/random.h"
#include "axon/recurrent_layers.h"

namespace axon {
namespace {

using nlohmann::json;
using ::testing::AllOf;
using ::testing::HasSubstr;
using axon::testing::devices;
using axon::testing::error_of;
using axon::testing::expect_close;
using axon::testing::load_fixture;
using axon::testing::expect_f64_gradients_match;

json load_cases() { return load_fixture("rnn.json")["cases"]; }

std::vector<double> vec(const json& j) { return j.get<std::vector<double>>(); }

json find_case(const std::string& name) {
  for (const json& c : load_cases())
    if (c["name"] == name) return c;
  ADD_FAILURE() << "tests/fixtures/rnn.json has no case " << name << ": regenerate with make_rnn_fixtures.py";
  return json::object();
}

Tensor from(const json& shape, const json& values, TensorOptions o, bool grad = true) {
  Tensor t = Tensor::from_vector(shape.get<Shape>(), values.get<std::vector<double>>(), o);
  if (grad) t.set_requires_grad();
  return t;
}

// A case's inputs: x, input_kernel, hidden_kernel, bias, then the initial state.
struct CaseInputs {
  std::vector<Tensor> all;
  Tensor mask;
};

CaseInputs inputs_of(const json& c, TensorOptions o) {
  CaseInputs in;
  in.all.push_back(from(c["x_shape"], c["x"], o));
  for (const char* k : {"input_kernel", "hidden_kernel", "bias"})
    in.all.push_back(from(c["params"][k]["shape"], c["params"][k]["values"], o));
  for (const json& s : c["state"]) in.all.push_back(from(s["shape"], s["values"], o));
  if (!c["mask"].is_null()) in.mask = from(json{c["x_shape"][0], c["x_shape"][1]}, c["mask"], o, false);
  return in;
}

UnrollResult run_case(const json& c, const std::vector<Tensor>& in, const Tensor& mask, Unroll unroll) {
  const std::vector<Tensor> state(in.begin() + 4, in.end());
  const std::string kind = c["kind"];
  if (kind == "lstm") return lstm(in[0], state, mask, in[1], in[2], in[3], unroll);
  if (kind == "gru") return gru(in[0], state, mask, in[1], in[2], in[3], unroll);
  ConvOptions co;
  co.padding = Padding::same();
  return conv_lstm(in[0], state, mask, in[1], in[2], in[3], co, unroll);
}

Tensor objective(const json& c, const UnrollResult& r, TensorOptions o) {
  Tensor total = sum(mul(r.sequence, Tensor::from_vector(r.sequence.shape(), c["w_seq"].get<std::vector<double>>(), o)));
  for (size_t k = 0; k < r.state.size(); ++k)
    total = add(total, sum(mul(r.state[k], Tensor::from_vector(r.state[k].shape(),
                                                                c["w_state"][k].get<std::vector<double>>(), o))));
  return total;
}

const char* unroll_name(Unroll u) { return u == Unroll::dynamic ? "dynamic" : "static"; }

TEST(Recurrent, MatchesPyTorchOnEveryDeviceInF64AndF32WithBothUnrolls) {
  const json cases = load_cases();
  ASSERT_EQ(cases.size(), 6u) << "tests/fixtures/rnn.json: regenerate with make_rnn_fixtures.py";
  for (const json& c : cases) {
    if (c["kind"] == "bidirectional_lstm") continue;
    for (Device device : devices())
      for (DType dtype : {DType::f64, DType::f32})
        for (Unroll unroll : {Unroll::dynamic, Unroll::static_}) {
          // On CUDA devices both unrolls run the composed cell (the fused operator is CPU only).
          const std::string where = std::string(c["name"]) + " " + dtype_name(dtype) + " unroll " + unroll_name(unroll) +
                                    " on " + device.str();
          const TensorOptions o{dtype, device};
          CaseInputs in = inputs_of(c, o);
          UnrollResult r = run_case(c, in.all, in.mask, unroll);
          ASSERT_EQ(r.sequence.shape(), c["seq_shape"].get<Shape>()) << where;
          objective(c, r, o).backward();
          const double tol = dtype == DType::f64 ? 1e-10 : 3e-5;
          expect_close(r.sequence.to_double_vector(), vec(c["seq"]), tol, tol, where + " sequence");
          for (size_t k = 0; k < r.state.size(); ++k)
            expect_close(r.state[k].to_double_vector(), vec(c["out_state"][k]), tol, tol, where + " state " + std::to_string(k));
          expect_close(in.all[0].grad().to_double_vector(), vec(c["grad_x"]), tol, tol, where + " grad x");
          const char* names[] = {"input_kernel", "hidden_kernel", "bias"};
          for (int k = 0; k < 3; ++k)
            expect_close(in.all[1 + k].grad().to_double_vector(), vec(c["grad_params"][names[k]]), tol, tol,
                         where + " grad " + names[k]);
          for (size_t k = 0; k + 4 < in.all.size(); ++k)
            expect_close(in.all[4 + k].grad().to_double_vector(), vec(c["grad_state"][k]), tol, tol,
                         where + " grad state " + std::to_string(k));
        }
  }
}

TEST(Recurrent, F64GradientsMatchFiniteDifferencesWithMasksAndStates) {
  for (const json& c : load_cases()) {
    if (c["kind"] == "bidirectional_lstm") continue;
    for (Unroll unroll : {Unroll::dynamic, Unroll::static_}) {
      const TensorOptions o{DType::f64, Device::cpu()};
      CaseInputs in = inputs_of(c, o);
      expect_f64_gradients_match([&] { return objective(c, run_case(c, in.all, in.mask, unroll), o); }, in.all,
                                std::string(c["name"]) + " unroll " + unroll_name(unroll));
    }
  }
}

// bidirectional through the model builder: torch.nn.LSTM(bidirectional=True)'s output, and the
// gradients of x and both directions' parameters (forward direction first in parameter order).
Model bidirectional_model(int64_t time, int64_t features, int64_t units) {
  Model x = input({-1, time, features});
  return bidirectional(
      x, [units](const Model& m) { return lstm(m, units).sequence; },
      [](const Model& a, const Model& b) { return concatenate(a, b); });
}

TEST(Recurrent, BidirectionalMatchesPyTorch) {
  const json c = find_case("bidirectional_lstm");
  ASSERT_FALSE(c.empty());
  const Shape xs = c["x_shape"].get<Shape>();
  const int64_t units = c["units"];
  Model model = bidirectional_model(xs[1], xs[2], units);
  for (DType dtype : {DType::f64, DType::f32}) {
    const TensorOptions o{dtype, Device::cpu()};
    Parameters params = init(model, 0).to(Device::cpu(), dtype);
    ASSERT_EQ(params.size(), 6u);
    const char* names[] = {"input_kernel", "hidden_kernel", "bias"};
    for (size_t d = 0; d < 2; ++d)
      for (size_t k = 0; k < 3; ++k) {
        const json& dir = c["directions"][d == 0 ? "forward" : "backward"];
        EXPECT_THAT(params.entries()[d * 3 + k].name, HasSubstr(names[k]));
        params.at(d * 3 + k).detach().copy_from(
            Tensor::from_vector(params.at(d * 3 + k).shape(), dir[names[k]].get<std::vector<double>>(), o));
      }
    Tensor x = from(c["x_shape"], c["x"], o);
    Tensor y = forward(model, params, x, ForwardContext{});
    ASSERT_EQ(y.shape(), c["seq_shape"].get<Shape>());
    sum(mul(y, Tensor::from_vector(y.shape(), c["w_seq"].get<std::vector<double>>(), o))).backward();
    const double tol = dtype == DType::f64 ? 1e-10 : 3e-5;
    const std::string where = std::string("bidirectional ") + dtype_name(dtype);
    expect_close(y.to_double_vector(), vec(c["seq"]), tol, tol, where + " output");
    expect_close(x.grad().to_double_vector(), vec(c["grad_x"]), tol, tol, where + " grad x");
    for (size_t d = 0; d < 2; ++d)
      for (size_t k = 0; k < 3; ++k) {
        const json& dir = c["directions"][d == 0 ? "forward" : "backward"];
        expect_close(params.at(d * 3 + k).grad().to_double_vector(), vec(dir[std::string("grad_") + names[k]]), tol, tol,
                     where + " grad " + params.entries()[d * 3 + k].name);
      }
  }
}

TEST(Recurrent, BidirectionalF64GradientsMatchFiniteDifferences) {
  Model model = bidirectional_model(4, 3, 3);
  Parameters params = init(model, 7).to(Device::cpu(), DType::f64);
  Generator gen(5);
  Tensor x = normal({2, 4, 3}, 0.0f, 1.0f, gen).to(DType::f64);
  x.set_requires_grad();
  Tensor w = normal({2, 4, 6}, 0.0f, 1.0f, gen).to(DType::f64);
  std::vector<Tensor> inputs{x};
  for (const auto& e : params.entries()) inputs.push_back(e.value);
  expect_f64_gradients_match([&] { return sum(mul(forward(model, params, x, ForwardContext{}), w)); }, inputs,
                            "bidirectional");
}

TEST(Recurrent, DynamicAndStaticUnrollsAgree) {
  // The fused operator (dynamic) against the composed cell (static) on a larger f32 case with a mask.
  Generator gen(11);
  const int64_t B = 4, T = 9, F = 6, U = 7;
  for (const char* kind : {"lstm", "gru"}) {
    const int64_t G = std::string(kind) == "lstm" ? 4 : 3;
    std::vector<Tensor> base{normal({B, T, F}, 0.0f, 1.0f, gen), normal({F, G * U}, 0.0f, 0.4f, gen),
                             normal({U, G * U}, 0.0f, 0.4f, gen), normal({4 * U}, 0.0f, 0.4f, gen),
                             normal({B, U}, 0.0f, 1.0f, gen), normal({B, U}, 0.0f, 1.0f, gen)};
    std::vector<float> m(static_cast<size_t>(B * T));
    for (size_t k = 0; k < m.size(); ++k) m[k] = (k * 7) % 5 == 0 ? 1.0f : 0.0f;
    const Tensor mask = Tensor::from_vector({B, T}, m);
    const Tensor w = normal({B, T, U}, 0.0f, 1.0f, gen);
    std::vector<std::vector<double>> results[2];
    for (int u = 0; u < 2; ++u) {
      std::vector<Tensor> in;
      for (const Tensor& t : base) in.push_back(t.clone().detach().set_requires_grad());
      const Unroll unroll = u == 0 ? Unroll::dynamic : Unroll::static_;
      UnrollResult r = G == 4 ? lstm(in[0], {in[4], in[5]}, mask, in[1], in[2], in[3], unroll)
                              : gru(in[0], {in[5]}, mask, in[1], in[2], in[3], unroll);
      add(sum(mul(r.sequence, w)), sum(r.state.back())).backward();
      results[u].push_back(r.sequence.to_double_vector());
      for (size_t k = 0; k < 4; ++k) results[u].push_back(in[k].grad().to_double_vector());
      results[u].push_back(in[5].grad().to_double_vector());
    }
    for (size_t k = 0; k < results[0].size(); ++k)
      expect_close(results[0][k], results[1][k], 1e-4, 1e-5, std::string(kind) + " result " + std::to_string(k));
  }
}

TEST(RecurrentLayers, SequenceAndStateAreAddressableAndSummarized) {
  Model x = input({-1, 6, 3});
  RecurrentOutput out = lstm(x, 5);
  ASSERT_EQ(out.state.size(), 2u);
  Model both = concatenate({out.sequence | flatten(), out.state[0], out.state[1]}, -1);
  const std::string s = summary(both);
  EXPECT_THAT(s, HasSubstr("lstm_2 (lstm)"));
  EXPECT_THAT(s, HasSubstr("{nil, 6, 5}, {nil, 5}, {nil, 5}"));
  EXPECT_THAT(s, HasSubstr("lstm_sequence"));
  EXPECT_THAT(s, HasSubstr("lstm_c"));
  EXPECT_THAT(s, HasSubstr("lstm_h"));
  EXPECT_THAT(s, HasSubstr("Total Parameters: 180"));  // input_kernel 3·20, hidden_kernel 5·20, bias 20
  Parameters params = init(both, 3);
  EXPECT_EQ(params.count(), 3u * 20 + 5 * 20 + 20);
  Generator gen(2);
  Tensor xv = normal({2, 6, 3}, 0.0f, 1.0f, gen);
  Tensor y = predict(both, params, xv);
  ASSERT_EQ(y.shape(), (Shape{2, 40}));
  // The same numbers from the functional lstm with zero state.
  UnrollResult r = lstm(xv, {Tensor::zeros({2, 5}), Tensor::zeros({2, 5})}, Tensor(), params.at(0).detach(),
                        params.at(1).detach(), params.at(2).detach());
  std::vector<double> want = r.sequence.reshape({2, 30}).to_double_vector();
  const std::vector<double> got = y.to_double_vector();
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t k = 0; k < 30; ++k) EXPECT_NEAR(got[b * 40 + k], want[b * 30 + k], 1e-6);
  const std::vector<double> c = r.state[0].to_double_vector(), h = r.state[1].to_double_vector();
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t k = 0; k < 5; ++k) {
      EXPECT_NEAR(got[b * 40 + 30 + k], c[b * 5 + k], 1e-6);
      EXPECT_NEAR(got[b * 40 + 35 + k], h[b * 5 + k], 1e-6);
    }
  // gru and conv_lstm summaries list every output too.
  EXPECT_THAT(summary(gru(x, 4).state[0]), HasSubstr("{nil, 6, 4}, {nil, 4}"));
  EXPECT_THAT(summary(conv_lstm(input({-1, 3, 2, 5, 5}), 4, {.kernel_size = {3}}).sequence),
              HasSubstr("{nil, 3, 4, 5, 5}, {nil, 1, 4, 5, 5}, {nil, 1, 4, 5, 5}"));
}

TEST(RecurrentLayers, InitialStateAndMaskInputs) {
  // lstm(x, {c, h}, units, {.mask = mask(ids, 0)}): a model of four inputs against the functional
  // lstm with the same state and mask.
  Model x = input({-1, 5, 3}), c0 = input({-1, 4}), h0 = input({-1, 4}), ids = input({-1, 5});
  RecurrentOptions o;
  o.mask = mask(ids, 0);
  Model model = lstm(x, {c0, h0}, 4, o).sequence;
  ModelPlan p = plan(model);
  ASSERT_EQ(p.input_layers.size(), 4u);
  Parameters params = init(model, 1);
  Generator gen(4);
  Tensor xv = normal({2, 5, 3}, 0.0f, 1.0f, gen), cv = normal({2, 4}, 0.0f, 1.0f, gen),
         hv = normal({2, 4}, 0.0f, 1.0f, gen);
  Tensor idv = Tensor::from_vector({2, 5}, std::vector<float>{3, 0, 2, 0, 0, 1, 1, 1, 1, 1});
  Tensor y = forward(p, params, {xv, cv, hv, idv}, ForwardContext{});
  Tensor mv = Tensor::from_vector({2, 5}, std::vector<float>{0, 1, 0, 1, 1, 0, 0, 0, 0, 0});
  UnrollResult r = lstm(xv, {cv, hv}, mv, params.at(0).detach(), params.at(1).detach(), params.at(2).detach());
  expect_close(y.to_double_vector(), r.sequence.to_double_vector(), 1e-6, 1e-6, "lstm with state and mask");
  // Masked steps carry the state: sample 0's outputs at steps 1, 3 and 4 repeat the previous one.
  const std::vector<double> v = y.to_double_vector();
  for (int64_t k = 0; k < 4; ++k) {
    EXPECT_EQ(v[1 * 4 + k], v[0 * 4 + k]);
    EXPECT_EQ(v[4 * 4 + k], v[2 * 4 + k]);
  }
  // The random initial state: recurrent_initializer draws it, the same on every pass.
  RecurrentOptions ro;
  ro.recurrent_initializer = initializers::glorot_uniform();
  ro.seed = 9;
  Model rm = input({-1, 5, 3}) | gru(4, ro);
  Parameters rp = init(rm, 0);
  EXPECT_EQ(predict(rm, rp, xv).to_double_vector(), predict(rm, rp, xv).to_double_vector());
  Model zm = input({-1, 5, 3}) | gru(4);
  EXPECT_NE(predict(rm, rp, xv).to_double_vector(), predict(zm, rp, xv).to_double_vector());
}

TEST(RecurrentLayers, AnLstmAndAGruLearnARunningSum) {
  // x {B, 8, 1} of ±1; target: the mean of the sequence, read from the last state h through a
  // dense layer. Plain SGD on the flat parameter buffer, 300 steps; the loss must fall below a
  // quarter of its start (measured: lstm 0.139 -> 0.017, gru 0.54 -> 0.004).
  for (bool use_gru : {false, true}) {
    Model x = input({-1, 8, 1});
    RecurrentOutput r = use_gru ? gru(x, 8) : lstm(x, 8);
    Model model = r.state.back() | dense(1);
    Parameters params = init(model, 5);
    Generator gen(8);
    auto batch = [&](Tensor& xs, Tensor& ys) {
      std::vector<float> xv(32 * 8), yv(32);
      for (int b = 0; b < 32; ++b) {
        float total = 0;
        for (int t = 0; t < 8; ++t) total += xv[b * 8 + t] = gen.uniform01() < 0.5f ? -1.0f : 1.0f;
        yv[b] = total / 8;
      }
      xs = Tensor::from_vector({32, 8, 1}, xv);
      ys = Tensor::from_vector({32, 1}, yv);
    };
    double first = 0, last = 0;
    for (int step = 0; step < 300; ++step) {
      Tensor xs, ys;
      batch(xs, ys);
      params.zero_grad();
      Tensor diff = sub(forward(model, params, xs, ForwardContext{.training = true}), ys);
      Tensor loss = mean(mul(diff, diff));
      loss.backward();
      if (step < 10) first += loss.item() / 10;
      if (step >= 290) last += loss.item() / 10;
      auto v = params.values();
      auto g = params.grads();
      for (size_t k = 0; k < v.size(); ++k) v[k] -= 0.5f * g[k];
    }
    EXPECT_LT(last, first / 4) << (use_gru ? "gru" : "lstm") << ": loss " << first << " -> " << last;
  }
}

TEST(RecurrentLayers, BadInputIsAnErrorAtModelBuildTime) {
  Model x = input({-1, 6, 3});
  EXPECT_THAT(error_of([&] { lstm(x, 0); }), AllOf(HasSubstr("lstm (0 units"), HasSubstr("units must be positive")));
  EXPECT_THAT(error_of([] { gru(-2); }), HasSubstr("gru (-2 units"));
  EXPECT_THAT(error_of([&] { conv_lstm(input({-1, 3, 2, 5, 5}), 0); }), HasSubstr("conv_lstm (0 units"));
  // Wrong rank: when the model is planned, naming the layer, its options and the shape.
  EXPECT_THAT(error_of([] { summary(input({-1, 6}) | lstm(4)); }),
              AllOf(HasSubstr("lstm_2 (lstm)"), HasSubstr("4 units"), HasSubstr("{-1, 6}"),
                    HasSubstr("{batch, time, features}")));
  EXPECT_THAT(error_of([] { init(lstm(input({-1, 3, 4, 4}), 4).sequence, 0); }), HasSubstr("{-1, 3, 4, 4}"));
  // A state that does not fit.
  EXPECT_THAT(error_of([&] { summary(lstm(x, {input({-1, 5}), input({-1, 4})}, 4).sequence); }),
              AllOf(HasSubstr("initial state c"), HasSubstr("{-1, 5}"), HasSubstr("expected {-1, 4}")));
  EXPECT_THAT(error_of([&] { lstm(x, {input({-1, 4})}, 4); }), HasSubstr("expected 2 {c, h}"));
  // A mask that does not fit.
  RecurrentOptions o;
  o.mask = input({-1, 7});
  EXPECT_THAT(error_of([&] { summary(gru(x, 4, o).sequence); }), AllOf(HasSubstr("mask of shape {-1, 7}"), HasSubstr("{-1, 6, 3}")));
  // conv_lstm whose hidden convolution would shrink the state.
  EXPECT_THAT(error_of([] { summary(conv_lstm(input({-1, 3, 2, 5, 5}), 4, {.kernel_size = {3}, .padding = Padding::valid()}).sequence); }),
              AllOf(HasSubstr("conv_lstm (4 units, kernel_size [3]"), HasSubstr("must keep the spatial shape")));
  // Non element-wise activations.
  RecurrentOptions sm;
  sm.activation = Activation::softmax;
  EXPECT_THAT(error_of([&] { lstm(x, 4, sm); }), HasSubstr("element-wise"));
  // The functional level checks its tensors too.
  EXPECT_THAT(error_of([] { lstm(Tensor::zeros({2, 3, 4}), {Tensor::zeros({2, 5}), Tensor::zeros({2, 5})}, Tensor(),
                                 Tensor::zeros({3, 20}), Tensor::zeros({5, 20}), Tensor()); }),
              AllOf(HasSubstr("input_kernel of shape {3, 20}"), HasSubstr("{4, 20}")));
}

}  // namespace
}  // namespace axon
