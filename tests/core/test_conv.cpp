// Convolution and pooling (axon/conv_ops.h, axon/conv_layers.h): forward values and gradients
// against PyTorch (tests/fixtures/conv.json, made by make_conv_fixtures.py) on every device in f64
// and f32, f64 gradients against central finite differences, option and shape errors, and the
// layers through the model builder.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "axon/autograd.h"
#include "axon/conv_ops.h"
#include "../support/compare.h"
#include "../support/conv_paths.h"
#include "../support/gradcheck.h"
#include "axon/cuda.h"
#include "axon/model.h"
#include "axon/losses.h"
#include "axon/ops.h"
#include "axon/random.h"

namespace axon {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

using axon::testing::devices;
using axon::testing::error_of;
using axon::testing::expect_close;
using axon::testing::load_fixture;
using axon::testing::parse_padding;
using axon::testing::expect_f64_gradients_match;

json load_cases() { return load_fixture("conv.json")["cases"]; }

ChannelsLayout parse_layout(const json& c) { return c["channels"] == "first" ? ChannelsLayout::first : ChannelsLayout::last; }

// The case's op on tensors: inputs are x, then (conv) kernel and bias.
Tensor run_case(const json& c, const std::vector<Tensor>& in) {
  const std::string op = c["op"];
  if (op == "conv") {
    ConvOptions o;
    o.strides = c["strides"].get<std::vector<int64_t>>();
    o.padding = parse_padding(c["padding"]);
    o.input_dilation = c["input_dilation"].get<std::vector<int64_t>>();
    o.kernel_dilation = c["kernel_dilation"].get<std::vector<int64_t>>();
    o.feature_group_count = c["feature_group_count"];
    o.channels = parse_layout(c);
    return conv(in[0], in[1], in.size() > 2 ? in[2] : Tensor(), o);
  }
  if (op == "global_avg_pool") return global_avg_pool(in[0], c["keep_axes"], parse_layout(c));
  if (op == "global_max_pool") return global_max_pool(in[0], c["keep_axes"], parse_layout(c));
  PoolOptions o;
  o.kernel_size = c["kernel_size"].get<std::vector<int64_t>>();
  o.strides = c["strides"].get<std::vector<int64_t>>();
  o.padding = parse_padding(c["padding"]);
  o.dilations = c["dilations"].get<std::vector<int64_t>>();
  o.channels = parse_layout(c);
  return op == "max_pool" ? max_pool(in[0], o) : avg_pool(in[0], o);
}

std::vector<Tensor> case_inputs(const json& c, TensorOptions o) {
  std::vector<Tensor> in{Tensor::from_vector(c["x_shape"].get<Shape>(), c["x"].get<std::vector<double>>(), o)};
  if (c["op"] == "conv") {
    in.push_back(Tensor::from_vector(c["kernel_shape"].get<Shape>(), c["kernel"].get<std::vector<double>>(), o));
    if (c.contains("bias")) {
      const auto b = c["bias"].get<std::vector<double>>();
      in.push_back(Tensor::from_vector({static_cast<int64_t>(b.size())}, b, o));
    }
  }
  for (Tensor& t : in) t.set_requires_grad();
  return in;
}

TEST(Conv, MatchesPyTorchOnEveryDeviceInF64AndF32) {
  const json cases = load_cases();
  ASSERT_EQ(cases.size(), 26u) << "tests/fixtures/conv.json: regenerate with make_conv_fixtures.py";
  for (const axon::testing::ConvPath path : axon::testing::conv_paths()) {
    const axon::testing::UseConvPath use(path);
    for (const json& c : cases) {
      const std::string name = c["name"];
      for (Device device : devices())
        for (DType dtype : {DType::f64, DType::f32}) {
          const std::string where = name + " " + dtype_name(dtype) + " on " + device.str() + " (" + path.name() + ")";
          const TensorOptions o{dtype, device};
          std::vector<Tensor> in = case_inputs(c, o);
          Tensor y = run_case(c, in);
          ASSERT_EQ(y.shape(), c["output_shape"].get<Shape>()) << where;
          sum(mul(y, Tensor::from_vector(y.shape(), c["weights"].get<std::vector<double>>(), o))).backward();
          const double tol = dtype == DType::f64 ? 1e-10 : 2e-5;
          expect_close(y.to_double_vector(), c["output"].get<std::vector<double>>(), tol, tol, where + " output");
          expect_close(in[0].grad().to_double_vector(), c["grad_x"].get<std::vector<double>>(), tol, tol,
                       where + " grad x");
          if (in.size() > 1)
            expect_close(in[1].grad().to_double_vector(), c["grad_kernel"].get<std::vector<double>>(), tol, tol,
                         where + " grad kernel");
          if (in.size() > 2)
            expect_close(in[2].grad().to_double_vector(), c["grad_bias"].get<std::vector<double>>(), tol, tol,
                         where + " grad bias");
        }
    }
  }
}

// Every case's f64 gradient against central differences of sum(output · weights), for every
// input (the pooling inputs are distinct values, so each max window has one maximum).
TEST(Conv, F64GradientsMatchFiniteDifferences) {
  const json cases = load_cases();
  ASSERT_FALSE(cases.empty());
  for (const json& c : cases) {
    const std::string name = c["name"];
    const TensorOptions o{DType::f64, Device::cpu()};
    std::vector<Tensor> in = case_inputs(c, o);
    const Tensor w = Tensor::from_vector(c["output_shape"].get<Shape>(), c["weights"].get<std::vector<double>>(), o);
    expect_f64_gradients_match([&] { return sum(mul(run_case(c, in), w)); }, in, name);
  }
}

TEST(Conv, Bf16FollowsF32) {
  // A 2-d conv and a pool in bf16 on every device: the GEMM accumulates in f32, one rounding.
  for (Device device : devices()) {
    Generator gen(3);
    Tensor x = normal({2, 6, 6, 4}, 0.0f, 1.0f, gen);
    Tensor k = mul_scalar(normal({3, 3, 4, 8}, 0.0f, 1.0f, gen), 0.2f);
    ConvOptions o;
    o.padding = Padding::same();
    const std::vector<double> want = max_pool(conv(x, k, Tensor(), o), {.kernel_size = {2}}).to_double_vector();
    const TensorOptions b{DType::bf16, device};
    const std::vector<double> got =
        max_pool(conv(x.to(b.dtype).to(device), k.to(b.dtype).to(device), Tensor(), o), {.kernel_size = {2}})
            .to_double_vector();
    expect_close(got, want, 3e-2, 3e-2, "bf16 conv + max_pool on " + device.str());
  }
}

TEST(Conv, OneDnnAgreesWithIm2colGemmAndAccumulatesGradients) {
  // Shapes the fixtures are too small for (the cnn's layers with the blocked layouts oneDNN picks
  // for 32 and 64 channels, groups, strides, dilation, 1-d and 3-d), f32, both CPU paths. The
  // kernel and bias are used twice, so their second gradient is added to the first (oneDNN's
  // accumulating reorder), and x's gradient sums two backward-data results.
  if (!onednn_available()) GTEST_SKIP() << "Axon was built without oneDNN (libdnnl-dev): only im2col + GEMM exists";
  struct Case {
    Shape x, k;
    ConvOptions o;
  };
  std::vector<Case> cases{
      {{3, 28, 28, 1}, {3, 3, 1, 32}, {.padding = Padding::same()}},
      {{3, 14, 14, 32}, {3, 3, 32, 64}, {.padding = Padding::same()}},
      {{2, 13, 11, 16}, {3, 2, 16, 24}, {.strides = {2, 1}, .padding = Padding::valid()}},
      {{2, 12, 12, 8}, {3, 3, 4, 20}, {.padding = Padding::explicit_pairs({{2, 0}, {1, 3}}), .kernel_dilation = {2, 1},
                                       .feature_group_count = 2}},
      {{2, 12, 12, 16}, {3, 3, 1, 16}, {.padding = Padding::same(), .feature_group_count = 16}},  // depthwise
      {{4, 50, 7}, {5, 7, 9}, {.strides = {3}, .padding = Padding::same()}},
      {{2, 5, 6, 7, 3}, {2, 3, 2, 3, 5}, {.padding = Padding::same()}},
      {{2, 9, 9, 8}, {1, 1, 8, 16}, {.strides = {2}}},  // a 1×1, stride-2 shortcut: gaps between windows
  };
  const int64_t calls_before = onednn_conv_calls();
  for (const Case& c : cases) {
    const std::string where = fmt::format("x {} kernel {} ({})", shape_str(c.x), shape_str(c.k), conv_options_str(c.o));
    std::vector<std::vector<double>> got[2];
    for (const axon::testing::ConvPath path : axon::testing::conv_paths()) {
      const axon::testing::UseConvPath use(path);
      Generator gen(7);
      Tensor x = normal(c.x, 0.0f, 1.0f, gen), k = mul_scalar(normal(c.k, 0.0f, 1.0f, gen), 0.2f);
      Tensor b = normal({c.k.back()}, 0.0f, 1.0f, gen);
      for (Tensor* t : {&x, &k, &b}) t->set_requires_grad();
      Tensor y = conv(x, k, b, c.o);
      Tensor w = normal(y.shape(), 0.0f, 1.0f, gen);
      sum(add(mul(y, w), mul(conv(x, k, b, c.o), mul_scalar(w, 0.5f)))).backward();
      got[path.onednn ? 0 : 1] = {y.to_double_vector(), x.grad().to_double_vector(), k.grad().to_double_vector(),
                                  b.grad().to_double_vector()};
    }
    const char* names[] = {"output", "grad x", "grad kernel", "grad bias"};
    for (int i = 0; i < 4; ++i) expect_close(got[0][i], got[1][i], 1e-4, 1e-4, where + " " + names[i]);
  }
  // Per case: two forward, two backward-data and two backward-weights passes ran on oneDNN.
  EXPECT_EQ(onednn_conv_calls() - calls_before, static_cast<int64_t>(6 * cases.size()));
}

TEST(Conv, OneDnnComputesOnlyTheGradientsAsked) {
  // A frozen kernel with a trainable bias (the bias gradient alone, without oneDNN's
  // backward-weights pass), and an input gradient alone (a frozen layer inside a network), against
  // im2col + GEMM.
  if (!onednn_available()) GTEST_SKIP() << "Axon was built without oneDNN (libdnnl-dev): only im2col + GEMM exists";
  const ConvOptions o{.padding = Padding::same()};
  for (int which = 0; which < 2; ++which) {
    std::vector<double> got[2];
    for (const axon::testing::ConvPath path : axon::testing::conv_paths()) {
      const axon::testing::UseConvPath use(path);
      Generator gen(5);
      Tensor x = normal({2, 7, 7, 16}, 0.0f, 1.0f, gen), k = normal({3, 3, 16, 24}, 0.0f, 0.2f, gen);
      Tensor b = normal({24}, 0.0f, 1.0f, gen);
      Tensor& learns = which == 0 ? b : x;
      learns.set_requires_grad();
      Tensor y = conv(x, k, b, o);
      sum(mul(y, normal(y.shape(), 0.0f, 1.0f, gen))).backward();
      EXPECT_FALSE(k.grad().defined());
      got[path.onednn ? 0 : 1] = learns.grad().to_double_vector();
    }
    expect_close(got[0], got[1], 1e-4, 1e-4, which == 0 ? "bias gradient alone" : "input gradient alone");
  }
}

// oneDNN runs on OpenMP threads, which a forked child does not have (GNU libgomp has no fork
// handler): a child must still compute the same convolution, not wait for them.
TEST(Conv, AForkedChildRunsTheConvolution) {
  const int threads_before = num_threads();
  set_num_threads(2);
  Generator gen(12);
  Tensor x = normal({16, 14, 14, 32}, 0.0f, 1.0f, gen), k = normal({3, 3, 32, 64}, 0.0f, 0.1f, gen);
  const ConvOptions o{.padding = Padding::same()};
  const std::vector<float> want = conv(x, k, Tensor(), o).to_vector();  // starts the parent's threads
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    alarm(20);  // a hang ends the child with SIGALRM, which the parent reports
    // One thread may sum in another order than two: the same values within f32 rounding.
    const std::vector<float> got = conv(x, k, Tensor(), o).to_vector();
    bool same = got.size() == want.size();
    for (size_t i = 0; same && i < got.size(); ++i) same = std::abs(got[i] - want[i]) <= 1e-4f * (1.0f + std::abs(want[i]));
    _exit(same ? 0 : 1);
  }
  set_num_threads(threads_before);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status)) << "the child was killed by signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0) << "the child computed different values";
}

// After a convolution on two threads, f32 GEMMs run on oneDNN's OpenMP team (dnnl_sgemm) instead
// of OpenBLAS: matmul's forward and backward (the NN, NT and TN products), with b used twice so
// its gradient's second product accumulates (beta = 1), against f64 (OpenBLAS). With oneDNN turned
// off, GEMMs go back to OpenBLAS.
TEST(Conv, GemmsAfterAConvolutionRunOnOneDnnAndMatchF64) {
  if (!onednn_available()) GTEST_SKIP() << "Axon was built without oneDNN (libdnnl-dev)";
  const int threads_before = num_threads();
  set_num_threads(2);
  Generator gen(8);
  (void)conv(normal({4, 9, 9, 8}, 0.0f, 1.0f, gen), normal({3, 3, 8, 16}, 0.0f, 1.0f, gen), Tensor());  // starts the team
  const int64_t before = onednn_gemm_calls();
  Tensor a = normal({37, 53}, 0.0f, 1.0f, gen), a2 = normal({37, 53}, 0.0f, 1.0f, gen), b = normal({53, 29}, 0.0f, 1.0f, gen);
  Tensor w = normal({37, 29}, 0.0f, 1.0f, gen);
  auto run = [&](DType dtype) {
    Tensor x = a.to(dtype).detach(), x2 = a2.to(dtype).detach(), y = b.to(dtype).detach();
    x.set_requires_grad();
    y.set_requires_grad();
    Tensor out = add(matmul(x, y), mul_scalar(matmul(x2, y), 0.5f));
    sum(mul(out, w.to(dtype))).backward();
    return std::vector<std::vector<double>>{out.to_double_vector(), x.grad().to_double_vector(), y.grad().to_double_vector()};
  };
  const auto got = run(DType::f32);
  const int64_t ran = onednn_gemm_calls() - before;
  const auto want = run(DType::f64);
  {
    const axon::testing::UseConvPath off({false});
    const int64_t still = onednn_gemm_calls();
    (void)run(DType::f32);
    EXPECT_EQ(onednn_gemm_calls(), still) << "set_onednn_enabled(false) must send GEMMs back to OpenBLAS";
  }
  set_num_threads(threads_before);
  EXPECT_GE(ran, 5) << "two forward products and their gradients should have run on oneDNN";
  const char* names[] = {"matmul", "grad a", "grad b (accumulated)"};
  for (int j = 0; j < 3; ++j) expect_close(got[j], want[j], 1e-5, 1e-4, names[j]);
}

TEST(Conv, BadOptionsAndShapesAreErrorsNamingThem) {
  Tensor x = Tensor::zeros({2, 5, 5, 4});
  // Kernel larger than the padded input.
  std::string e = error_of([&] { conv(x, Tensor::zeros({6, 6, 4, 3}), Tensor()); });
  EXPECT_THAT(e, AllOf(HasSubstr("conv"), HasSubstr("kernel size 6"), HasSubstr("padded input size 5"),
                       HasSubstr("{2, 5, 5, 4}"), HasSubstr("padding valid")));
  // Groups that do not divide the channels.
  ConvOptions g3;
  g3.feature_group_count = 3;
  e = error_of([&] { conv(x, Tensor::zeros({3, 3, 1, 3}), Tensor(), g3); });
  EXPECT_THAT(e, AllOf(HasSubstr("feature_group_count 3"), HasSubstr("input channels 4")));
  // Kernel channels that do not match.
  e = error_of([&] { conv(x, Tensor::zeros({3, 3, 2, 3}), Tensor()); });
  EXPECT_THAT(e, AllOf(HasSubstr("{3, 3, 2, 3}"), HasSubstr("has 4 channels")));
  // Bad strides, bias shape, rank.
  ConvOptions s0;
  s0.strides = {0};
  EXPECT_THAT(error_of([&] { conv(x, Tensor::zeros({3, 3, 4, 3}), Tensor(), s0); }), HasSubstr("strides must be ≥ 1"));
  EXPECT_THAT(error_of([&] { conv(x, Tensor::zeros({3, 3, 4, 3}), Tensor::zeros({4})); }), HasSubstr("bias of shape {4}"));
  EXPECT_THAT(error_of([&] { conv(Tensor::zeros({2, 5}), Tensor::zeros({3, 5, 3}), Tensor()); }), HasSubstr("rank 3 to 5"));
  EXPECT_THAT(error_of([&] { max_pool(x, {.kernel_size = {6}}); }), AllOf(HasSubstr("max_pool"), HasSubstr("kernel size 6")));
  EXPECT_THAT(error_of([&] { avg_pool(x, {.kernel_size = {2, 2, 2}}); }), HasSubstr("kernel_size has 3 values"));
  EXPECT_THAT(error_of([&] { max_pool(x, {}); }), HasSubstr("kernel_size is required"));
}

TEST(ConvLayers, BadOptionsAreRejectedWhenTheModelIsBuilt) {
  // Options alone: when the builder is called.
  EXPECT_THAT(error_of([] { conv(0); }), HasSubstr("units must be positive"));
  EXPECT_THAT(error_of([] { conv(8, {.kernel_size = {3}, .strides = {0}}); }),
              AllOf(HasSubstr("conv (8 units, kernel_size [3]"), HasSubstr("strides must be positive")));
  EXPECT_THAT(error_of([] { conv(8, {.feature_group_size = 3}); }), HasSubstr("feature_group_size 3"));
  EXPECT_THAT(error_of([] { max_pool({.kernel_size = {2}, .strides = {-1}}); }), HasSubstr("max_pool"));
  // Options against the input: when the model is planned, naming the layer, options and shapes.
  Model too_big = input({-1, 4, 4, 1}) | conv(8, {.kernel_size = {5}});
  EXPECT_THAT(error_of([&] { init(too_big, 0); }),
              AllOf(HasSubstr("conv_2"), HasSubstr("kernel_size [5]"), HasSubstr("kernel size 5"),
                    HasSubstr("padded input size 4"), HasSubstr("{-1, 4, 4, 1}")));
  Model groups = input({-1, 8, 8, 3}) | conv(4, {.kernel_size = {3}, .feature_group_size = 2});
  EXPECT_THAT(error_of([&] { init(groups, 0); }),
              AllOf(HasSubstr("conv_2"), HasSubstr("feature_group_size 2"), HasSubstr("3 input channels")));
  Model pool = input({-1, 3, 3, 2}) | max_pool({.kernel_size = {4}});
  EXPECT_THAT(error_of([&] { init(pool, 0); }), AllOf(HasSubstr("max_pool"), HasSubstr("kernel_size [4]"), HasSubstr("{-1, 3, 3, 2}")));
  Model flat = input({-1, 16}) | conv(4, {.kernel_size = {3}});
  EXPECT_THAT(error_of([&] { init(flat, 0); }), AllOf(HasSubstr("conv_2"), HasSubstr("rank 3 to 5"), HasSubstr("{-1, 16}")));
}

TEST(ConvLayers, TheCnnPlansItsShapesAndParameters) {
  Model cnn = input({-1, 28, 28, 1}) | conv(32, {.kernel_size = {3}, .activation = Activation::relu}) |
              max_pool({.kernel_size = {2}}) | conv(64, {.kernel_size = {3}, .activation = Activation::relu}) |
              max_pool({.kernel_size = {2}}) | flatten() | dense(128, Activation::relu) | dense(10);
  ModelPlan p = plan(cnn);
  std::vector<Shape> shapes;
  for (const PlannedLayer& l : p.layers) shapes.push_back(l.output_shape);
  EXPECT_EQ(shapes, (std::vector<Shape>{{-1, 28, 28, 1}, {-1, 26, 26, 32}, {-1, 26, 26, 32}, {-1, 13, 13, 32},
                                        {-1, 11, 11, 64}, {-1, 11, 11, 64}, {-1, 5, 5, 64}, {-1, 1600}, {-1, 128},
                                        {-1, 128}, {-1, 10}}));
  Parameters params = init(cnn, 0);
  EXPECT_EQ(params["conv_2.kernel"].shape(), (Shape{3, 3, 1, 32}));
  EXPECT_EQ(params["conv_5.kernel"].shape(), (Shape{3, 3, 32, 64}));
  EXPECT_EQ(params.count(), 320u + 18496u + 204928u + 1290u);
  Generator gen(1);
  Tensor y = predict(cnn, params, normal({3, 28, 28, 1}, 0.0f, 1.0f, gen));
  EXPECT_EQ(y.shape(), (Shape{3, 10}));
  EXPECT_THAT(summary(cnn), AllOf(HasSubstr("conv_2"), HasSubstr("max_pool_4"), HasSubstr("{nil, 5, 5, 64}")));
}

TEST(ConvLayers, LayersMatchTheFunctions) {
  // A channels-first conv layer with every option, then pools: the layer runs the function.
  Model m = input({-1, 2, 9, 8}) |
            conv(4, {.kernel_size = {3, 2}, .strides = {2, 1}, .padding = Padding::same(), .kernel_dilation = {1, 2},
                     .feature_group_size = 2, .channels = ChannelsLayout::first,
                     .bias_initializer = initializers::normal()}) |
            avg_pool({.kernel_size = {2}, .channels = ChannelsLayout::first}) |
            global_max_pool({.keep_axes = true, .channels = ChannelsLayout::first});
  Parameters params = init(m, 7);
  Generator gen(2);
  Tensor x = normal({3, 2, 9, 8}, 0.0f, 1.0f, gen);
  ConvOptions o{.strides = {2, 1}, .padding = Padding::same(), .kernel_dilation = {1, 2}, .feature_group_count = 2,
                .channels = ChannelsLayout::first};
  Tensor want = global_max_pool(
      avg_pool(conv(x, params["conv_2.kernel"], params["conv_2.bias"], o), {.kernel_size = {2}, .channels = ChannelsLayout::first}),
      true, ChannelsLayout::first);
  EXPECT_EQ(predict(m, params, x).to_vector(), want.to_vector());
  EXPECT_EQ(want.shape(), (Shape{3, 4, 1, 1}));
  EXPECT_EQ(params["conv_2.kernel"].shape(), (Shape{3, 2, 1, 4}));
}

TEST(ConvLayers, ATinyCnnLearns) {
  // Two classes told apart by a vertical or horizontal bar: a few Adam-free SGD steps on a
  // conv → relu → global_avg_pool → dense model must bring the loss well down.
  const int64_t n = 16;
  std::vector<float> xs(n * 6 * 6, 0.0f);
  std::vector<int32_t> ys(n);
  for (int64_t i = 0; i < n; ++i) {
    ys[i] = static_cast<int32_t>(i % 2);
    const int64_t at = 1 + (i / 2) % 4;
    for (int64_t t = 0; t < 6; ++t) xs[i * 36 + (ys[i] ? at * 6 + t : t * 6 + at)] = 1.0f;
  }
  Tensor x = Tensor::from_vector({n, 6, 6, 1}, xs);
  Tensor y = Tensor::from_vector({n}, ys, {DType::i32, Device::cpu()});
  Model m = input({-1, 6, 6, 1}) | conv(4, {.kernel_size = {3}, .padding = Padding::same(), .activation = Activation::relu}) |
            global_avg_pool() | dense(2);
  Parameters p = init(m, 3);
  auto loss_now = [&] {
    Tensor logits = forward(m, p, x, {});
    return softmax_cross_entropy(logits, y);
  };
  const double first = loss_now().item_double();
  for (int step = 0; step < 200; ++step) {
    p.zero_grad();
    loss_now().backward();
    std::span<float> v = p.values();
    std::span<const float> g = p.grads();
    for (size_t i = 0; i < v.size(); ++i) v[i] -= 0.5f * g[i];
  }
  const double last = loss_now().item_double();
  EXPECT_LT(last, 0.25 * first) << "first " << first << ", last " << last;
}

}  // namespace
}  // namespace axon

namespace axon {
namespace {

TEST(ConvLayers, DepthwiseConvIsAGroupedConvWithOneGroupPerChannel) {
  Model m = input({-1, 7, 6, 3}) | depthwise_conv(2, {.kernel_size = {3}, .padding = Padding::same(),
                                                     .bias_initializer = initializers::normal()});
  Parameters p = init(m, 5);
  EXPECT_EQ(p["depthwise_conv_2.kernel"].shape(), (Shape{3, 3, 1, 6}));
  EXPECT_EQ(p["depthwise_conv_2.bias"].shape(), (Shape{6}));
  Generator gen(4);
  Tensor x = normal({2, 7, 6, 3}, 0.0f, 1.0f, gen);
  ConvOptions o{.padding = Padding::same(), .feature_group_count = 3};
  EXPECT_EQ(predict(m, p, x).to_vector(),
            conv(x, p["depthwise_conv_2.kernel"], p["depthwise_conv_2.bias"], o).to_vector());
  EXPECT_THAT(error_of([] { depthwise_conv(0); }), HasSubstr("channel_multiplier must be positive"));
  EXPECT_THAT(error_of([] { depthwise_conv(1, {.feature_group_size = 2}); }), HasSubstr("feature_group_size 2"));
}

}  // namespace
}  // namespace axon
