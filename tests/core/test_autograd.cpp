#include <gtest/gtest.h>
#include <gmock/gmock.h>

#include <map>

#include "../support/gradcheck.h"
#include "axon/autograd.h"
#include "axon/ops.h"

using namespace axon;
using axon::testing::expect_gradients_match;
using axon::testing::random_tensor;

TEST(Gradcheck, ElementwiseBinaryWithBroadcasting) {
  Tensor a = random_tensor({3, 4}, 1);
  Tensor b = random_tensor({4}, 2);
  Tensor c = random_tensor({3, 1}, 3, true, 0.5f, 2.0f);  // away from zero for div
  expect_gradients_match([](const std::vector<Tensor>& x) { return add(x[0], x[1]); }, {a, b});
  expect_gradients_match([](const std::vector<Tensor>& x) { return sub(x[0], x[1]); }, {a, b});
  expect_gradients_match([](const std::vector<Tensor>& x) { return mul(x[0], x[1]); }, {a, c});
  expect_gradients_match([](const std::vector<Tensor>& x) { return div(x[0], x[1]); }, {a, c});
  expect_gradients_match([](const std::vector<Tensor>& x) { return x[0] * 3.0f + 1.0f; }, {a});
}

TEST(Gradcheck, Unary) {
  Tensor a = random_tensor({2, 5}, 4);
  Tensor pos = random_tensor({2, 5}, 5, true, 0.5f, 2.0f);
  expect_gradients_match([](const std::vector<Tensor>& x) { return exp(x[0]); }, {a});
  expect_gradients_match([](const std::vector<Tensor>& x) { return log(x[0]); }, {pos});
  expect_gradients_match([](const std::vector<Tensor>& x) { return relu(x[0]); }, {a}, 1e-3f);
  expect_gradients_match([](const std::vector<Tensor>& x) { return sigmoid(x[0]); }, {a});
  expect_gradients_match([](const std::vector<Tensor>& x) { return tanh(x[0]); }, {a});
  expect_gradients_match([](const std::vector<Tensor>& x) { return square(x[0]); }, {a});
  expect_gradients_match([](const std::vector<Tensor>& x) { return neg(x[0]); }, {a});
}

TEST(Gradcheck, Reductions) {
  Tensor a = random_tensor({3, 4, 2}, 6);
  expect_gradients_match([](const std::vector<Tensor>& x) { return sum(x[0]); }, {a});
  expect_gradients_match([](const std::vector<Tensor>& x) { return mean(x[0]); }, {a});
  for (int axis = 0; axis < 3; ++axis) {
    expect_gradients_match([axis](const std::vector<Tensor>& x) { return sum(x[0], axis); }, {a});
    expect_gradients_match([axis](const std::vector<Tensor>& x) { return mean(x[0], axis, true); }, {a});
  }
}

TEST(Gradcheck, MatmulLinearTranspose) {
  Tensor a = random_tensor({3, 4}, 7);
  Tensor b = random_tensor({4, 5}, 8);
  Tensor bias = random_tensor({5}, 9);
  expect_gradients_match([](const std::vector<Tensor>& x) { return matmul(x[0], x[1]); }, {a, b});
  expect_gradients_match([](const std::vector<Tensor>& x) { return linear(x[0], x[1], x[2]); }, {a, b, bias});
  expect_gradients_match([](const std::vector<Tensor>& x) { return linear(x[0], x[1], Tensor()); }, {a, b});
  expect_gradients_match([](const std::vector<Tensor>& x) { return transpose(x[0]); }, {a});
}

TEST(Gradcheck, SoftmaxFamilyOnEveryAxis) {
  Tensor a = random_tensor({3, 4, 2}, 10, true, -2.0f, 2.0f);
  for (int axis = 0; axis < 3; ++axis) {
    expect_gradients_match([axis](const std::vector<Tensor>& x) { return softmax(x[0], axis); }, {a});
    expect_gradients_match([axis](const std::vector<Tensor>& x) { return log_softmax(x[0], axis); }, {a});
  }
}

TEST(Gradcheck, ReshapeAndClone) {
  Tensor a = random_tensor({2, 6}, 11);
  expect_gradients_match([](const std::vector<Tensor>& x) { return square(x[0].reshape({3, -1})); }, {a});
  expect_gradients_match([](const std::vector<Tensor>& x) { return exp(x[0].clone()); }, {a});
}

TEST(Gradcheck, SharedSubexpressionsAccumulate) {
  // y = x*x + exp(x)*x uses x four times and exp(x) feeds a product: the engine must wait for all.
  Tensor a = random_tensor({5}, 12);
  expect_gradients_match([](const std::vector<Tensor>& x) { return x[0] * x[0] + exp(x[0]) * x[0]; }, {a});
  // A two-layer MLP with a shared weight used twice.
  Tensor in = random_tensor({4, 3}, 13, false);
  Tensor w = random_tensor({3, 3}, 14);
  expect_gradients_match([in](const std::vector<Tensor>& x) { return matmul(tanh(matmul(in, x[0])), x[0]); }, {w});
}

TEST(Autograd, GradientsAccumulateAcrossBackwardCalls) {
  Tensor x = Tensor::from_vector({2}, {1, 2}).set_requires_grad();
  sum(x * 3.0f).backward();
  sum(x * 3.0f).backward();
  EXPECT_EQ(x.grad().to_vector(), (std::vector<float>{6, 6}));
  x.zero_grad();
  EXPECT_EQ(x.grad().to_vector(), (std::vector<float>{0, 0}));
  sum(square(x)).backward();
  EXPECT_EQ(x.grad().to_vector(), (std::vector<float>{2, 4}));
}

TEST(Autograd, GradientWritesIntoAnExistingGradBuffer) {
  // Parameters keep their gradients in views of one flat buffer; backward must fill that buffer.
  auto grads = std::make_shared<Storage>(8 * sizeof(float), Device::cpu());
  Tensor w = Tensor::from_vector({2, 2}, {1, 2, 3, 4}).set_requires_grad();
  Tensor g = Tensor::view_of(grads, 2, {2, 2});
  g.fill(0.0f);
  w.set_grad(g);
  Tensor x = Tensor::from_vector({1, 2}, {1, 1});
  sum(matmul(x, w)).backward();
  EXPECT_EQ(w.grad().data(), grads->as<float>() + 2);
  EXPECT_EQ(w.grad().to_vector(), (std::vector<float>{1, 1, 1, 1}));
}

TEST(Autograd, NoGradModeRecordsNothing) {
  Tensor x = Tensor::from_vector({2}, {1, 2}).set_requires_grad();
  Tensor y;
  {
    NoGradGuard guard;
    y = x * 2.0f;
  }
  EXPECT_FALSE(y.requires_grad());
  EXPECT_THROW(sum(y).backward(), std::logic_error);
  Tensor z = x * 2.0f;
  EXPECT_TRUE(z.requires_grad());
  EXPECT_FALSE(z.is_leaf());
}

TEST(Autograd, InputsWithoutRequiresGradGetNoGradient) {
  Tensor x = Tensor::from_vector({1, 2}, {1, 2});
  Tensor w = Tensor::from_vector({2, 1}, {3, 4}).set_requires_grad();
  sum(matmul(x, w)).backward();
  EXPECT_FALSE(x.grad().defined());
  EXPECT_EQ(w.grad().to_vector(), (std::vector<float>{1, 2}));
}

TEST(Autograd, GradReadyHookFiresOnceWithTheFinalGradient) {
  Tensor w = Tensor::from_vector({2}, {1, 2}).set_requires_grad();
  Tensor v = Tensor::from_vector({2}, {3, 4}).set_requires_grad();
  std::vector<std::pair<std::string, std::vector<float>>> calls;
  w.add_grad_ready_hook([&](const Tensor& g) { calls.push_back({"w", g.to_vector()}); });
  v.add_grad_ready_hook([&](const Tensor& g) { calls.push_back({"v", g.to_vector()}); });
  // w is used twice (early and late in the graph); its hook must fire only after both uses.
  Tensor h = w * v;
  Tensor out = sum(h * w + w);
  out.backward();
  ASSERT_EQ(calls.size(), 2u);
  std::map<std::string, std::vector<float>> by_name(calls.begin(), calls.end());
  // d/dw (w^2 v + w) = 2wv + 1 ; d/dv = w^2
  EXPECT_EQ(by_name["w"], (std::vector<float>{7, 17}));
  EXPECT_EQ(by_name["v"], (std::vector<float>{1, 4}));
}

TEST(Autograd, HookOrderFollowsBackwardSoLateLayersAreReadyFirst) {
  Tensor w1 = Tensor::from_vector({2, 2}, {1, 0, 0, 1}).set_requires_grad();
  Tensor w2 = Tensor::from_vector({2, 2}, {1, 0, 0, 1}).set_requires_grad();
  std::vector<int> order;
  w1.add_grad_ready_hook([&](const Tensor&) { order.push_back(1); });
  w2.add_grad_ready_hook([&](const Tensor&) { order.push_back(2); });
  Tensor x = Tensor::ones({3, 2});
  sum(matmul(relu(matmul(x, w1)), w2)).backward();
  EXPECT_EQ(order, (std::vector<int>{2, 1}));
}

TEST(Autograd, SecondBackwardThroughFreedGraphIsAClearError) {
  Tensor x = Tensor::from_vector({2}, {1, 2}).set_requires_grad();
  Tensor y = sum(exp(x));
  y.backward();
  try {
    y.backward();
    FAIL();
  } catch (const std::logic_error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("already freed"));
  }
}

TEST(Autograd, BackwardNeedsScalarOrExplicitGradient) {
  Tensor x = Tensor::from_vector({2}, {1, 2}).set_requires_grad();
  Tensor y = x * 2.0f;
  EXPECT_THROW(y.backward(), std::invalid_argument);
  y.backward(Tensor::from_vector({2}, {1, 10}));
  EXPECT_EQ(x.grad().to_vector(), (std::vector<float>{2, 20}));
  EXPECT_THROW(x.set_grad(Tensor::zeros({3})), std::invalid_argument);
  EXPECT_THROW(y.set_requires_grad(false), std::logic_error);
}

TEST(Autograd, DroppingALongGraphWithoutBackwardDoesNotOverflowTheStack) {
  Tensor x = Tensor::scalar(0.0f).set_requires_grad();
  Tensor y = x;
  for (int i = 0; i < 1000000; ++i) y = add_scalar(y, 1.0f);
  EXPECT_EQ(y.item(), 1000000.0f);
  y = Tensor();  // frees a million nodes
  Tensor z = x;
  for (int i = 0; i < 1000; ++i) z = mul(z, x) + x;  // closures holding inputs, shared leaf
  z = Tensor();
  SUCCEED();
}

TEST(Tensor, ShapesWhoseSizeOverflowsAreRejected) {
  EXPECT_THROW(Tensor::zeros({4, int64_t{1} << 62}), std::length_error);
  EXPECT_THROW(Tensor::from_vector({2}, {1, 2}).reshape({7, 0x6DB6DB6DB6DB6DB7, 2}), std::length_error);
}
