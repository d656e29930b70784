// conv_transpose, lp_pool, blur_pool, adaptive pooling, global_lp_pool and bilinear
// (axon/conv_ops.h, axon/bilinear.h) and their layers, with separable_conv2d/3d: forward values
// and gradients against PyTorch (tests/fixtures/conv_extra.json, made by
// make_conv_extra_fixtures.py) on every device in f64 and f32, f64 gradients against central
// finite differences, the seed's own documented examples, option and shape errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "../support/compare.h"
#include "../support/conv_paths.h"
#include "../support/gradcheck.h"
#include "axon/autograd.h"
#include "axon/bilinear.h"
#include "axon/conv_ops.h"
#include "axon/model.h"
#include "axon/ops.h"
#include "axon/random.h"

namespace axon {
namespace {

using nlohmann::json;
using ::testing::AllOf;
using ::testing::HasSubstr;

using axon::testing::devices;
using axon::testing::error_of;
using axon::testing::expect_close;
using axon::testing::load_fixture;
using axon::testing::parse_padding;
using axon::testing::expect_f64_gradients_match;

json load_cases() { return load_fixture("conv_extra.json")["cases"]; }

ChannelsLayout layout(const json& c) {
  return c.value("channels", "last") == "first" ? ChannelsLayout::first : ChannelsLayout::last;
}

// The tensors a case has, in this order.
const char* const kInputs[] = {"x", "x2", "kernel", "bias"};

Tensor run_case(const json& c, const std::vector<Tensor>& in) {
  const std::string op = c["op"];
  if (op == "conv_transpose") {
    ConvTransposeOptions o{.strides = c["strides"].get<std::vector<int64_t>>(),
                           .padding = parse_padding(c["padding"]),
                           .kernel_dilation = c["kernel_dilation"].get<std::vector<int64_t>>(),
                           .channels = layout(c)};
    return conv_transpose(in[0], in[1], in.size() > 2 ? in[2] : Tensor(), o);
  }
  if (op == "lp_pool") {
    PoolOptions o{.kernel_size = c["kernel_size"].get<std::vector<int64_t>>(),
                  .strides = c["strides"].get<std::vector<int64_t>>(),
                  .padding = parse_padding(c["padding"]),
                  .channels = layout(c)};
    return lp_pool(in[0], o, c["norm"].get<double>());
  }
  if (op == "blur_pool") return blur_pool(in[0], layout(c));
  if (op == "global_lp_pool") return global_lp_pool(in[0], c["norm"].get<double>(), c["keep_axes"], layout(c));
  if (op == "bilinear") return bilinear(in[0], in[1], in[2], in.size() > 3 ? in[3] : Tensor());
  const auto out = c["output_size"].get<std::vector<int64_t>>();
  if (op == "adaptive_avg_pool") return adaptive_avg_pool(in[0], out, layout(c));
  if (op == "adaptive_max_pool") return adaptive_max_pool(in[0], out, layout(c));
  return adaptive_lp_pool(in[0], out, c["norm"].get<double>(), layout(c));
}

std::vector<Tensor> case_inputs(const json& c, TensorOptions o, std::vector<std::string>* names = nullptr) {
  std::vector<Tensor> in;
  for (const char* n : kInputs) {
    if (!c.contains(n)) continue;
    in.push_back(Tensor::from_vector(c[std::string(n) + "_shape"].get<Shape>(), c[n].get<std::vector<double>>(), o));
    in.back().set_requires_grad();
    if (names) names->push_back(n);
  }
  return in;
}

TEST(ConvExtra, MatchesPyTorchOnEveryDeviceInF64AndF32) {
  const json cases = load_cases();
  ASSERT_EQ(cases.size(), 25u) << "tests/fixtures/conv_extra.json: regenerate with make_conv_extra_fixtures.py";
  for (const axon::testing::ConvPath path : axon::testing::conv_paths()) {
    const axon::testing::UseConvPath use(path);
    for (const json& c : cases) {
      for (Device device : devices())
        for (DType dtype : {DType::f64, DType::f32}) {
          const std::string where =
              c["name"].get<std::string>() + " " + dtype_name(dtype) + " on " + device.str() + " (" + path.name() + ")";
          const TensorOptions o{dtype, device};
          std::vector<std::string> names;
          std::vector<Tensor> in = case_inputs(c, o, &names);
          Tensor y = run_case(c, in);
          ASSERT_EQ(y.shape(), c["output_shape"].get<Shape>()) << where;
          sum(mul(y, Tensor::from_vector(y.shape(), c["weights"].get<std::vector<double>>(), o))).backward();
          const double tol = dtype == DType::f64 ? 1e-10 : 3e-5;
          expect_close(y.to_double_vector(), c["output"].get<std::vector<double>>(), tol, tol, where + " output");
          for (size_t i = 0; i < in.size(); ++i)
            expect_close(in[i].grad().to_double_vector(), c["grad_" + names[i]].get<std::vector<double>>(), tol, tol,
                         where + " grad " + names[i]);
        }
    }
  }
}

// Every case's f64 gradient against central differences of sum(output · weights).
TEST(ConvExtra, F64GradientsMatchFiniteDifferences) {
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

Tensor iota(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = static_cast<float>(i);
  return Tensor::from_vector(shape, v);
}

// The examples in the seed's documentation (lib/axon/layers.ex), which fix its conventions
// independently of PyTorch: conv_transpose without kernel flipping, bilinear's kernel layout.
TEST(ConvExtra, TheSeedsDocumentedExamples) {
  // conv_transpose(iota {1, 3, 3}, iota {6, 3, 2} (the seed's {out, in, k} for channels first),
  // bias 1.0, channels: :first). Axon's kernel is {k, in, out}: permute.
  Tensor ct = conv_transpose(iota({1, 3, 3}), permute(iota({6, 3, 2}), {2, 1, 0}), Tensor::full({6}, 1.0),
                             {.channels = ChannelsLayout::first});
  EXPECT_EQ(ct.shape(), (Shape{1, 6, 4}));
  EXPECT_EQ(ct.to_vector(), (std::vector<float>{40, 79, 94, 43, 94, 205, 256, 133, 148, 331, 418, 223,
                                                202, 457, 580, 313, 256, 583, 742, 403, 310, 709, 904, 493}));
  // Axon.Layers.conv_transpose tests: iota {1, 1, 4} with kernel iota {3, 1, 2}, valid.
  Tensor ct2 = conv_transpose(iota({1, 1, 4}), permute(iota({3, 1, 2}), {2, 1, 0}), Tensor(),
                              {.channels = ChannelsLayout::first});
  EXPECT_EQ(ct2.to_vector(), (std::vector<float>{0, 1, 2, 3, 0, 0, 3, 8, 13, 6, 0, 5, 14, 23, 12}));
  // bilinear(iota {3, 2}, iota {3, 4}, iota {1, 2, 4}, 1.0) = [[39], [455], [1319]].
  EXPECT_EQ(bilinear(iota({3, 2}), iota({3, 4}), iota({1, 2, 4}), Tensor::full({1}, 1.0)).to_vector(),
            (std::vector<float>{39, 455, 1319}));
  // global_lp_pool(iota {3, 2, 3}, norm: 1, channels: :first) = [[3, 12], [21, 30], [39, 48]].
  EXPECT_EQ(global_lp_pool(iota({3, 2, 3}), 1.0, false, ChannelsLayout::first).to_vector(),
            (std::vector<float>{3, 12, 21, 30, 39, 48}));
  // lp_pool of the documented 1×3×3 tensor, kernel_size 2, norm 2, channels first.
  Tensor t = Tensor::from_vector({1, 3, 3}, std::vector<float>{0.9450f, 0.4684f, 1.8146f, 1.2663f, 0.4354f, -0.0781f,
                                                                 -0.4759f, 0.3251f, 0.8742f});
  expect_close(lp_pool(t, {.kernel_size = {2}, .channels = ChannelsLayout::first}, 2.0).to_double_vector(),
               {1.0547149181365967, 1.3390626907348633, 0.5763426423072815}, 1e-6, 1e-6, "lp_pool doc example");
}

// The direct (GEMM + col2im) path against the seed's definition, conv over the stride-dilated
// input with conv_transpose_padding, on bigger random cases: values and every gradient, f32 and
// bf16 on every device.
TEST(ConvExtra, ConvTransposeIsTheSeedsDilatedConvolution) {
  struct Case {
    Shape x, k;
    ConvTransposeOptions o;
  };
  const std::vector<Case> cases = {
      {{3, 7, 6, 5}, {3, 3, 5, 4}, {.strides = {2}, .padding = Padding::same()}},
      {{2, 4, 9, 8}, {4, 2, 4, 3}, {.strides = {3, 2}, .kernel_dilation = {1, 2}, .channels = ChannelsLayout::first}},
      {{2, 5, 4, 3, 2}, {2, 3, 2, 2, 3}, {.strides = {1, 2, 2}, .padding = Padding::explicit_pairs({{2, 0}, {0, 3}, {1, 1}})}},
  };
  for (Device device : devices())
    for (DType dtype : {DType::f32, DType::bf16})
      for (const Case& c : cases) {
        Generator gen(11);
        auto make = [&](const Shape& s) {
          Tensor t = normal(s, 0.0f, 1.0f, gen).to(dtype).to(device);
          t.set_requires_grad();
          return t;
        };
        Tensor x = make(c.x), k = make(c.k), b = make({c.k.back()});
        Tensor x2 = x.detach(), k2 = k.detach(), b2 = b.detach();
        for (Tensor* t : {&x2, &k2, &b2}) t->set_requires_grad();
        Tensor y = conv_transpose(x, k, b, c.o);
        ConvOptions dil{.strides = {1}, .padding = Padding::explicit_pairs(conv_transpose_padding(c.k, c.o)),
                        .input_dilation = c.o.strides, .kernel_dilation = c.o.kernel_dilation, .channels = c.o.channels};
        Tensor want = conv(x2, k2, b2, dil);
        ASSERT_EQ(y.shape(), want.shape());
        Tensor w = normal(y.shape(), 0.0f, 1.0f, gen).to(dtype).to(device);
        sum(mul(y, w)).backward();
        sum(mul(want, w)).backward();
        const double tol = dtype == DType::bf16 ? 5e-2 : 1e-4;
        const std::string where = std::string(dtype_name(dtype)) + " on " + device.str() + " x " + shape_str(c.x);
        expect_close(y.to_double_vector(), want.to_double_vector(), tol, tol, where + " output");
        expect_close(x.grad().to_double_vector(), x2.grad().to_double_vector(), tol, tol, where + " grad x");
        expect_close(k.grad().to_double_vector(), k2.grad().to_double_vector(), tol, tol * 4, where + " grad kernel");
        expect_close(b.grad().to_double_vector(), b2.grad().to_double_vector(), tol, tol * 4, where + " grad bias");
      }
}

TEST(ConvExtra, BadOptionsAndShapesAreErrorsNamingThem) {
  Tensor x = Tensor::zeros({2, 5, 5, 4});
  EXPECT_THAT(error_of([&] { conv_transpose(x, Tensor::zeros({3, 3, 2, 3}), Tensor(), {.strides = {2}}); }),
              AllOf(HasSubstr("conv_transpose (strides [2], padding valid"), HasSubstr("{3, 3, 2, 3}"),
                    HasSubstr("{2, 5, 5, 4}")));
  EXPECT_THAT(error_of([&] { conv_transpose(x, Tensor::zeros({3, 3, 4, 3}), Tensor(), {.strides = {0}}); }),
              AllOf(HasSubstr("conv_transpose"), HasSubstr("strides must be ≥ 1")));
  EXPECT_THAT(error_of([&] { conv_transpose(x, Tensor::zeros({3, 3, 4, 3}), Tensor(), {.strides = {1, 2, 1}}); }),
              AllOf(HasSubstr("strides has 3 values"), HasSubstr("input of shape {2, 5, 5, 4} has 2 spatial dims")));
  EXPECT_THAT(error_of([&] { conv_transpose(x, Tensor::zeros({3, 4, 3}), Tensor()); }),
              AllOf(HasSubstr("kernel of shape {3, 4, 3}"), HasSubstr("2 spatial dims")));
  EXPECT_THAT(error_of([&] { conv_transpose(x, Tensor::zeros({3, 3, 4, 3}), Tensor::zeros({2})); }),
              AllOf(HasSubstr("conv_transpose"), HasSubstr("bias of shape {2}")));
  EXPECT_THAT(error_of([&] { lp_pool(x, {.kernel_size = {6}}); }),
              AllOf(HasSubstr("lp_pool (kernel_size [6]"), HasSubstr("norm 2"), HasSubstr("padded input size 5")));
  EXPECT_THAT(error_of([&] { lp_pool(x, {.kernel_size = {2}}, 0.0); }), HasSubstr("norm must be positive"));
  EXPECT_THAT(error_of([&] { adaptive_avg_pool(x, {6}); }),
              AllOf(HasSubstr("adaptive_avg_pool (output_size [6]"), HasSubstr("larger than the input size 5"),
                    HasSubstr("{2, 5, 5, 4}")));
  EXPECT_THAT(error_of([&] { adaptive_max_pool(x, {2, 2, 2}); }), HasSubstr("output_size has 3 values"));
  EXPECT_THAT(error_of([&] { blur_pool(Tensor::zeros({2, 5, 4})); }), AllOf(HasSubstr("blur_pool"), HasSubstr("rank 4")));
  EXPECT_THAT(error_of([&] { bilinear(Tensor::zeros({2, 3}), Tensor::zeros({2, 4}), Tensor::zeros({2, 3, 5}), Tensor()); }),
              AllOf(HasSubstr("bilinear"), HasSubstr("{2, 3, 5}"), HasSubstr("{2, 4}")));
  EXPECT_THAT(error_of([&] { bilinear(Tensor::zeros({2, 3}), Tensor::zeros({3, 4}), Tensor::zeros({2, 3, 4}), Tensor()); }),
              HasSubstr("agree on every dim but the last"));
}

TEST(ConvExtraLayers, BadOptionsAreRejectedWhenTheModelIsBuilt) {
  EXPECT_THAT(error_of([] { conv_transpose(0); }), HasSubstr("units must be positive"));
  EXPECT_THAT(error_of([] { conv_transpose(4, {.kernel_size = {3}, .strides = {0}}); }),
              AllOf(HasSubstr("conv_transpose (4 units, kernel_size [3]"), HasSubstr("strides must be positive")));
  EXPECT_THAT(error_of([] { separable_conv2d(2, {.kernel_size = {3, 3, 3}}); }), HasSubstr("kernel_size needs 1 or 2"));
  EXPECT_THAT(error_of([] { separable_conv3d(2, {.feature_group_size = 2}); }), HasSubstr("feature_group_size 2"));
  EXPECT_THAT(error_of([] { lp_pool({.kernel_size = {2}}, -1.0); }), AllOf(HasSubstr("lp_pool"), HasSubstr("norm")));
  EXPECT_THAT(error_of([] { adaptive_avg_pool({.output_size = {0}}); }), HasSubstr("output_size must be positive"));
  EXPECT_THAT(error_of([] { global_lp_pool(0.0); }), HasSubstr("global_lp_pool (norm 0"));
  // Against the input, when the model is planned: the layer's name, options and the shape.
  Model too_big = input({-1, 2, 2, 3}) | conv_transpose(4, {.kernel_size = {3}, .padding = Padding::explicit_pairs({{0, 0}})});
  EXPECT_THAT(error_of([&] { init(too_big, 0); }),
              AllOf(HasSubstr("conv_transpose_2"), HasSubstr("kernel_size [3]"), HasSubstr("{-1, 2, 2, 3}")));
  Model sep = input({-1, 8, 8, 3}) | separable_conv3d(2, {.kernel_size = {3}});
  EXPECT_THAT(error_of([&] { init(sep, 0); }), AllOf(HasSubstr("separable_conv3d"), HasSubstr("rank 5")));
  Model ada = input({-1, 4, 4, 3}) | adaptive_max_pool({.output_size = {5}});
  EXPECT_THAT(error_of([&] { init(ada, 0); }),
              AllOf(HasSubstr("adaptive_max_pool_2"), HasSubstr("output_size [5]"), HasSubstr("{-1, 4, 4, 3}")));
  Model blur = input({-1, 4, 3}) | blur_pool();
  EXPECT_THAT(error_of([&] { init(blur, 0); }), AllOf(HasSubstr("blur_pool"), HasSubstr("rank 4")));
  Model bi = bilinear(input({-1, 3}), input({-1, 4, 2}), 5);
  EXPECT_THAT(error_of([&] { init(bi, 0); }), AllOf(HasSubstr("bilinear"), HasSubstr("{-1, 4, 2}")));
}

TEST(ConvExtraLayers, LayersMatchTheFunctions) {
  Generator gen(9);
  // conv_transpose, channels first, same padding, strides 2: upsamples 5×4 to 10×8.
  Model ct = input({-1, 2, 5, 4}) | conv_transpose(3, {.kernel_size = {3, 2}, .strides = {2}, .padding = Padding::same(),
                                                       .channels = ChannelsLayout::first,
                                                       .bias_initializer = initializers::normal()});
  Parameters p = init(ct, 1);
  EXPECT_EQ(p["conv_transpose_2.kernel"].shape(), (Shape{3, 2, 2, 3}));
  Tensor x = normal({2, 2, 5, 4}, 0.0f, 1.0f, gen);
  Tensor want = conv_transpose(x, p["conv_transpose_2.kernel"], p["conv_transpose_2.bias"],
                               {.strides = {2}, .padding = Padding::same(), .channels = ChannelsLayout::first});
  EXPECT_EQ(want.shape(), (Shape{2, 3, 10, 8}));
  EXPECT_EQ(predict(ct, p, x).to_vector(), want.to_vector());

  // separable_conv2d: the seed's two depthwise convolutions, one spatial dim each.
  Model sep = input({-1, 7, 6, 3}) | separable_conv2d(2, {.kernel_size = {3, 2}, .padding = Padding::same(),
                                                          .bias_initializer = initializers::normal()});
  Parameters ps = init(sep, 2);
  EXPECT_EQ(ps["separable_conv2d_2.kernel_1"].shape(), (Shape{3, 1, 1, 6}));
  EXPECT_EQ(ps["separable_conv2d_2.kernel_2"].shape(), (Shape{1, 2, 1, 6}));
  EXPECT_EQ(ps["separable_conv2d_2.bias_1"].shape(), (Shape{6}));
  EXPECT_EQ(ps["separable_conv2d_2.bias_2"].shape(), (Shape{6}));
  Tensor xs = normal({2, 7, 6, 3}, 0.0f, 1.0f, gen);
  Tensor y1 = conv(xs, ps["separable_conv2d_2.kernel_1"], ps["separable_conv2d_2.bias_1"],
                   {.padding = Padding::same(), .feature_group_count = 3});
  Tensor y2 = conv(y1, ps["separable_conv2d_2.kernel_2"], ps["separable_conv2d_2.bias_2"],
                   {.padding = Padding::same(), .feature_group_count = 6});
  EXPECT_EQ(predict(sep, ps, xs).to_vector(), y2.to_vector());
  EXPECT_EQ(y2.shape(), (Shape{2, 7, 6, 6}));

  // separable_conv3d, channels first, strides 2 applied by each of the three convolutions.
  Model sep3 = input({-1, 2, 9, 9, 9}) |
               separable_conv3d(1, {.kernel_size = {3}, .strides = {2}, .channels = ChannelsLayout::first});
  Parameters p3 = init(sep3, 3);
  EXPECT_EQ(p3["separable_conv3d_2.kernel_1"].shape(), (Shape{3, 1, 1, 1, 2}));
  EXPECT_EQ(p3["separable_conv3d_2.kernel_2"].shape(), (Shape{1, 3, 1, 1, 2}));
  EXPECT_EQ(p3["separable_conv3d_2.kernel_3"].shape(), (Shape{1, 1, 3, 1, 2}));
  EXPECT_EQ(plan(sep3).layers.back().output_shape, (Shape{-1, 2, 1, 1, 1}));
  Tensor x3 = normal({1, 2, 9, 9, 9}, 0.0f, 1.0f, gen);
  Tensor z = x3;
  for (int n = 1; n <= 3; ++n)
    z = conv(z, p3["separable_conv3d_2.kernel_" + std::to_string(n)], p3["separable_conv3d_2.bias_" + std::to_string(n)],
             {.strides = {2}, .feature_group_count = 2, .channels = ChannelsLayout::first});
  EXPECT_EQ(predict(sep3, p3, x3).to_vector(), z.to_vector());

  // The pools and bilinear.
  Tensor xp = normal({2, 8, 6, 3}, 0.0f, 1.0f, gen);
  Model pools = input({-1, 8, 6, 3}) | blur_pool() | lp_pool({.kernel_size = {2}}, 2.0) | adaptive_avg_pool({.output_size = {2}});
  EXPECT_EQ(predict(pools, init(pools, 0), xp).to_vector(),
            adaptive_avg_pool(lp_pool(blur_pool(xp), {.kernel_size = {2}}, 2.0), {2}).to_vector());
  Model g = input({-1, 8, 6, 3}) | adaptive_max_pool({.output_size = {4, 3}}) | global_lp_pool(2.0, {.keep_axes = true});
  EXPECT_EQ(plan(g).layers.back().output_shape, (Shape{-1, 1, 1, 3}));
  EXPECT_EQ(predict(g, init(g, 0), xp).to_vector(), global_lp_pool(adaptive_max_pool(xp, {4, 3}), 2.0, true).to_vector());
  Model a = input({-1, 3}), b = input({-1, 4});
  Model bl = bilinear(a, b, 5, {.activation = Activation::tanh, .bias_initializer = initializers::normal()});
  Parameters pb = init(bl, 4);
  EXPECT_EQ(pb["bilinear_3.kernel"].shape(), (Shape{5, 3, 4}));
  EXPECT_EQ(pb["bilinear_3.bias"].shape(), (Shape{5}));
  Tensor xa = normal({6, 3}, 0.0f, 1.0f, gen), xb = normal({6, 4}, 0.0f, 1.0f, gen);
  EXPECT_EQ(predict(bl, pb, std::vector<Tensor>{xa, xb}).to_vector(),
            tanh(bilinear(xa, xb, pb["bilinear_3.kernel"], pb["bilinear_3.bias"])).to_vector());
  EXPECT_THAT(summary(bl), AllOf(HasSubstr("bilinear_3"), HasSubstr("{nil, 5}")));
}

}  // namespace
}  // namespace axon
