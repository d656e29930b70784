// Embedding, scaled dot-product attention, multi-head attention, weight tying and the transformer
// block (axon/attention_ops.h, axon/attention_layers.h): values and gradients against PyTorch
// (tests/fixtures/attention.json, made by make_attention_fixtures.py) on every device in f64 and
// f32, f64 gradients against central finite differences, and bad input as errors naming the layer
// and shapes.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "../support/compare.h"
#include "../support/gradcheck.h"
#include "axon/attention_layers.h"
#include "axon/autograd.h"
#include "axon/model.h"
#include "axon/ops.h"
#include "axon/random.h"

namespace axon {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;
using axon::testing::devices;
using axon::testing::expect_close;
using axon::testing::expect_f64_gradients_match;

const json& fixtures() {
  static const json j = axon::testing::load_fixture("attention.json");
  return j;
}

Tensor from(const json& values, const json& shape, TensorOptions o, bool grad = false) {
  Tensor t = Tensor::from_vector(shape.get<Shape>(), values.get<std::vector<double>>(), o);
  if (grad) t.set_requires_grad(true);
  return t;
}

// ---- embedding ----

TEST(Embedding, MatchesPyTorchOnEveryDeviceInF64AndF32WithI32AndI64Ids) {
  const json& c = fixtures()["embedding"];
  ASSERT_FALSE(c.is_null()) << "tests/fixtures/attention.json: regenerate with make_attention_fixtures.py";
  for (Device device : devices())
    for (DType dtype : {DType::f64, DType::f32})
      for (DType id_type : {DType::i64, DType::i32}) {
        const std::string where = std::string(dtype_name(dtype)) + " ids " + dtype_name(id_type) + " on " + device.str();
        const TensorOptions o{dtype, device};
        Tensor ids = from(c["ids"], c["ids_shape"], {id_type, device});
        Tensor kernel = from(c["kernel"], c["kernel_shape"], o, true);
        Tensor y = embedding(ids, kernel);
        ASSERT_EQ(y.shape(), c["output_shape"].get<Shape>()) << where;
        sum(mul(y, from(c["weights"], c["output_shape"], o))).backward();
        const double tol = dtype == DType::f64 ? 1e-12 : 1e-5;
        expect_close(y.to_double_vector(), c["output"].get<std::vector<double>>(), tol, tol, where + " output");
        expect_close(kernel.grad().to_double_vector(), c["grad_kernel"].get<std::vector<double>>(), tol, tol,
                     where + " grad kernel (scatter-add)");
      }
}

TEST(Embedding, F64GradientMatchesFiniteDifferences) {
  const json& c = fixtures()["embedding"];
  const TensorOptions o{DType::f64, Device::cpu()};
  Tensor ids = from(c["ids"], c["ids_shape"], {DType::i64, Device::cpu()});
  Tensor kernel = from(c["kernel"], c["kernel_shape"], o, true);
  Tensor w = from(c["weights"], c["output_shape"], o);
  expect_f64_gradients_match([&] { return sum(mul(embedding(ids, kernel), w)); }, {kernel}, "embedding");
}

TEST(Embedding, BadIdsAreErrorsNamingTheIdAndVocabulary) {
  Tensor kernel = Tensor::zeros({5, 2});
  Tensor bad = Tensor::from_vector({3}, std::vector<int64_t>{0, 5, 1}, {DType::i64, Device::cpu()});
  try {
    embedding(bad, kernel);
    FAIL() << "no error";
  } catch (const std::out_of_range& e) {
    EXPECT_THAT(e.what(), HasSubstr("embedding: id 5 at flat position 1"));
    EXPECT_THAT(e.what(), HasSubstr("[0, 5)"));
  }
  Tensor negative = Tensor::from_vector({1}, std::vector<int32_t>{-1}, {DType::i32, Device::cpu()});
  EXPECT_THROW(embedding(negative, kernel), std::out_of_range);
  try {
    embedding(Tensor::zeros({2}), kernel);
    FAIL() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("ids must be i32 or i64, got f32"));
  }
  // Through a model, the error names the layer.
  Model m = input({-1, 3}) | embedding(5, 2);
  Parameters p = init(m, 0);
  try {
    predict(m, p, Tensor::from_vector({1, 3}, std::vector<int64_t>{0, 9, 1}, {DType::i64, Device::cpu()}));
    FAIL() << "no error";
  } catch (const std::out_of_range& e) {
    EXPECT_THAT(e.what(), HasSubstr("id 9"));
  }
}

// ---- scaled dot-product attention ----

std::vector<Tensor> sdpa_inputs(const json& c, TensorOptions o) {
  return {from(c["q"], c["q_shape"], o, true), from(c["k"], c["k_shape"], o, true), from(c["v"], c["v_shape"], o, true)};
}

AttentionOptions sdpa_options(const json& c, Device device) {
  AttentionOptions a;
  a.causal = c["causal"].get<bool>();
  if (c.contains("key_padding_mask")) {
    const Shape k = c["k_shape"].get<Shape>();
    a.key_padding_mask = Tensor::from_vector({k[0], k[2]}, c["key_padding_mask"].get<std::vector<int32_t>>(),
                                             {DType::i32, device});
  }
  return a;
}

TEST(Attention, MatchesPyTorchWithCausalAndPaddingMasksOnEveryDevice) {
  const json& cases = fixtures()["sdpa"];
  ASSERT_EQ(cases.size(), 5u) << "tests/fixtures/attention.json: regenerate with make_attention_fixtures.py";
  for (const json& c : cases)
    for (Device device : devices())
      for (DType dtype : {DType::f64, DType::f32}) {
        const std::string where = c["name"].get<std::string>() + " " + dtype_name(dtype) + " on " + device.str();
        const TensorOptions o{dtype, device};
        std::vector<Tensor> in = sdpa_inputs(c, o);
        Tensor y = scaled_dot_product_attention(in[0], in[1], in[2], sdpa_options(c, device));
        ASSERT_EQ(y.shape(), c["output_shape"].get<Shape>()) << where;
        sum(mul(y, from(c["weights"], c["output_shape"], o))).backward();
        const double tol = dtype == DType::f64 ? 1e-10 : 2e-5;
        expect_close(y.to_double_vector(), c["output"].get<std::vector<double>>(), tol, tol, where + " output");
        expect_close(in[0].grad().to_double_vector(), c["grad_q"].get<std::vector<double>>(), tol, tol, where + " grad q");
        expect_close(in[1].grad().to_double_vector(), c["grad_k"].get<std::vector<double>>(), tol, tol, where + " grad k");
        expect_close(in[2].grad().to_double_vector(), c["grad_v"].get<std::vector<double>>(), tol, tol, where + " grad v");
      }
}

TEST(Attention, F64GradientsMatchFiniteDifferences) {
  for (const json& c : fixtures()["sdpa"]) {
    if (c["q_shape"][2].get<int64_t>() > 10) continue;  // the small cases: each element costs two passes
    const TensorOptions o{DType::f64, Device::cpu()};
    std::vector<Tensor> in = sdpa_inputs(c, o);
    const AttentionOptions a = sdpa_options(c, Device::cpu());
    Tensor w = from(c["weights"], c["output_shape"], o);
    expect_f64_gradients_match([&] { return sum(mul(scaled_dot_product_attention(in[0], in[1], in[2], a), w)); }, in,
                        c["name"].get<std::string>());
  }
}

// Lengths beyond one CPU block on both axes, checked against the formula computed with the
// existing ops (matmul, softmax), causal: the blocked online softmax changes nothing.
TEST(Attention, BlockedKernelMatchesTheUnblockedFormulaOnLongSequences) {
  const int64_t L = 150, d = 8;
  Generator gen(3);
  Tensor q = uniform({1, 1, L, d}, -1, 1, gen), k = uniform({1, 1, L, d}, -1, 1, gen), v = uniform({1, 1, L, d}, -1, 1, gen);
  Tensor y = scaled_dot_product_attention(q, k, v, {.causal = true});
  Tensor s = mul_scalar(matmul(q.reshape({L, d}), transpose(k.reshape({L, d}))), 1.0f / std::sqrt(8.0f));
  std::vector<float> mask(static_cast<size_t>(L * L));
  for (int64_t i = 0; i < L; ++i)
    for (int64_t j = 0; j < L; ++j) mask[static_cast<size_t>(i * L + j)] = j > i ? -1e30f : 0.0f;
  Tensor ref = matmul(softmax(add(s, Tensor::from_vector({L, L}, mask))), v.reshape({L, d}));
  expect_close(y.to_double_vector(), ref.to_double_vector(), 1e-5, 1e-5, "blocked vs formula");
}

// The CPU kernels split element-wise loops and attention's (batch, head) pairs over threads
// (tensor/src/cpu/parallel.h); each element is computed by the same code whichever thread runs
// it, so values and gradients are the same bits at 1, 2 and 3 threads.
TEST(Threads, ElementwiseAndAttentionResultsAreTheSameBitsAtAnyThreadCount) {
  const int threads_before = num_threads();
  std::vector<std::vector<float>> first;
  for (int threads : {1, 2, 3}) {
    set_num_threads(threads);
    Generator gen(11);
    Tensor x = uniform({3, 70000}, -4, 4, gen).set_requires_grad(true);
    Tensor w = uniform({3, 70000}, -1, 1, gen);
    Tensor q = uniform({2, 5, 100, 16}, -1, 1, gen).set_requires_grad(true);
    Tensor k = uniform({2, 5, 100, 16}, -1, 1, gen).set_requires_grad(true);
    Tensor v = uniform({2, 5, 100, 16}, -1, 1, gen).set_requires_grad(true);
    Tensor act = add(mul(gelu(x), w), exp(mul_scalar(x, 0.5f)));
    Tensor att = scaled_dot_product_attention(q, k, v, {.causal = true});
    add(sum(act), sum(mul(att, att))).backward();
    const std::vector<std::vector<float>> got = {act.to_vector(), x.grad().to_vector(), att.to_vector(),
                                                 q.grad().to_vector(), k.grad().to_vector(), v.grad().to_vector()};
    if (first.empty()) first = got;
    for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], first[i]) << "result " << i << " at " << threads << " threads";
  }
  set_num_threads(threads_before);
}

// A NaN score is not "nothing to attend": its query's output is NaN, as in PyTorch, and the
// other queries are untouched (the kernel's running maxima must not drop NaN).
// A child forked after the pool started has none of its worker threads: it must run the CPU
// kernels serially (same values), not wait for workers that do not exist.
TEST(Threads, AForkedChildRunsTheCpuKernelsWithoutThePool) {
  const int threads_before = num_threads();
  set_num_threads(2);
  Generator gen(12);
  Tensor x = uniform({200000}, -3, 3, gen);
  const std::vector<float> want = gelu(x).to_vector();  // starts the pool's worker
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    alarm(20);  // a hang ends the child with SIGALRM, which the parent reports
    _exit(gelu(x).to_vector() == want ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  set_num_threads(threads_before);
  ASSERT_TRUE(WIFEXITED(status)) << "the child was killed by signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0) << "the child computed different values";
}

TEST(Attention, ANaNInAQueryGivesANaNOutputNotZeros) {
  Generator gen(4);
  Tensor q = uniform({1, 1, 3, 4}, -1, 1, gen), k = uniform({1, 1, 70, 4}, -1, 1, gen), v = uniform({1, 1, 70, 4}, -1, 1, gen);
  std::vector<float> qs = q.to_vector();
  for (int c = 0; c < 4; ++c) qs[static_cast<size_t>(4 + c)] = std::nanf("");  // query 1
  const std::vector<float> y = scaled_dot_product_attention(Tensor::from_vector({1, 1, 3, 4}, qs), k, v).to_vector();
  for (int c = 0; c < 4; ++c) {
    EXPECT_FALSE(std::isnan(y[static_cast<size_t>(c)])) << "query 0";
    EXPECT_TRUE(std::isnan(y[static_cast<size_t>(4 + c)])) << "query 1";
    EXPECT_FALSE(std::isnan(y[static_cast<size_t>(8 + c)])) << "query 2";
  }
}

TEST(Attention, AQueryWithEveryKeyMaskedGivesZerosNotNaN) {
  Tensor q = Tensor::ones({1, 1, 2, 2}).set_requires_grad(true);
  Tensor k = Tensor::ones({1, 1, 2, 2}).set_requires_grad(true);
  Tensor v = Tensor::ones({1, 1, 2, 2}).set_requires_grad(true);
  AttentionOptions a;
  a.key_padding_mask = Tensor::ones({1, 2});
  Tensor y = scaled_dot_product_attention(q, k, v, a);
  sum(y).backward();
  for (double x : y.to_double_vector()) EXPECT_EQ(x, 0.0);
  for (double x : q.grad().to_double_vector()) EXPECT_EQ(x, 0.0);
}

TEST(Attention, BadShapesAreErrorsNamingThem) {
  Tensor q = Tensor::zeros({2, 2, 4, 3}), k = Tensor::zeros({2, 2, 5, 3}), v = Tensor::zeros({2, 2, 5, 3});
  try {
    scaled_dot_product_attention(q, Tensor::zeros({2, 2, 5, 4}), v);
    FAIL() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("scaled_dot_product_attention: shapes do not agree: q {2, 2, 4, 3}"));
  }
  AttentionOptions a;
  a.key_padding_mask = Tensor::zeros({2, 4});
  try {
    scaled_dot_product_attention(q, k, v, a);
    FAIL() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("key_padding_mask of shape {2, 4} does not match {batch, keys} = {2, 5}"));
  }
  EXPECT_THROW(scaled_dot_product_attention(Tensor::zeros({4, 3}), k, v), std::invalid_argument);
  EXPECT_THROW(scaled_dot_product_attention(q, k.to(DType::f64), v), std::invalid_argument);
}

// ---- multi-head attention layer ----

Model mha_model(const json& c, bool with_mask) {
  MultiHeadAttentionOptions o{.causal = c["causal"].get<bool>()};
  const Shape xs = c["x_shape"].get<Shape>();
  Model x = input({-1, xs[1], xs[2]});
  if (!with_mask) return x | multi_head_attention(c["num_heads"].get<int64_t>(), o);
  return multi_head_attention(x, input({-1, xs[1]}), c["num_heads"].get<int64_t>(), o);
}

void load_params(Parameters& p, const json& values) {
  ASSERT_EQ(p.size(), values.size());
  for (size_t i = 0; i < p.size(); ++i) {
    Tensor t = p.at(i);
    t.detach().copy_from(Tensor::from_vector(t.shape(), values[i].get<std::vector<double>>(), {DType::f64, Device::cpu()})
                             .to(t.dtype())
                             .to(t.device()));
  }
}

TEST(MultiHeadAttention, MatchesTorchMultiheadAttentionWithMasksOnEveryDevice) {
  const json& cases = fixtures()["mha"];
  ASSERT_EQ(cases.size(), 2u);
  for (const json& c : cases)
    for (Device device : devices())
      for (DType dtype : {DType::f64, DType::f32}) {
        const std::string where = c["name"].get<std::string>() + " " + dtype_name(dtype) + " on " + device.str();
        const TensorOptions o{dtype, device};
        Model m = mha_model(c, true);
        ModelPlan plan_ = plan(m);
        Parameters p = init(m, 0).to(device, dtype);
        load_params(p, c["params"]);
        Tensor x = from(c["x"], c["x_shape"], o, true);
        const Shape xs = c["x_shape"].get<Shape>();
        Tensor mask = Tensor::from_vector({xs[0], xs[1]}, c["key_padding_mask"].get<std::vector<int32_t>>(),
                                          {DType::i32, device});
        Tensor y = forward(plan_, p, std::vector<Tensor>{x, mask}, ForwardContext{.training = true});
        sum(mul(y, from(c["weights"], c["output_shape"], o))).backward();
        const double tol = dtype == DType::f64 ? 1e-10 : 5e-5;
        expect_close(y.to_double_vector(), c["output"].get<std::vector<double>>(), tol, tol, where + " output");
        expect_close(x.grad().to_double_vector(), c["grad_x"].get<std::vector<double>>(), tol, tol, where + " grad x");
        for (size_t i = 0; i < p.size(); ++i)
          expect_close(p.at(i).grad().to_double_vector(), c["grad_params"][i].get<std::vector<double>>(), tol, tol,
                       where + " grad " + p.entries()[i].name);
      }
}

TEST(MultiHeadAttention, BadOptionsAndShapesAreErrorsNamingTheLayer) {
  try {
    init(input({-1, 5, 6}) | multi_head_attention(4), 0);
    FAIL() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("multi_head_attention_2"));
    EXPECT_THAT(e.what(), HasSubstr("d_model 6 of input {-1, 5, 6} is not divisible by num_heads 4"));
  }
  try {
    init(multi_head_attention(input({-1, 5, 8}), input({-1, 4}), 2), 0);
    FAIL() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("key_padding_mask {-1, 4} does not match {batch, time} of x {-1, 5, 8}"));
  }
  EXPECT_THROW(multi_head_attention(0), std::invalid_argument);
  EXPECT_THROW(init(input({-1, 8}) | multi_head_attention(2), 0), std::invalid_argument);
}

// ---- the transformer block ----

TEST(TransformerBlock, MatchesAPyTorchPreNormBlockOnEveryDevice) {
  const json& c = fixtures()["block"];
  const Shape xs = c["x_shape"].get<Shape>();
  Model m = input({-1, xs[1], xs[2]}) |
            transformer_block({.num_heads = c["num_heads"].get<int64_t>(), .mlp_size = c["mlp_size"].get<int64_t>()});
  const std::string s = summary(m);
  EXPECT_THAT(s, HasSubstr("multi_head_attention"));
  EXPECT_THAT(s, HasSubstr("layer_norm"));
  for (Device device : devices())
    for (DType dtype : {DType::f64, DType::f32}) {
      const std::string where = std::string(dtype_name(dtype)) + " on " + device.str();
      const TensorOptions o{dtype, device};
      Parameters p = init(m, 0).to(device, dtype);
      load_params(p, c["params"]);
      Tensor x = from(c["x"], c["x_shape"], o, true);
      Tensor y = forward(m, p, x, ForwardContext{.training = true});
      sum(mul(y, from(c["weights"], c["output_shape"], o))).backward();
      const double tol = dtype == DType::f64 ? 1e-10 : 1e-4;
      expect_close(y.to_double_vector(), c["output"].get<std::vector<double>>(), tol, tol, where + " output");
      expect_close(x.grad().to_double_vector(), c["grad_x"].get<std::vector<double>>(), tol, tol, where + " grad x");
      for (size_t i = 0; i < p.size(); ++i)
        expect_close(p.at(i).grad().to_double_vector(), c["grad_params"][i].get<std::vector<double>>(), tol, tol,
                     where + " grad " + p.entries()[i].name);
    }
}

TEST(TransformerBlock, F64GradientsMatchFiniteDifferences) {
  const json& c = fixtures()["block"];
  const Shape xs = c["x_shape"].get<Shape>();
  for (BlockNorm norm : {BlockNorm::layer_norm, BlockNorm::rms_norm}) {
    Model m = input({-1, xs[1], xs[2]}) | transformer_block({.num_heads = 2, .mlp_size = 6, .norm = norm});
    ModelPlan pl = plan(m);
    Parameters p = init(m, 5).to(Device::cpu(), DType::f64);
    const TensorOptions o{DType::f64, Device::cpu()};
    Tensor x = from(c["x"], c["x_shape"], o, true);
    Tensor w = from(c["weights"], c["output_shape"], o);
    std::vector<Tensor> inputs{x};
    for (size_t i = 0; i < p.size(); ++i) inputs.push_back(p.at(i));
    expect_f64_gradients_match([&] { return sum(mul(forward(pl, p, x, ForwardContext{.training = true}), w)); }, inputs,
                        norm == BlockNorm::rms_norm ? "block (rms_norm)" : "block (layer_norm)", 1e-5);
  }
}

// ---- weight tying ----

TEST(TiedDense, SharesTheEmbeddingKernelAndSumsBothGradients) {
  Model ids = input({-1, 3});
  Model emb = ids | embedding(6, 4);
  Model logits = emb | dense(4) | tied_dense(emb);
  Parameters p = init(logits, 1).to(Device::cpu(), DType::f64);
  ASSERT_EQ(p.size(), 3u);  // embedding kernel, dense kernel and bias: nothing of tied_dense's own
  EXPECT_EQ(p.entries()[0].name, "embedding_2.kernel");
  EXPECT_THAT(summary(logits), HasSubstr("tied_dense_4"));
  Tensor x = Tensor::from_vector({2, 3}, std::vector<int64_t>{0, 5, 2, 2, 1, 0}, {DType::i64, Device::cpu()});
  ModelPlan pl = plan(logits);
  Tensor y = forward(pl, p, x, {});
  ASSERT_EQ(y.shape(), (Shape{2, 3, 6}));
  // The output layer is x·kernelᵀ with the embedding's own kernel.
  NoGradGuard no_grad;
  Tensor h = predict(emb | dense(4), p, x);  // same layer names up to the dense: same parameters
  Tensor ref = matmul(h.reshape({6, 4}), transpose(p.at(0)));
  expect_close(y.to_double_vector(), ref.to_double_vector(), 1e-12, 1e-12, "tied output");
}

TEST(TiedDense, F64GradientOfTheSharedKernelMatchesFiniteDifferences) {
  Model emb = input({-1, 3}) | embedding(5, 4);
  Model logits = emb | layer_norm() | tied_dense(emb);
  Parameters p = init(logits, 2).to(Device::cpu(), DType::f64);
  ModelPlan pl = plan(logits);
  Tensor x = Tensor::from_vector({2, 3}, std::vector<int64_t>{0, 4, 2, 2, 1, 4}, {DType::i64, Device::cpu()});
  Generator gen(9);
  Tensor w = uniform({2, 3, 5}, -1, 1, gen).to(DType::f64);
  std::vector<Tensor> inputs;
  for (size_t i = 0; i < p.size(); ++i) inputs.push_back(p.at(i));
  expect_f64_gradients_match([&] { return sum(mul(forward(pl, p, x, ForwardContext{.training = true}), w)); }, inputs,
                      "tied embedding");
}

TEST(TiedDense, RefusesAModelThatIsNotAnEmbedding) {
  try {
    tied_dense(input({-1, 3}) | dense(2));
    FAIL() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("tied_dense: the model's output layer is dense, not an embedding"));
  }
}

}  // namespace
}  // namespace axon
