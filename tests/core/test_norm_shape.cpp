// batch_norm, group_norm, instance_norm and the shape ops against PyTorch
// (tests/fixtures/norm_shape.json, made by make_norm_shape_fixtures.py) on every available device in
// f64 and f32; batch_norm's running statistics over several steps; model state (init, train vs
// inference mode, clone/to); the normalization, shape, combinator and custom layers with their
// gradients; multi-input graphs and summary; and build-time errors.
// (tests/core/test_backends.cpp checks the same ops in bf16 and against finite differences.)
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "../support/gradcheck.h"
#include "axon/autograd.h"
#include "../support/compare.h"
#include "axon/cuda.h"
#include "axon/model.h"
#include "axon/nn_ops.h"
#include "axon/random.h"
#include "axon/shape_ops.h"

namespace axon {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

using axon::testing::devices;
using axon::testing::expect_close;

json fixtures() { return axon::testing::load_fixture("norm_shape.json"); }

TEST(NormFixtures, MatchPyTorchOnEveryDevice) {
  const json cases = fixtures()["norm"];
  ASSERT_EQ(cases.size(), 8u);
  for (const json& c : cases) {
    const std::string name = c["name"], fn = c["function"];
    const Shape shape = c["shape"].get<Shape>();
    const int64_t axis = c["channel_index"], groups = c["groups"];
    const bool training = c["training"];
    const double eps = c["epsilon"];
    const int64_t channels = shape[static_cast<size_t>(axis < 0 ? axis + static_cast<int64_t>(shape.size()) : axis)];
    for (Device device : devices())
      for (DType dtype : {DType::f64, DType::f32}) {
        const std::string where = name + " " + dtype_name(dtype) + " on " + device.str();
        const TensorOptions o{dtype, device};
        Tensor x = Tensor::from_vector(shape, c["x"].get<std::vector<double>>(), o).set_requires_grad();
        Tensor gamma = Tensor::from_vector({channels}, c["gamma"].get<std::vector<double>>(), o).set_requires_grad();
        Tensor beta = Tensor::from_vector({channels}, c["beta"].get<std::vector<double>>(), o).set_requires_grad();
        Tensor y;
        if (fn == "batch_norm") {
          const TensorOptions s{dtype, device};  // f32 or f64: the stats dtype of x
          Tensor rm = Tensor::from_vector({channels}, c["running_mean"].get<std::vector<double>>(), s);
          Tensor rv = Tensor::from_vector({channels}, c["running_var"].get<std::vector<double>>(), s);
          y = batch_norm(x, gamma, beta, rm, rv, training, 0.1, eps, axis);
        } else if (fn == "group_norm") {
          y = group_norm(x, gamma, beta, groups, axis, eps);
        } else {
          y = instance_norm(x, gamma, beta, axis, eps);
        }
        sum(mul(y, Tensor::from_vector(shape, c["weights"].get<std::vector<double>>(), o))).backward();
        const double tol = dtype == DType::f64 ? 1e-10 : 2e-5;
        expect_close(y.to_double_vector(), c["output"].get<std::vector<double>>(), tol, tol, where + " output");
        expect_close(x.grad().to_double_vector(), c["grad_x"].get<std::vector<double>>(), tol, 10 * tol, where + " grad x");
        expect_close(gamma.grad().to_double_vector(), c["grad_gamma"].get<std::vector<double>>(), tol, 10 * tol,
                     where + " grad gamma");
        expect_close(beta.grad().to_double_vector(), c["grad_beta"].get<std::vector<double>>(), tol, 10 * tol,
                     where + " grad beta");
      }
  }
}

// On the CPU, batch_norm and instance_norm over channels last ({batch, ..., C}) take a row-wise path
// of their own (the others walk each channel's lane). Each channel's sums run in the same order
// as over the same data channels first, so outputs, gradients and running statistics agree to
// the bit; and the path is the one the PyTorch fixtures above check (channels_last cases).
TEST(NormFixtures, ChannelsLastAgreesBitwiseWithChannelsFirstOnTheCpu) {
  Generator rng(12);
  for (DType dtype : {DType::f32, DType::f64}) {
    const TensorOptions o{dtype, Device::cpu()};
    const Tensor x0 = normal({4, 3, 5, 6}, 0.5f, 2.0f, rng).to(dtype), w0 = normal({4, 3, 5, 6}, 0.0f, 1.0f, rng).to(dtype);
    const Tensor g0 = normal({6}, 1.0f, 0.5f, rng).to(dtype), b0 = normal({6}, 0.0f, 0.5f, rng).to(dtype);
    for (const std::string fn : {"batch_norm", "batch_norm_inference", "instance_norm"}) {
      const std::string where = fn + " " + dtype_name(dtype);
      struct Run {
        Tensor y, dx, dgamma, dbeta, rm, rv;
      };
      auto run = [&](bool last) {
        Tensor x = (last ? x0.clone() : permute(x0, {0, 3, 1, 2})).set_requires_grad();
        Tensor gamma = g0.clone().set_requires_grad(), beta = b0.clone().set_requires_grad();
        Tensor rm = Tensor::from_vector({6}, std::vector<double>{0.1, -0.2, 0.3, 0.0, 0.5, -1.0}, o);
        Tensor rv = Tensor::from_vector({6}, std::vector<double>{1.0, 2.0, 0.5, 1.5, 3.0, 0.25}, o);
        const int64_t axis = last ? -1 : 1;
        Tensor y = fn == "instance_norm" ? instance_norm(x, gamma, beta, axis, 1e-5)
                                         : batch_norm(x, gamma, beta, rm, rv, fn == "batch_norm", 0.1, 1e-5, axis);
        sum(mul(y, last ? w0 : permute(w0, {0, 3, 1, 2}))).backward();
        if (!last) return Run{permute(y.detach(), {0, 2, 3, 1}), permute(x.grad(), {0, 2, 3, 1}), gamma.grad(), beta.grad(), rm, rv};
        return Run{y.detach(), x.grad(), gamma.grad(), beta.grad(), rm, rv};
      };
      const Run a = run(true), b = run(false);
      EXPECT_EQ(a.y.to_double_vector(), b.y.to_double_vector()) << where << " output";
      EXPECT_EQ(a.dx.to_double_vector(), b.dx.to_double_vector()) << where << " grad x";
      EXPECT_EQ(a.dgamma.to_double_vector(), b.dgamma.to_double_vector()) << where << " grad gamma";
      EXPECT_EQ(a.dbeta.to_double_vector(), b.dbeta.to_double_vector()) << where << " grad beta";
      EXPECT_EQ(a.rm.to_double_vector(), b.rm.to_double_vector()) << where << " running mean";
      EXPECT_EQ(a.rv.to_double_vector(), b.rv.to_double_vector()) << where << " running var";
    }
  }
}

TEST(NormFixtures, RunningStatisticsFollowPyTorchOverSteps) {
  const json cases = fixtures()["running"];
  ASSERT_EQ(cases.size(), 2u);
  for (const json& c : cases) {
    const Shape shape = c["shape"].get<Shape>();
    const int64_t axis = c["channel_index"];
    const int64_t channels = shape[static_cast<size_t>(axis < 0 ? axis + static_cast<int64_t>(shape.size()) : axis)];
    for (Device device : devices())
      for (DType dtype : {DType::f64, DType::f32}) {
        const std::string where = std::string(c["name"]) + " " + dtype_name(dtype) + " on " + device.str();
        Tensor rm = Tensor::zeros({channels}, {dtype, device}), rv = Tensor::ones({channels}, {dtype, device});
        for (size_t step = 0; step < c["batches"].size(); ++step) {
          Tensor x = Tensor::from_vector(shape, c["batches"][step].get<std::vector<double>>(), {dtype, device});
          batch_norm(x, Tensor(), Tensor(), rm, rv, true, c["momentum"].get<double>(), 1e-5, axis);
          const double tol = dtype == DType::f64 ? 1e-12 : 1e-5;
          expect_close(rm.to_double_vector(), c["running_mean"][step].get<std::vector<double>>(), tol, tol,
                       where + " mean after step " + std::to_string(step + 1));
          expect_close(rv.to_double_vector(), c["running_var"][step].get<std::vector<double>>(), tol, tol,
                       where + " var after step " + std::to_string(step + 1));
        }
      }
  }
}

TEST(ShapeFixtures, ResizeAndPadMatchPyTorch) {
  const json f = fixtures();
  ASSERT_EQ(f["resize"].size(), 8u);
  for (const json& c : f["resize"])
    for (Device device : devices())
      for (DType dtype : {DType::f64, DType::f32}) {
        const std::string where = std::string(c["name"]) + " " + dtype_name(dtype) + " on " + device.str();
        const Shape shape = c["shape"].get<Shape>();
        const std::vector<int64_t> size = c["size"].get<std::vector<int64_t>>();
        Tensor x = Tensor::from_vector(shape, c["x"].get<std::vector<double>>(), {dtype, device}).set_requires_grad();
        const std::string method = c["method"];
        const ResizeMethod m = method == "nearest"    ? ResizeMethod::nearest
                               : method == "bilinear" ? ResizeMethod::bilinear
                                                      : ResizeMethod::bicubic;
        Tensor y = resize(x, size[0], size[1], m, true, c.value("antialias", false));
        sum(mul(y, Tensor::from_vector(y.shape(), c["weights"].get<std::vector<double>>(), {dtype, device}))).backward();
        const double tol = dtype == DType::f64 ? 1e-12 : 1e-5;
        expect_close(y.to_double_vector(), c["output"].get<std::vector<double>>(), tol, tol, where + " output");
        expect_close(x.grad().to_double_vector(), c["grad_x"].get<std::vector<double>>(), tol, tol, where + " grad");
      }
  for (const json& c : f["pad"]) {
    std::vector<std::pair<int64_t, int64_t>> config;
    for (const json& p : c["config"]) config.emplace_back(p[0].get<int64_t>(), p[1].get<int64_t>());
    for (Device device : devices()) {
      Tensor x = Tensor::from_vector(c["shape"].get<Shape>(), c["x"].get<std::vector<double>>(), {DType::f64, device});
      Tensor y = pad(x, config, c["value"].get<double>());
      EXPECT_EQ(y.shape(), c["output_shape"].get<Shape>());
      EXPECT_EQ(y.to_double_vector(), c["output"].get<std::vector<double>>()) << device.str();
    }
  }
}

TEST(ShapeOps, CopiesPutEveryElementWhereItBelongs) {
  Tensor x = Tensor::from_vector({2, 3}, std::vector<float>{0, 1, 2, 3, 4, 5});
  EXPECT_EQ(permute(x, {1, 0}).to_vector(), (std::vector<float>{0, 3, 1, 4, 2, 5}));
  Tensor x3 = Tensor::from_vector({2, 2, 2}, std::vector<float>{0, 1, 2, 3, 4, 5, 6, 7});
  EXPECT_EQ(permute(x3, {2, 0, 1}).to_vector(), (std::vector<float>{0, 2, 4, 6, 1, 3, 5, 7}));
  EXPECT_EQ(slice(x, 1, 1, 2).to_vector(), (std::vector<float>{1, 2, 4, 5}));
  Tensor y = Tensor::from_vector({2, 1}, std::vector<float>{9, 8});
  EXPECT_EQ(concatenate({x, y}, -1).to_vector(), (std::vector<float>{0, 1, 2, 9, 3, 4, 5, 8}));
  std::vector<Tensor> parts = split(x, {1, 2}, 1);
  EXPECT_EQ(parts[0].to_vector(), (std::vector<float>{0, 3}));
  EXPECT_EQ(parts[1].to_vector(), (std::vector<float>{1, 2, 4, 5}));
  // Integer tensors are copied too (no arithmetic needed).
  Tensor ids = Tensor::from_vector({2, 2}, std::vector<int64_t>{1, 2, 3, 4}, {DType::i64, Device::cpu()});
  EXPECT_EQ(permute(ids, {1, 0}).to_double_vector(), (std::vector<double>{1, 3, 2, 4}));
}

TEST(ShapeOps, BadArgumentsNameTheOpAndShape) {
  Tensor x = Tensor::zeros({2, 3});
  EXPECT_THAT([&] { permute(x, {0, 0}); }, ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr("{2, 3}")));
  EXPECT_THAT([&] { concatenate({x, Tensor::zeros({3, 3})}, 1); },
              ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr("{3, 3}")));
  EXPECT_THAT([&] { split(x, {1, 1}, 1); }, ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr("sum to 2")));
  EXPECT_THAT([&] { pad(x, {{0, 0}, {-2, -2}}); }, ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr("crops")));
  EXPECT_THAT([&] { resize(x, 2, 2); }, ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr("resize")));
  EXPECT_THAT([&] { group_norm(Tensor::zeros({2, 6}), Tensor(), Tensor(), 4); },
              ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr("num_groups 4 does not divide the 6 channels")));
  EXPECT_THAT([&] { batch_norm(Tensor::zeros({2, 3}), Tensor(), Tensor(), Tensor(), Tensor(), false); },
              ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr("inference needs running_mean")));
}

// ---- model state ----

TEST(ModelState, BatchNormKeepsRunningStatisticsBesideTheParameters) {
  Model model = input({-1, 3}) | dense(4) | batch_norm() | relu() | dense(2);
  Parameters params = init(model, 1);
  ASSERT_EQ(params.state_entries().size(), 2u);
  EXPECT_EQ(params.state_entries()[0].name, "batch_norm_3.mean");
  EXPECT_EQ(params.state_entries()[1].name, "batch_norm_3.var");
  EXPECT_EQ(params.state_count(), 8u);
  EXPECT_EQ(params.state("batch_norm_3.mean").to_vector(), std::vector<float>(4, 0.0f));
  EXPECT_EQ(params.state("batch_norm_3.var").to_vector(), std::vector<float>(4, 1.0f));
  EXPECT_FALSE(params.state("batch_norm_3.var").requires_grad());
  // Parameters: dense (3·4 + 4), gamma and beta (4 + 4), dense (4·2 + 2); the state is apart.
  EXPECT_EQ(params.count(), 16u + 8u + 10u);
  EXPECT_THROW(params.state("nope"), std::out_of_range);

  Tensor x = axon::testing::random_tensor({6, 3}, 2, false, -2.0f, 3.0f);
  // Inference mode neither uses nor changes batch statistics.
  Tensor before = predict(model, params, x);
  EXPECT_EQ(params.state("batch_norm_3.mean").to_vector(), std::vector<float>(4, 0.0f));
  // Training mode updates the state in place: mean = 0.9·0 + 0.1·(batch mean of dense_2's output).
  Generator rng(3);
  ModelPlan p = plan(model);
  Tensor h = linear(x, params["dense_2.kernel"], params["dense_2.bias"]).detach();
  forward(p, params, x, ForwardContext{true, &rng});
  std::vector<float> want = mean(h, 0).to_vector();
  std::vector<float> got = params.state("batch_norm_3.mean").to_vector();
  for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(got[i], 0.1f * want[i], 1e-6f);
  Tensor after = predict(model, params, x);
  EXPECT_NE(before.to_vector(), after.to_vector());  // inference uses the updated running statistics

  // clone() and to() copy the state; share_state() makes views of another's.
  Parameters copy = params.clone();
  EXPECT_EQ(copy.state("batch_norm_3.mean").to_vector(), got);
  EXPECT_NE(copy.flat_state().raw_data(), params.flat_state().raw_data());
  Parameters bf = params.to(Device::cpu(), DType::bf16);
  EXPECT_EQ(bf.state_dtype(), DType::f32);
  bf.share_state(params);
  EXPECT_EQ(bf.flat_state().raw_data(), params.flat_state().raw_data());
  EXPECT_THROW(bf.share_state(init(input({-1, 3}) | dense(2), 0)), std::invalid_argument);
}

TEST(ModelState, TheStateOfAnotherModelIsRejected) {
  Model model = input({-1, 3}) | batch_norm();
  Parameters other(init(input({-1, 3}) | batch_norm(), 0));
  Parameters no_state({{"batch_norm_2.gamma", {3}}, {"batch_norm_2.beta", {3}}});
  EXPECT_THAT([&] { predict(model, no_state, Tensor::zeros({2, 3})); },
              ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr("model state")));
  EXPECT_NO_THROW(predict(model, other, Tensor::zeros({2, 3})));
}

// ---- layers: gradients through the model (f32 finite differences) ----

void check_model_gradients(const Model& model, const Shape& in_shape, bool training = true) {
  Parameters params = init(model, 5);
  ModelPlan p = plan(model);
  Tensor x = axon::testing::random_tensor(in_shape, 6, true);
  std::vector<Tensor> inputs{x};
  for (const auto& e : params.entries()) inputs.push_back(e.value);
  axon::testing::expect_gradients_match(
      [&](const std::vector<Tensor>&) {
        // Training mode updates the running statistics each call, but its output uses the batch's.
        Generator rng(1);
        return forward(p, params, x, ForwardContext{training, &rng});
      },
      inputs, 1e-2f, 3e-3f, 3e-2f);
}

TEST(Layers, NormalizationLayersHaveFiniteDifferenceGradients) {
  check_model_gradients(input({-1, 4}) | dense(3) | batch_norm(), {5, 4});
  check_model_gradients(input({-1, 3, 4}) | batch_norm({.channel_index = 1}), {3, 3, 4});
  check_model_gradients(input({-1, 3, 4}) | batch_norm(), {2, 3, 4}, false);
  check_model_gradients(input({-1, 3, 6}) | group_norm(2), {2, 3, 6});
  check_model_gradients(input({-1, 5, 3}) | instance_norm(), {2, 5, 3});
}

TEST(Layers, ShapeLayersHaveFiniteDifferenceGradients) {
  check_model_gradients(input({-1, 2, 3}) | reshape({kBatch, kAuto}) | dense(2), {2, 2, 3});
  check_model_gradients(input({-1, 2, 3}) | transpose({0, 2, 1}) | reshape({kBatch, 6}) | dense(2), {2, 2, 3});
  check_model_gradients(input({-1, 3, 3, 2}) | pad({{1, 0}, {0, 2}}, 0.5) | flatten() | dense(2), {2, 3, 3, 2});
  check_model_gradients(input({-1, 2, 3, 2}) | resize(3, 5, ResizeMethod::bilinear) | flatten() | dense(2), {2, 2, 3, 2});
  check_model_gradients(input({-1, 5, 3, 2}) | resize(2, 4, ResizeMethod::bilinear) | flatten() | dense(2), {2, 5, 3, 2});
  check_model_gradients(input({-1, 4, 3, 2}) | resize(3, 5, ResizeMethod::bicubic) | flatten() | dense(2), {2, 4, 3, 2});
  check_model_gradients(input({-1, 2, 4, 5}) | resize(3, 2, ResizeMethod::lanczos3, Channels::first) | flatten() | dense(2),
                        {2, 2, 4, 5});
}

// lanczos has no PyTorch counterpart: its weights against the formula written out here
// (sinc(x)·sinc(x/r), Duchon 1979; centres (o + ½)·in/out − ½, normalised; stretched by in/out
// when antialiasing a downsample), and the properties any of the kernels must have.
TEST(Resize, LanczosFollowsItsFormulaAndEveryKernelKeepsConstantsAndSizes) {
  const auto sinc = [](double v) { return v == 0.0 ? 1.0 : std::sin(M_PI * v) / (M_PI * v); };
  Generator gen(5);
  Tensor x = uniform({1, 7, 1, 1}, -1, 1, gen).to(DType::f64);
  const std::vector<double> xs = x.to_double_vector();
  for (const auto& [method, r] : {std::pair{ResizeMethod::lanczos3, 3.0}, std::pair{ResizeMethod::lanczos5, 5.0}})
    for (const int64_t out : {3, 11})
      for (const bool antialias : {true, false}) {
        const double stretch = antialias && out < 7 ? 7.0 / static_cast<double>(out) : 1.0;
        const std::vector<double> got = resize(x, out, 1, method, true, antialias).to_double_vector();
        for (int64_t o = 0; o < out; ++o) {
          const double c = (static_cast<double>(o) + 0.5) * 7.0 / static_cast<double>(out) - 0.5;
          double num = 0, den = 0;
          for (int64_t j = 0; j < 7; ++j) {
            const double t = (static_cast<double>(j) - c) / stretch;
            const double k = std::abs(t) < r ? sinc(t) * sinc(t / r) : 0.0;
            num += k * xs[static_cast<size_t>(j)];
            den += k;
          }
          EXPECT_NEAR(got[static_cast<size_t>(o)], num / den, 1e-12)
              << resize_method_name(method) << " out " << out << " antialias " << antialias << " sample " << o;
        }
      }
  Tensor image = uniform({2, 5, 6, 3}, -1, 1, gen).to(DType::f64);
  for (ResizeMethod m : {ResizeMethod::nearest, ResizeMethod::bilinear, ResizeMethod::bicubic, ResizeMethod::lanczos3,
                         ResizeMethod::lanczos5}) {
    // Same size: every kernel is 1 at 0 and 0 at the other integers, so nothing changes.
    expect_close(resize(image, 5, 6, m).to_double_vector(), image.to_double_vector(), 1e-12, 1e-12,
                 std::string(resize_method_name(m)) + " same size");
    // A constant image stays constant (the weights sum to 1), up or down, with or without antialias.
    for (const bool antialias : {true, false}) {
      Tensor y = resize(Tensor::full({1, 5, 6, 2}, 0.75, {DType::f64}), 3, 9, m, true, antialias);
      EXPECT_EQ(y.shape(), (Shape{1, 3, 9, 2}));
      for (double v : y.to_double_vector()) EXPECT_NEAR(v, 0.75, 1e-12) << resize_method_name(m);
    }
    // Channels first gives the channels-last result, transposed; bf16 runs (in f32).
    Tensor first = resize(permute(image, {0, 3, 1, 2}), 4, 8, m, false);
    expect_close(permute(first, {0, 2, 3, 1}).to_double_vector(), resize(image, 4, 8, m).to_double_vector(), 1e-12,
                 1e-12, std::string(resize_method_name(m)) + " channels first");
    EXPECT_EQ(resize(image.to(DType::bf16), 3, 4, m).dtype(), DType::bf16);
  }
}


TEST(Layers, ShapesAreInferredAtPlanning) {
  EXPECT_EQ(plan(input({-1, 2, 3}) | reshape({kBatch, kAuto})).layers.back().output_shape, (Shape{-1, 6}));
  EXPECT_EQ(plan(input({-1, 2, 3}) | reshape({kBatch, 3, 2, 1})).layers.back().output_shape, (Shape{-1, 3, 2, 1}));
  EXPECT_EQ(plan(input({-1, 2, 3}) | transpose({0, 2, 1})).layers.back().output_shape, (Shape{-1, 3, 2}));
  EXPECT_EQ(plan(input({-1, 4, 4, 3}) | pad({{1, 1}, {2, 0}})).layers.back().output_shape, (Shape{-1, 6, 6, 3}));
  EXPECT_EQ(plan(input({-1, 3, 4, 4}) | pad({{1, 1}, {2, 0}}, 0.0, Channels::first)).layers.back().output_shape,
            (Shape{-1, 3, 6, 6}));
  EXPECT_EQ(plan(input({-1, 4, 4, 3}) | resize(8, 2)).layers.back().output_shape, (Shape{-1, 8, 2, 3}));
}

// ---- combinators and multi-input graphs ----

TEST(Graphs, TwoInputsMergedByAddAndConcatenate) {
  Model a = input({-1, 3}), b = input({-1, 3});
  Model merged = concatenate(add(a | dense(4), b | dense(4)), b, -1) | dense(2);
  ModelPlan p = plan(merged);
  ASSERT_EQ(p.input_layers.size(), 2u);
  EXPECT_EQ(p.layers.back().output_shape, (Shape{-1, 2}));
  Parameters params = init(merged, 3);
  Tensor xa = axon::testing::random_tensor({4, 3}, 1, true), xb = axon::testing::random_tensor({4, 3}, 2, true);
  // The value: computed by hand from the same parameters.
  Tensor got = predict(merged, params, std::vector<Tensor>{xa, xb});
  NoGradGuard no_grad;
  Tensor ha = linear(xa, params["dense_2.kernel"], params["dense_2.bias"]);
  Tensor hb = linear(xb, params["dense_4.kernel"], params["dense_4.bias"]);
  Tensor want = linear(concatenate({add(ha, hb), xb}, -1), params["dense_7.kernel"], params["dense_7.bias"]);
  EXPECT_EQ(got.to_vector(), want.to_vector());
  EXPECT_THAT([&] { predict(merged, params, xa); }, ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr("2")));
}

TEST(Graphs, MultiInputGradientsMatchFiniteDifferences) {
  Model a = input({-1, 3}), b = input({-1, 3});
  Model m = multiply(subtract(a | dense(3, Activation::tanh), b), add({a, b, constant(Tensor::full({3}, 0.5))}));
  Parameters params = init(m, 2);
  ModelPlan p = plan(m);
  Tensor xa = axon::testing::random_tensor({2, 3}, 3, true), xb = axon::testing::random_tensor({2, 3}, 4, true);
  std::vector<Tensor> inputs{xa, xb};
  for (const auto& e : params.entries()) inputs.push_back(e.value);
  axon::testing::expect_gradients_match(
      [&](const std::vector<Tensor>&) { return forward(p, params, std::vector<Tensor>{xa, xb}, ForwardContext{true}); },
      inputs);
}

TEST(Graphs, ResidualBlockSplitCondAndCustomLayers) {
  Model x = input({-1, 4});
  Model residual = add(x | dense(8, Activation::tanh) | dense(4), x);
  std::vector<Model> halves = split(residual, 2);
  ASSERT_EQ(halves.size(), 2u);
  Model joined = concatenate(halves[1], halves[0]);
  // A custom layer with a parameter (the seed's Axon.layer), and Axon.nx.
  CustomLayerOptions scale;
  scale.op_name = "scale";
  scale.params = {{"factor", {4}, initializers::full(2.0f)}};
  Model scaled = layer([](const std::vector<Tensor>& in, std::span<const Tensor> ps) { return mul(in[0], ps[0]); },
                       {joined}, scale) |
                 nx([](const Tensor& t) { return square(t); });
  // scaled is a square, so the predicate holds; the false branch must still have the same shape.
  Model out = cond(scaled, [](const Tensor& t) { return sum(t).item() >= 0.0f; }, scaled, x);
  ModelPlan p = plan(out);

  EXPECT_EQ(p.layers.back().output_shape, (Shape{-1, 4}));
  check_model_gradients(out, {3, 4});
  Parameters params = init(out, 1);
  EXPECT_EQ(params["scale_9.factor"].to_vector(), std::vector<float>(4, 2.0f));
  // The value by hand: r = x + dense_4(tanh(dense_2(x))); out = (2·[r[:, 2:], r[:, :2]])².
  Tensor xv = axon::testing::random_tensor({3, 4}, 8, false);
  NoGradGuard no_grad;
  Tensor r = add(xv, linear(tanh(linear(xv, params["dense_2.kernel"], params["dense_2.bias"])), params["dense_4.kernel"],
                            params["dense_4.bias"]));
  Tensor want = square(mul_scalar(concatenate({slice(r, 1, 2, 2), slice(r, 1, 0, 2)}, 1), 2.0f));
  std::vector<float> got = predict(out, params, xv).to_vector(), w = want.to_vector();
  ASSERT_EQ(got.size(), w.size());
  for (size_t i = 0; i < w.size(); ++i) EXPECT_NEAR(got[i], w[i], 1e-5f);
}

TEST(Graphs, ACustomLayerOfModeTrainPassesItsInputThroughInInference) {
  CustomLayerOptions o;
  o.op_name = "noise";
  o.mode = CustomLayerOptions::Mode::train;
  Model m = layer([](const std::vector<Tensor>& in, std::span<const Tensor>) { return add_scalar(in[0], 1.0f); },
                  {input({-1, 2})}, o);
  Parameters params = init(m, 0);
  Tensor x = Tensor::from_vector({1, 2}, std::vector<float>{3, 4});
  EXPECT_EQ(predict(m, params, x).to_vector(), (std::vector<float>{3, 4}));
  EXPECT_EQ(forward(plan(m), params, x, ForwardContext{true}).to_vector(), (std::vector<float>{4, 5}));
}

TEST(Summary, PrintsEveryLayerOfAResidualBlockAndTheTotal) {
  Model x = input({-1, 16});
  Model block = add(x | dense(32) | batch_norm() | relu() | dense(16), x) | dense(10);
  const std::string s = summary(block);
  // Layer rows in the seed's order and format, then the seed's footer lines.
  EXPECT_THAT(s, HasSubstr("input_1 (input)"));
  EXPECT_THAT(s, HasSubstr("batch_norm_3 (batch_norm)   {nil, 32}   128\n"));
  EXPECT_THAT(s, HasSubstr("add_6 (add)                 {nil, 16}   0\n"));
  EXPECT_THAT(s, HasSubstr("dense_7 (dense)             {nil, 10}   170\n"));
  // 16·32 + 32 + 4·32 (gamma, beta, mean, var) + 32·16 + 16 + 16·10 + 10 = 1370, 4 bytes each.
  EXPECT_THAT(s, HasSubstr("Total Parameters: 1370\nTotal Parameters Memory: 5.48 kilobytes\n"));
}

// ---- errors at build time ----

TEST(Errors, InvalidOptionsAreRejectedWhenTheModelIsBuilt) {
  EXPECT_THAT([] { batch_norm({.momentum = 1.5}); },
              ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr("batch_norm (channel_index -1, epsilon 1e-05, momentum 1.5)")));
  EXPECT_THAT([] { group_norm(0); }, ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr("num_groups")));
  EXPECT_THAT([] { reshape({kBatch, kAuto, kAuto}); }, ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr("kAuto")));
  EXPECT_THAT([] { dropout(1.0); }, ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr("rate")));
  // Shape-dependent options fail at planning, naming the layer, its options and the shapes.
  EXPECT_THAT([] { plan(input({-1, 6}) | group_norm(4)); },
              ::testing::ThrowsMessage<std::invalid_argument>(
                  ::testing::AllOf(HasSubstr("group_norm_2 (group_norm)"), HasSubstr("num_groups 4"), HasSubstr("{-1, 6}"))));
  EXPECT_THAT([] { plan(add(input({-1, 3}), input({-1, 4}))); },
              ::testing::ThrowsMessage<std::invalid_argument>(
                  ::testing::AllOf(HasSubstr("add_3 (add)"), HasSubstr("{-1, 3} and {-1, 4}"))));
  EXPECT_THAT([] { plan(concatenate(input({-1, 3, 2}), input({-1, 4, 2}), -1)); },
              ::testing::ThrowsMessage<std::invalid_argument>(
                  ::testing::AllOf(HasSubstr("concatenate"), HasSubstr("{-1, 3, 2} and {-1, 4, 2}"))));
  EXPECT_THAT([] { plan(input({-1, 5}) | reshape({kBatch, 2, kAuto})); },
              ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr("reshape_2 (reshape)")));
  EXPECT_THAT([] { plan(split(input({-1, 5}), 2)[0]); },
              ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr("2 parts do not divide axis size 5")));
  EXPECT_THAT([] { plan(input({-1, 5}) | instance_norm()); },
              ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr("instance_norm")));
}

}  // namespace
}  // namespace axon
