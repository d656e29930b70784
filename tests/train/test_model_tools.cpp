// Model tools: freezing with every optimizer and in the trainer, per-layer-group learning rates
// in the trainer, and parameters saved as safetensors (loaded back, by PyTorch, into a model
// that differs, and refused when truncated or altered).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "../support/process.h"
#include "axon/checkpoint.h"
#include "axon/communicator.h"
#include "axon/hooks.h"
#include "axon/model_tools.h"
#include "axon/ops.h"
#include "axon/quantization.h"
#include "axon/trainer.h"
#include "../support/synthetic_data.h"

namespace axon {
namespace {

namespace fs = std::filesystem;

Model mlp() { return input({-1, 12}) | dense(8, Activation::relu) | dense(3); }  // dense_2, relu_3, dense_4

std::vector<float> values_of(const Tensor& t) {
  std::vector<float> v;
  for (double d : t.to_double_vector()) v.push_back(static_cast<float>(d));
  return v;
}

TrainOptions quick() {
  TrainOptions o;
  o.epochs = 1;
  o.batch_size = 16;
  o.progress = false;
  return o;
}

// ---- freezing ----

TEST(Freeze, MarksNamesAndStopsGradients) {
  Parameters params = init(mlp(), 1);
  EXPECT_EQ(params.freeze(layers_named(params, {"dense_2"})), 2u);
  EXPECT_EQ(params.frozen_names(), (std::vector<std::string>{"dense_2.kernel", "dense_2.bias"}));
  EXPECT_TRUE(params.frozen("dense_2.bias"));
  EXPECT_FALSE(params.frozen("dense_4.kernel"));
  EXPECT_FALSE(params["dense_2.kernel"].requires_grad());
  // Backward skips the frozen gradients: their slices stay zero, the others get values.
  Tensor x = Tensor::from_vector({4, 12}, std::vector<float>(48, 0.5f));
  sum(forward(plan(mlp()), params, x, ForwardContext{true})).backward();
  for (float g : values_of(params["dense_2.kernel"].grad())) EXPECT_EQ(g, 0.0f);
  double moved = 0;
  for (float g : values_of(params["dense_4.kernel"].grad())) moved += std::abs(g);
  EXPECT_GT(moved, 0.0);
  // Copies keep the marks; unfreeze undoes them.
  EXPECT_EQ(params.clone().frozen_names(), params.frozen_names());
  EXPECT_EQ(params.unfreeze([](const std::string& n) { return n == "dense_2.bias"; }), 1u);
  EXPECT_EQ(params.frozen_names(), (std::vector<std::string>{"dense_2.kernel"}));
  EXPECT_TRUE(params["dense_2.bias"].requires_grad());
  try {
    layers_named(params, {"dense_9"});
    FAIL() << "no error for an unknown layer";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("dense_9"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("dense_2, dense_4"), std::string::npos) << e.what();
  }
}

// Every optimizer, through the trainer: frozen values bit-identical, the others moving.
TEST(Freeze, EveryOptimizerInTheTrainerLeavesFrozenValuesBitIdentical) {
  const data::Dataset train = testing::synthetic_dataset(64, 3);
  auto comm = make_local_communicator();
  for (const std::string& name : optimizer_names()) {
    SCOPED_TRACE(name);
    Parameters params = init(mlp(), 2);
    params.freeze(layers_named(params, {"dense_2"}));
    const std::vector<float> kernel = values_of(params["dense_2.kernel"]), bias = values_of(params["dense_2.bias"]);
    const std::vector<float> head = values_of(params["dense_4.kernel"]);
    auto opt = skip_frozen(params, make_optimizer(name, 1e-2));
    Trainer trainer(mlp(), params, *opt, *comm, quick());
    trainer.fit(train);
    EXPECT_EQ(values_of(params["dense_2.kernel"]), kernel);
    EXPECT_EQ(values_of(params["dense_2.bias"]), bias);
    EXPECT_NE(values_of(params["dense_4.kernel"]), head);
    EXPECT_EQ(opt->steps(), 4);
    // The inner optimizer's state covers the trainable elements only (8·3 + 3 = 27).
    for (auto& [state_name, buffer] : opt->state())
      if (buffer->defined() && buffer->numel() > 1) {
        EXPECT_EQ(buffer->numel(), 27) << state_name;
      }
  }
}

// A run with frozen parameters checkpoints and resumes bit for bit (the optimizer state covers
// the trainable elements only), and a checkpoint is refused by a run that freezes another set.
TEST(Freeze, ACheckpointWithFrozenParametersResumesExactly) {
  const data::Dataset train = testing::synthetic_dataset(64, 3);
  const fs::path dir = fs::temp_directory_path() / ("axon_frozen_ck_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  auto run = [&](int epochs, const std::string& resume_from, bool save, const std::string& frozen_layer) {
    Parameters params = init(mlp(), 2);
    params.freeze(layers_named(params, {frozen_layer}));
    auto opt = skip_frozen(params, adam({.lr = 1e-2}));
    auto comm = make_local_communicator();
    TrainOptions o = quick();
    o.epochs = epochs;
    Trainer trainer(mlp(), params, *opt, *comm, o);
    if (!resume_from.empty()) trainer.load_checkpoint(resume_from);
    trainer.fit(train);
    if (save) trainer.save_checkpoint(dir.string());
    return parameters_sha256(params);
  };
  const std::string straight = run(2, "", false, "dense_2");
  run(1, "", true, "dense_2");
  EXPECT_EQ(run(2, dir.string(), false, "dense_2"), straight);
  try {
    run(2, dir.string(), false, "dense_4");
    ADD_FAILURE() << "a checkpoint with another frozen set was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("frozen parameters"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

// Wrapping an optimizer changes nothing when nothing is frozen: the same trajectory bit for bit.
TEST(Freeze, SkipFrozenWithNothingFrozenMatchesThePlainOptimizer) {
  const data::Dataset train = testing::synthetic_dataset(64, 3);
  auto comm = make_local_communicator();
  Parameters a = init(mlp(), 2), b = init(mlp(), 2);
  auto plain = adam({.lr = 1e-2});
  auto wrapped = skip_frozen(b, adam({.lr = 1e-2}));
  Trainer(mlp(), a, *plain, *comm, quick()).fit(train);
  Trainer(mlp(), b, *wrapped, *comm, quick()).fit(train);
  EXPECT_EQ(values_of(a.flat_values()), values_of(b.flat_values()));
}

TEST(Freeze, TrainerRefusesAnOptimizerThatWouldStepFrozenParameters) {
  auto comm = make_local_communicator();
  Parameters params = init(mlp(), 2);
  auto stale = skip_frozen(params, sgd({}));  // made before freezing: steps everything
  params.freeze(layers_named(params, {"dense_4"}));
  auto opt = sgd({});
  for (Optimizer* o : {opt.get(), stale.get()}) {
    try {
      Trainer trainer(mlp(), params, *o, *comm, quick());
      FAIL() << "no error";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("dense_4.kernel, dense_4.bias are frozen"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("skip_frozen"), std::string::npos) << e.what();
    }
  }
  // ZeRO needs an element-wise optimizer, and skip_frozen is not one: refused by name.
  auto ok = skip_frozen(params, sgd({}));
  TrainOptions z = quick();
  z.zero_stage = 1;
  EXPECT_THROW(Trainer(mlp(), params, *ok, *comm, z), std::invalid_argument);
}

// ---- per-layer-group options in the trainer ----

TEST(ParamGroups, AGroupWithLearningRateZeroDoesNotMoveInTheTrainer) {
  const data::Dataset train = testing::synthetic_dataset(64, 3);
  auto comm = make_local_communicator();
  Parameters params = init(mlp(), 4);
  std::vector<std::pair<std::string, int64_t>> layout;
  for (const auto& e : params.entries()) layout.emplace_back(e.name, e.value.numel());
  const std::vector<float> body = values_of(params["dense_2.kernel"]), head = values_of(params["dense_4.kernel"]);
  const std::vector<float> head_bias = values_of(params["dense_4.bias"]);
  // dense_2 at lr 0; dense_4's bias at a tenth of the rate with no weight decay; the rest AdamW.
  auto opt = param_groups(layout,
                          {{{"dense_2."}, [] { return adamw({.lr = 0.0, .weight_decay = 1e-2}); }},
                           {{"dense_4.bias"}, [] { return adamw({.lr = 1e-3, .weight_decay = 0.0}); }}},
                          [] { return adamw({.lr = 1e-2}); });
  Trainer trainer(mlp(), params, *opt, *comm, quick());
  trainer.fit(train);
  EXPECT_EQ(values_of(params["dense_2.kernel"]), body);
  EXPECT_NE(values_of(params["dense_4.kernel"]), head);
  // Adam's first steps move each element by about lr: the bias group moved about a tenth as far.
  double bias_move = 0, kernel_move = 0;
  auto now = values_of(params["dense_4.bias"]), k = values_of(params["dense_4.kernel"]);
  for (size_t i = 0; i < now.size(); ++i) bias_move = std::max(bias_move, static_cast<double>(std::abs(now[i] - head_bias[i])));
  for (size_t i = 0; i < k.size(); ++i) kernel_move = std::max(kernel_move, static_cast<double>(std::abs(k[i] - head[i])));
  EXPECT_LE(bias_move, 4 * 1e-3 * 1.01);  // 4 steps of at most lr each
  EXPECT_GT(kernel_move, 4 * 1e-3 * 1.5);
}

// ---- hooks and capture ----

Tensor mlp_input() {
  std::vector<float> v(4 * 12);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(std::sin(0.7 * static_cast<double>(i)));
  return Tensor::from_vector({4, 12}, v);
}

TEST(Hooks, RunInAttachOrderPerEventAndModeAndCanBeRemoved) {
  Parameters params = init(mlp(), 13);
  Hooks hooks;
  std::vector<std::string> log;
  auto note = [&log](std::string tag) {
    return [&log, tag](const HookCall& c) { log.push_back(tag + ":" + c.layer + ":" + shape_str(c.tensors.at(0).shape())); };
  };
  hooks.attach("dense_4", HookEvent::forward, note("b"));
  hooks.attach("dense_4", HookEvent::pre_forward, note("pre"));
  const uint64_t a = hooks.attach("dense_4", HookEvent::forward, note("c"));
  hooks.attach("relu_3", HookEvent::forward, note("train-only"), HookMode::train);
  hooks.attach("relu_3", HookEvent::forward, note("inference-only"), HookMode::inference);
  predict(mlp(), params, mlp_input(), hooks);
  EXPECT_EQ(log, (std::vector<std::string>{"inference-only:relu_3:{4, 8}", "pre:dense_4:{4, 8}", "b:dense_4:{4, 3}",
                                            "c:dense_4:{4, 3}"}));
  log.clear();
  hooks.remove(a);
  hooks.remove(a);  // harmless
  forward(plan(mlp()), params, mlp_input(), [&] {
    ForwardContext ctx{true};
    ctx.hooks = &hooks;
    return ctx;
  }());
  EXPECT_EQ(log, (std::vector<std::string>{"train-only:relu_3:{4, 8}", "pre:dense_4:{4, 8}", "b:dense_4:{4, 3}"}));
  // Every layer with "*".
  Hooks all;
  std::vector<std::string> layers;
  all.attach("*", HookEvent::forward, [&](const HookCall& c) { layers.push_back(c.layer); });
  predict(mlp(), params, mlp_input(), all);
  EXPECT_EQ(layers, (std::vector<std::string>{"input_1", "dense_2", "relu_3", "dense_4"}));
  Hooks wrong;
  wrong.attach("dense_3", HookEvent::forward, [](const HookCall&) {});
  try {
    predict(mlp(), params, mlp_input(), wrong);
    FAIL() << "no error for a hook on an unknown layer";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("'dense_3', which the model does not have (its layers: input_1, dense_2, relu_3, "
                                         "dense_4)"), std::string::npos) << e.what();
  }
}

// The backward hook sees dL/d(output) of its layer: for L = sum(y), at dense_2 that is
// relu'(h)·(1 · W4ᵀ), computed here by hand.
TEST(Hooks, BackwardHookSeesTheGradientOfTheLayerOutput) {
  Parameters params = init(mlp(), 14);
  Hooks hooks;
  Tensor seen, h;
  hooks.attach("dense_2", HookEvent::backward, [&](const HookCall& c) { seen = c.tensors[0].clone(); });
  hooks.attach("dense_2", HookEvent::forward, [&](const HookCall& c) { h = c.tensors[0].detach().clone(); });
  ForwardContext ctx{true};
  ctx.hooks = &hooks;
  sum(forward(plan(mlp()), params, mlp_input(), ctx)).backward();
  ASSERT_TRUE(seen.defined());
  ASSERT_EQ(seen.shape(), (Shape{4, 8}));
  const std::vector<double> w = params["dense_4.kernel"].to_double_vector(), hv = h.to_double_vector();
  const std::vector<double> g = seen.to_double_vector();
  for (size_t b = 0; b < 4; ++b)
    for (size_t j = 0; j < 8; ++j) {
      double want = 0;
      for (size_t k = 0; k < 3; ++k) want += w[j * 3 + k];
      if (hv[b * 8 + j] <= 0) want = 0;
      EXPECT_NEAR(g[b * 8 + j], want, 1e-6) << b << "," << j;
    }
  // The parameter gradients are those of a pass without hooks.
  const std::vector<double> with_hooks = params.flat_grads().to_double_vector();
  params.zero_grad();
  sum(forward(plan(mlp()), params, mlp_input(), ForwardContext{true})).backward();
  EXPECT_EQ(params.flat_grads().to_double_vector(), with_hooks);
}

TEST(Hooks, CaptureReturnsIntermediateOutputsInOneCall) {
  Parameters params = init(mlp(), 15);
  auto outs = capture(mlp(), params, mlp_input(), {"dense_2", "relu_3", "dense_4"});
  ASSERT_EQ(outs.size(), 3u);
  const std::vector<double> pre = outs["dense_2"].to_double_vector(), post = outs["relu_3"].to_double_vector();
  for (size_t i = 0; i < pre.size(); ++i) EXPECT_EQ(post[i], std::max(pre[i], 0.0));
  EXPECT_EQ(outs["dense_4"].to_double_vector(), predict(mlp(), params, mlp_input()).to_double_vector());
  EXPECT_THROW(capture(mlp(), params, mlp_input(), {}), std::invalid_argument);
  try {
    capture(mlp(), params, mlp_input(), {"dense_5"});
    FAIL() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("no layer named 'dense_5' (its layers: input_1, dense_2, relu_3, dense_4)"),
              std::string::npos) << e.what();
  }
}

TEST(Hooks, TheTrainerRunsTrainHooksWhileTrainingAndInferenceHooksWhileEvaluating) {
  const data::Dataset train = testing::synthetic_dataset(64, 3), test = testing::synthetic_dataset(32, 4);
  auto comm = make_local_communicator();
  Parameters params = init(mlp(), 16);
  auto opt = sgd({.lr = 0.1});
  Hooks hooks;
  int train_calls = 0, eval_calls = 0, backward_calls = 0;
  hooks.attach("dense_4", HookEvent::forward, [&](const HookCall&) { ++train_calls; }, HookMode::train);
  hooks.attach("dense_4", HookEvent::forward, [&](const HookCall&) { ++eval_calls; }, HookMode::inference);
  hooks.attach("dense_2", HookEvent::backward, [&](const HookCall&) { ++backward_calls; });
  TrainOptions o = quick();
  o.hooks = &hooks;
  o.eval_batch_size = 16;
  Trainer(mlp(), params, *opt, *comm, o).fit(train, &test);
  EXPECT_EQ(train_calls, 4);     // 64 samples / 16
  EXPECT_EQ(backward_calls, 4);
  EXPECT_EQ(eval_calls, 2);      // 32 test samples / 16
}

// ---- int8 weight-only quantization ----

TEST(Quantization, PerChannelSymmetricInt8WithinHalfAStep) {
  std::vector<float> w{0.5f, -2.0f, 0.0f, -1.0f, 1.0f, 0.0f, 0.25f, 0.3f, 0.0f};  // {3, 3}; channel 2 all zero
  const QuantizedKernel k = QuantizedKernel::from_tensor(Tensor::from_vector({3, 3}, w));
  EXPECT_FLOAT_EQ(k.scale[0], 1.0f / 127);
  EXPECT_FLOAT_EQ(k.scale[1], 2.0f / 127);
  EXPECT_EQ(k.scale[2], 1.0f);
  EXPECT_EQ(k.q[3], -127);  // -1.0 is channel 0's largest magnitude
  EXPECT_EQ(k.q[1], -127);
  EXPECT_EQ(k.q[0], 64);    // round(0.5 · 127)
  const std::vector<double> back = k.dequantize().to_double_vector();
  for (size_t i = 0; i < w.size(); ++i) EXPECT_LE(std::abs(back[i] - w[i]), k.scale[i % 3] / 2 + 1e-7) << i;
  EXPECT_EQ(k.bytes(), 9u + 12u);
  EXPECT_THROW(QuantizedKernel::from_tensor(Tensor::from_vector({3}, std::vector<float>{1, 2, 3})), std::invalid_argument);
  EXPECT_THROW(QuantizedKernel::from_tensor(Tensor::from_vector({1, 2}, std::vector<float>{1, NAN})), std::invalid_argument);
}

TEST(Quantization, TheInt8KernelComputesTheDequantizedProduct) {
  Generator gen(21);
  std::vector<float> w(70 * 13), x(130 * 70), b(13);  // 130 rows: two blocks of 64 and a rest
  for (float& v : w) v = static_cast<float>(gen.uniform(-1, 1));
  for (size_t i = 0; i < x.size(); ++i) x[i] = i % 5 == 0 ? 0.0f : static_cast<float>(gen.uniform(-1, 1));
  for (float& v : b) v = static_cast<float>(gen.uniform(-1, 1));
  const QuantizedKernel k = QuantizedKernel::from_tensor(Tensor::from_vector({70, 13}, w));
  const Tensor xt = Tensor::from_vector({130, 70}, x), bt = Tensor::from_vector({13}, b);
  const std::vector<double> got = quantized_linear(xt, k, bt).to_double_vector();
  const std::vector<double> deq = k.dequantize().to_double_vector();
  for (size_t r = 0; r < 130; ++r)
    for (size_t o = 0; o < 13; ++o) {
      double want = b[o];
      for (size_t i = 0; i < 70; ++i) want += static_cast<double>(x[r * 70 + i]) * deq[i * 13 + o];
      EXPECT_NEAR(got[r * 13 + o], want, 1e-4) << r << "," << o;
    }
  try {
    quantized_linear(Tensor::zeros({2, 69}), k, bt);
    FAIL() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("input {2, 69} does not fit the kernel {70, 13}"), std::string::npos) << e.what();
  }
}

double accuracy(const Model& model, const Parameters& params, const data::Dataset& ds) {
  const Tensor x = Tensor::from_vector({static_cast<int64_t>(ds.count), static_cast<int64_t>(ds.sample_size)}, ds.images);
  const std::vector<double> y = predict(model, params, x).to_double_vector();
  const size_t classes = y.size() / ds.count;
  size_t correct = 0;
  for (size_t i = 0; i < ds.count; ++i) {
    const auto row = y.begin() + static_cast<std::ptrdiff_t>(i * classes);
    correct += static_cast<int32_t>(std::max_element(row, row + static_cast<std::ptrdiff_t>(classes)) - row) == ds.labels[i];
  }
  return static_cast<double>(correct) / static_cast<double>(ds.count);
}

// Fashion-MNIST-like: 10 classes of 28×28 pixels in [0, 1], each sample a faint class pattern
// (15%) under uniform noise, so that a trained MLP is good but not perfect (data::
// synthetic_fashion_mnist has random labels: nothing to learn).
data::Dataset pattern_dataset(size_t count, uint64_t seed) {
  Generator patterns(99), gen(seed);
  std::vector<float> prototype(10 * 784);
  for (float& v : prototype) v = static_cast<float>(patterns.uniform(0, 1));
  data::Dataset ds;
  ds.count = count;
  ds.sample_shape = {28, 28};
  ds.sample_size = 784;
  ds.num_classes = 10;
  ds.images.resize(count * 784);
  ds.labels.resize(count);
  for (size_t i = 0; i < count; ++i) {
    const int32_t label = static_cast<int32_t>(gen.uniform(0, 10)) % 10;
    ds.labels[i] = label;
    for (size_t j = 0; j < 784; ++j)
      ds.images[i * 784 + j] = 0.15f * prototype[static_cast<size_t>(label) * 784 + j] + 0.85f * static_cast<float>(gen.uniform(0, 1));
  }
  return ds;
}

// Dense works on the last axis of any rank >= 2, and so does its quantized form.
TEST(Quantization, ARank3InputIsQuantizedOnItsLastAxis) {
  const Model model = input({-1, 5, 12}) | dense(4);
  const Parameters params = init(model, 7);
  std::vector<float> values(2 * 5 * 12);
  for (size_t i = 0; i < values.size(); ++i) values[i] = std::sin(0.37f * static_cast<float>(i));
  const Tensor x = Tensor::from_vector({2, 5, 12}, values);
  const QuantizedModel q = quantize(model, params);
  const Tensor exact = predict(model, params, x), approx = predict(q.model, q.params, x);
  ASSERT_EQ(approx.shape(), (Shape{2, 5, 4}));
  const std::vector<double> a = exact.to_double_vector(), b = approx.to_double_vector();
  // int8 weights: each output is within a few percent of the f32 one's scale.
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(b[i], a[i], 0.05) << i;
}

TEST(Quantization, QuantizedMlpKeepsTheF32AccuracyOnFashionMnistLikeData) {
  const Model model = input({-1, 784}) | dense(64, Activation::relu) | dense(10);
  const data::Dataset train = pattern_dataset(2000, 1), test = pattern_dataset(1000, 2);
  Parameters params = init(model, 3);
  auto opt = adam({.lr = 2e-3});
  auto comm = make_local_communicator();
  TrainOptions o = quick();
  o.epochs = 4;
  o.batch_size = 64;
  Trainer(model, params, *opt, *comm, o).fit(train);
  const QuantizedModel q = quantize(model, params);
  EXPECT_NE(summary(q.model).find("weight_only_quantized_dense_2 (weight_only_quantized_dense)"), std::string::npos)
      << summary(q.model);
  EXPECT_EQ(q.params.size(), 2u);  // the two biases
  EXPECT_EQ(q.f32_kernel_bytes, (784u * 64 + 64 * 10) * 4);
  EXPECT_EQ(q.quantized_kernel_bytes, 784u * 64 + 64 * 10 + (64 + 10) * 4);
  const double f32 = accuracy(model, params, test), int8 = accuracy(q.model, q.params, test);
  std::printf("f32 accuracy %.4f, int8 weight-only %.4f (difference %+.4f); dense kernels %zu -> %zu bytes (%.1f%% saved)\n",
              f32, int8, int8 - f32, q.f32_kernel_bytes, q.quantized_kernel_bytes,
              100.0 * (1.0 - static_cast<double>(q.quantized_kernel_bytes) / static_cast<double>(q.f32_kernel_bytes)));
  EXPECT_GT(f32, 0.5);  // trained: 10 classes, chance is 0.1
  EXPECT_NEAR(int8, f32, 0.01);
  // Outputs agree closely too (logits within a few percent of their range).
  const Tensor x = Tensor::from_vector({8, 784}, std::vector<float>(test.images.begin(), test.images.begin() + 8 * 784));
  const std::vector<double> a = predict(model, params, x).to_double_vector(), b = predict(q.model, q.params, x).to_double_vector();
  double range = 0, diff = 0;
  for (size_t i = 0; i < a.size(); ++i) range = std::max(range, std::abs(a[i])), diff = std::max(diff, std::abs(a[i] - b[i]));
  EXPECT_LT(diff, 0.05 * range);
  // Inference only.
  Tensor xg = x.clone();
  xg.set_requires_grad(true);
  EXPECT_THROW(forward(plan(q.model), q.params, xg, ForwardContext{true}), std::invalid_argument);
}

// ---- summary ----

// One model with every layer type: each row names the layer and op, its output shape, and its
// parameter count (model state included); checked by hand against the layers' definitions.
Model every_layer_model() {
  Model x = input({-1, 8, 8, 2});
  Model a = x | pad({{1, 1}, {1, 1}}) | resize(8, 8) | conv(4, {.kernel_size = {3}}) |
            depthwise_conv(2, {.kernel_size = {3}}) | batch_norm() | group_norm(2) | instance_norm() | layer_norm() |
            rms_norm() | spatial_dropout() | max_pool({.kernel_size = {2}}) | avg_pool({.kernel_size = {2}}) |
            global_avg_pool();
  Model b = x | global_max_pool() | dense(8, Activation::relu);
  Model c = concatenate(multiply(subtract(add(a, b), b), b), a);  // {nil, 16}
  Model d = c | reshape({kBatch, 4, 4}) | transpose({0, 2, 1}) | flatten() | dropout() | alpha_dropout() |
            feature_alpha_dropout() | gelu() | log_sumexp();
  std::vector<Model> halves = split(c, 2);
  Model e = add(halves[0], constant(Tensor::from_vector({8}, std::vector<float>(8, 1.0f)))) |
            nx([](const Tensor& t) { return t; }, "identity");
  Model f = cond(e, [](const Tensor&) { return true; }, e, halves[1]);
  return concatenate(d | dense(8), f);
}

TEST(Summary, PrintsEveryLayerType) {
  const std::string s = summary(every_layer_model());
  // label -> "shape count", from the rows " label   shape   count".
  std::map<std::string, std::string> rows;
  // Columns are padded with at least 3 spaces; labels and shapes never hold two in a row.
  std::stringstream lines(s);
  for (std::string line; std::getline(lines, line);) {
    std::vector<std::string> cells;
    for (size_t at = line.find_first_not_of(' '); at != std::string::npos; at = line.find_first_not_of(' ', at)) {
      const size_t end = line.find("  ", at);
      cells.push_back(line.substr(at, end == std::string::npos ? std::string::npos : end - at));
      at = end;
    }
    if (cells.size() == 3 && cells[0] != "Layer") rows[cells[0]] = cells[1] + " " + cells[2];
  }
  const std::map<std::string, std::string> expected{
      {"input_1 (input)", "{nil, 8, 8, 2} 0"},
      {"pad_2 (pad)", "{nil, 10, 10, 2} 0"},
      {"resize_3 (resize)", "{nil, 8, 8, 2} 0"},
      {"conv_4 (conv)", "{nil, 6, 6, 4} 76"},                        // 3·3·2·4 + 4
      {"depthwise_conv_5 (depthwise_conv)", "{nil, 4, 4, 8} 80"},    // 3·3·1·8 + 8
      {"batch_norm_6 (batch_norm)", "{nil, 4, 4, 8} 32"},            // gamma, beta, mean, var
      {"group_norm_7 (group_norm)", "{nil, 4, 4, 8} 16"},
      {"instance_norm_8 (instance_norm)", "{nil, 4, 4, 8} 16"},
      {"layer_norm_9 (layer_norm)", "{nil, 4, 4, 8} 16"},
      {"rms_norm_10 (rms_norm)", "{nil, 4, 4, 8} 8"},
      {"spatial_dropout_11 (spatial_dropout)", "{nil, 4, 4, 8} 0"},
      {"max_pool_12 (max_pool)", "{nil, 2, 2, 8} 0"},
      {"avg_pool_13 (avg_pool)", "{nil, 1, 1, 8} 0"},
      {"global_avg_pool_14 (global_avg_pool)", "{nil, 8} 0"},
      {"global_max_pool_15 (global_max_pool)", "{nil, 2} 0"},
      {"dense_16 (dense)", "{nil, 8} 24"},                           // 2·8 + 8
      {"relu_17 (relu)", "{nil, 8} 0"},
      {"add_18 (add)", "{nil, 8} 0"},
      {"subtract_19 (subtract)", "{nil, 8} 0"},
      {"multiply_20 (multiply)", "{nil, 8} 0"},
      {"concatenate_21 (concatenate)", "{nil, 16} 0"},
      {"reshape_22 (reshape)", "{nil, 4, 4} 0"},
      {"transpose_23 (transpose)", "{nil, 4, 4} 0"},
      {"flatten_24 (flatten)", "{nil, 16} 0"},
      {"dropout_25 (dropout)", "{nil, 16} 0"},
      {"alpha_dropout_26 (alpha_dropout)", "{nil, 16} 0"},
      {"feature_alpha_dropout_27 (feature_alpha_dropout)", "{nil, 16} 0"},
      {"gelu_28 (gelu)", "{nil, 16} 0"},
      {"log_sumexp_29 (log_sumexp)", "{nil, 1} 0"},
      {"dense_30 (dense)", "{nil, 8} 16"},                           // 1·8 + 8
      {"split_31 (split)", "{nil, 8} 0"},                            // one layer per part
      {"constant_32 (constant)", "{8} 0"},                           // no batch axis
      {"add_33 (add)", "{nil, 8} 0"},
      {"identity_34 (identity)", "{nil, 8} 0"},                      // nx(..., "identity")
      {"split_35 (split)", "{nil, 8} 0"},
      {"cond_36 (cond)", "{nil, 8} 0"},
      {"concatenate_37 (concatenate)", "{nil, 16} 0"},
  };
  EXPECT_EQ(rows, expected) << s;
  EXPECT_NE(s.find("Total Parameters: 284\n"), std::string::npos) << s;  // 76+80+32+16+16+16+8+24+16
}

// A layer of two outputs (as an lstm's sequence and state will be) prints both shapes in its row.
class TwoOutputs : public Layer {
 public:
  std::string op() const override { return "two_outputs"; }
  Shape output_shape(const std::vector<Shape>& in) const override { return in.at(0); }
  std::vector<Shape> output_shapes(const std::vector<Shape>& in) const override {
    return {{in[0][0], 5, in[0][1]}, {in[0][0], in[0][1]}};
  }
  Tensor forward(const std::vector<Tensor>& in, std::span<const Tensor>, const ForwardContext&) const override { return in[0]; }
};

TEST(Summary, AMultiOutputLayerListsEachShape) {
  const Model m = Model::apply(std::make_shared<TwoOutputs>(), {input({-1, 3})});
  EXPECT_NE(summary(m).find("two_outputs_2 (two_outputs)   {nil, 5, 3}, {nil, 3}   0"), std::string::npos) << summary(m);
}

// ---- safetensors ----

class SaveLoad : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("axon_model_tools_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

Model cnn() {
  return input({-1, 6, 6, 2}) | conv(3, {.kernel_size = {3}}) | batch_norm() | relu() | flatten() | dense(4);
}

// Distinct model state, so that loading it (and PyTorch's use of it) is visible in the output.
void randomize_state(Parameters& params, uint64_t seed) {
  Generator gen(seed);
  for (const auto& e : params.state_entries()) {
    std::vector<float> v(static_cast<size_t>(e.value.numel()));
    for (float& f : v) f = static_cast<float>(gen.uniform(0.5, 1.5));
    Tensor dst = e.value;
    dst.copy_from(Tensor::from_vector(e.value.shape(), v));
  }
}

Tensor sample_input(uint64_t seed) {
  Generator gen(seed);
  std::vector<float> v(5 * 6 * 6 * 2);
  for (float& f : v) f = static_cast<float>(gen.uniform(-1, 1));
  return Tensor::from_vector({5, 6, 6, 2}, v);
}

TEST_F(SaveLoad, RoundTripsParametersAndModelStateExactly) {
  Parameters params = init(cnn(), 5);
  randomize_state(params, 6);
  save_parameters(path("cnn.safetensors"), params);
  LoadReport report;
  Parameters loaded = load_parameters(path("cnn.safetensors"), cnn(), {}, &report);
  EXPECT_TRUE(report.clean()) << report.str();
  EXPECT_EQ(report.loaded, 8u);  // conv kernel, bias; gamma, beta, mean, var; dense kernel, bias
  EXPECT_EQ(report.str(), "all 8 tensors loaded");
  EXPECT_EQ(values_of(loaded.flat_values()), values_of(params.flat_values()));
  EXPECT_EQ(values_of(loaded.flat_state()), values_of(params.flat_state()));
  EXPECT_EQ(values_of(predict(cnn(), loaded, sample_input(7))), values_of(predict(cnn(), params, sample_input(7))));
  // Nothing but the file is left in the folder (the temporary name was renamed).
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1);
}

TEST_F(SaveLoad, PyTorchLoadsTheFileAndComputesTheSameOutputs) {
  if (!fs::exists("/usr/bin/python3")) GTEST_SKIP() << "/usr/bin/python3 is not installed";
  if (std::system("/usr/bin/python3 -c 'import torch' 2>/dev/null") != 0)
    GTEST_SKIP() << "python3-torch is not installed (scripts/install-deps.sh installs it)";
  Parameters params = init(cnn(), 8);
  randomize_state(params, 9);
  const Tensor x = sample_input(10);
  save_parameters(path("params.safetensors"), params);
  write_safetensors(path("x.safetensors"), {{"x", x}});
  write_safetensors(path("y.safetensors"), {{"y", predict(cnn(), params, x)}});
  const std::string command = "/usr/bin/python3 " + std::string(AXON_SOURCE_DIR) + "/tests/train/torch_load_safetensors.py " +
                              path("params.safetensors") + " " + path("x.safetensors") + " " + path("y.safetensors");
  const axon::testing::CommandResult run = axon::testing::run_command(command);
  ASSERT_EQ(run.code, 0) << run.output;
  const std::string& out = run.stdout_text;
  const nlohmann::json result = nlohmann::json::parse(out);
  EXPECT_LE(result["max_abs_diff"].get<double>(), 1e-4);
  EXPECT_EQ(result["tensors"], 8);  // 6 parameters, 2 model state
  EXPECT_EQ(result["output_shape"], nlohmann::json({5, 4}));
  std::printf("PyTorch vs Axon on the loaded file: %s", out.c_str());
}

TEST_F(SaveLoad, AModelThatDiffersByNamedLayersGetsAReport) {
  // Saved: input_1, conv_2, batch_norm_3, relu_4, flatten_5, dense_6. Loaded into a model whose
  // dense has other units and that has one more dense: dense_6 mismatches, dense_7 is missing.
  Parameters params = init(cnn(), 11);
  save_parameters(path("cnn.safetensors"), params);
  const Model other = input({-1, 6, 6, 2}) | conv(3, {.kernel_size = {3}}) | batch_norm() | relu() | flatten() | dense(5) | dense(2);
  try {
    load_parameters(path("cnn.safetensors"), other);
    FAIL() << "a strict load of another model did not throw";
  } catch (const std::invalid_argument& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find(path("cnn.safetensors")), std::string::npos) << m;
    EXPECT_NE(m.find("missing from the file (2): dense_7.kernel {5, 2}, dense_7.bias {2}"), std::string::npos) << m;
    EXPECT_NE(m.find("shape mismatch (2): dense_6.kernel: file {48, 4}, model {48, 5}, dense_6.bias: file {4}, model {5}"),
              std::string::npos) << m;
  }
  LoadReport report;
  Parameters loaded = load_parameters(path("cnn.safetensors"), other, {.strict = false}, &report);
  EXPECT_EQ(report.loaded, 4u + 2u);  // conv and batch_norm parameters, batch_norm state
  EXPECT_EQ(report.missing.size(), 2u);
  EXPECT_EQ(report.mismatched.size(), 2u);
  EXPECT_TRUE(report.unexpected.empty());
  EXPECT_EQ(values_of(loaded["conv_2.kernel"]), values_of(params["conv_2.kernel"]));
  // A smaller model: the file's extra tensors are unexpected.
  const Model smaller = input({-1, 6, 6, 2}) | conv(3, {.kernel_size = {3}});
  load_parameters(path("cnn.safetensors"), smaller, {.strict = false}, &report);
  EXPECT_EQ(report.unexpected.size(), 6u) << report.str();
  EXPECT_NE(report.str().find("unexpected (not in the model) (6): batch_norm_3.gamma {3}"), std::string::npos) << report.str();
}

TEST_F(SaveLoad, TruncatedOrAlteredFilesAreRefusedNamingTheFileAndTheProblem) {
  Parameters params = init(mlp(), 12);
  const std::string good = path("mlp.safetensors");
  save_parameters(good, params);
  std::string bytes;
  {
    std::ifstream in(good, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  auto write = [&](const std::string& name, const std::string& content) {
    std::ofstream(path(name), std::ios::binary) << content;
    return path(name);
  };
  auto message = [&](const std::string& file) {
    Parameters target = init(mlp(), 0);
    try {
      load_parameters(file, target);
    } catch (const CheckpointError& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  const std::string truncated = write("truncated.safetensors", bytes.substr(0, bytes.size() - 10));
  std::string m = message(truncated);
  EXPECT_NE(m.find(truncated), std::string::npos) << m;
  EXPECT_NE(m.find("truncated"), std::string::npos) << m;
  std::string altered_data = bytes;
  altered_data[altered_data.size() - 3] ^= 0x40;  // one bit of dense_4.bias
  const std::string altered = write("altered.safetensors", altered_data);
  m = message(altered);
  EXPECT_NE(m.find(altered), std::string::npos) << m;
  EXPECT_NE(m.find("SHA-256"), std::string::npos) << m;
  const std::string header = write("header.safetensors", bytes.substr(0, 20));
  m = message(header);
  EXPECT_NE(m.find(header), std::string::npos) << m;
  m = message(path("absent.safetensors"));
  EXPECT_NE(m.find("absent.safetensors"), std::string::npos) << m;
  // The good file still loads.
  Parameters target = init(mlp(), 0);
  EXPECT_TRUE(load_parameters(good, target).clean());
  EXPECT_EQ(values_of(target.flat_values()), values_of(params.flat_values()));
}

}  // namespace
}  // namespace axon
