#include <gtest/gtest.h>
#include <gmock/gmock.h>

#include "axon/ops.h"
#include "axon/random.h"
#include "axon/tensor.h"

using namespace axon;
using ::testing::HasSubstr;

TEST(Tensor, CreationAndShape) {
  Tensor t = Tensor::zeros({2, 3});
  EXPECT_EQ(t.shape(), (Shape{2, 3}));
  EXPECT_EQ(t.numel(), 6);
  EXPECT_EQ(t.size(-1), 3);
  for (float v : t.values()) EXPECT_EQ(v, 0.0f);
  EXPECT_EQ(Tensor::scalar(2.5f).item(), 2.5f);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data()) % 64, 0u);
  EXPECT_THROW(Tensor::from_vector({2, 2}, {1, 2, 3}), std::invalid_argument);
  EXPECT_THROW(t.item(), std::invalid_argument);
  EXPECT_THROW(t.size(2), std::out_of_range);
}

TEST(Tensor, ReshapeIsAViewAndInfersOneDimension) {
  Tensor t = Tensor::from_vector({2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor r = t.reshape({3, -1});
  EXPECT_EQ(r.shape(), (Shape{3, 2}));
  r.data()[0] = 42.0f;
  EXPECT_EQ(t.data()[0], 42.0f);
  try {
    t.reshape({4, -1});
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("{2, 3}"));
    EXPECT_THAT(e.what(), HasSubstr("{4, -1}"));
  }
}

TEST(Tensor, ViewOfFlatStorage) {
  auto storage = std::make_shared<Storage>(10 * sizeof(float), Device::cpu());
  Tensor a = Tensor::view_of(storage, 0, {2, 2});
  Tensor b = Tensor::view_of(storage, 4, {6});
  a.fill(1.0f);
  b.fill(2.0f);
  EXPECT_EQ(storage->as<float>()[3], 1.0f);
  EXPECT_EQ(storage->as<float>()[4], 2.0f);
  EXPECT_THROW(Tensor::view_of(storage, 8, {3}), std::out_of_range);
}

TEST(Ops, BroadcastingAdd) {
  Tensor a = Tensor::from_vector({2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor row = Tensor::from_vector({3}, {10, 20, 30});
  Tensor col = Tensor::from_vector({2, 1}, {100, 200});
  EXPECT_EQ((a + row).to_vector(), (std::vector<float>{11, 22, 33, 14, 25, 36}));
  EXPECT_EQ((a + col).to_vector(), (std::vector<float>{101, 102, 103, 204, 205, 206}));
  EXPECT_EQ((row + col).shape(), (Shape{2, 3}));
  EXPECT_EQ((row + col).to_vector(), (std::vector<float>{110, 120, 130, 210, 220, 230}));
  EXPECT_EQ((a * 2.0f).to_vector(), (std::vector<float>{2, 4, 6, 8, 10, 12}));
  try {
    add(a, Tensor::zeros({2}));
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("{2, 3} and {2}"));
  }
}

TEST(Ops, ThreeDimensionalBroadcast) {
  Tensor a = Tensor::from_vector({2, 1, 3}, {1, 2, 3, 4, 5, 6});
  Tensor b = Tensor::from_vector({2, 1}, {10, 20});
  Tensor c = a * b;
  EXPECT_EQ(c.shape(), (Shape{2, 2, 3}));
  EXPECT_EQ(c.to_vector(), (std::vector<float>{10, 20, 30, 20, 40, 60, 40, 50, 60, 80, 100, 120}));
}

TEST(Ops, Reductions) {
  Tensor a = Tensor::from_vector({2, 3}, {1, 2, 3, 4, 5, 6});
  EXPECT_EQ(sum(a).item(), 21.0f);
  EXPECT_EQ(sum(a, 0).to_vector(), (std::vector<float>{5, 7, 9}));
  EXPECT_EQ(sum(a, 1).to_vector(), (std::vector<float>{6, 15}));
  EXPECT_EQ(sum(a, 1, true).shape(), (Shape{2, 1}));
  EXPECT_FLOAT_EQ(mean(a).item(), 3.5f);
  EXPECT_EQ(mean(a, -1).to_vector(), (std::vector<float>{2, 5}));
  EXPECT_EQ(argmax_rows(a), (std::vector<int64_t>{2, 2}));
}

TEST(Ops, MatmulMatchesNaive) {
  Generator gen(7);
  Tensor a = uniform({5, 7}, -1, 1, gen);
  Tensor b = uniform({7, 3}, -1, 1, gen);
  Tensor c = matmul(a, b);
  for (int i = 0; i < 5; ++i)
    for (int j = 0; j < 3; ++j) {
      double ref = 0;
      for (int k = 0; k < 7; ++k) ref += a.data()[i * 7 + k] * b.data()[k * 3 + j];
      EXPECT_NEAR(c.data()[i * 3 + j], ref, 1e-5);
    }
  try {
    matmul(a, a);
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("{5, 7} and {5, 7}"));
  }
}

TEST(Ops, LinearEqualsMatmulPlusBias) {
  Generator gen(8);
  Tensor x = uniform({4, 6}, -1, 1, gen);
  Tensor w = uniform({6, 5}, -1, 1, gen);
  Tensor b = uniform({5}, -1, 1, gen);
  Tensor fused = linear(x, w, b);
  Tensor ref = matmul(x, w) + b;
  for (int64_t i = 0; i < fused.numel(); ++i) EXPECT_NEAR(fused.data()[i], ref.data()[i], 1e-5);
  EXPECT_THROW(linear(x, Tensor::zeros({5, 5}), b), std::invalid_argument);
}

TEST(Ops, SoftmaxRowsSumToOneAndAreStable) {
  Tensor x = Tensor::from_vector({2, 3}, {1000, 1001, 1002, -5, 0, 5});
  Tensor y = softmax(x);
  for (int r = 0; r < 2; ++r) {
    float total = 0;
    for (int c = 0; c < 3; ++c) {
      EXPECT_TRUE(std::isfinite(y.data()[r * 3 + c]));
      total += y.data()[r * 3 + c];
    }
    EXPECT_NEAR(total, 1.0f, 1e-6);
  }
  Tensor ly = log_softmax(x);
  for (int i = 0; i < 6; ++i) EXPECT_NEAR(std::exp(ly.data()[i]), y.data()[i], 1e-6);
  // Along axis 0
  Tensor y0 = softmax(x, 0);
  for (int c = 0; c < 3; ++c) EXPECT_NEAR(y0.data()[c] + y0.data()[3 + c], 1.0f, 1e-6);
}

TEST(Ops, TransposeAndUnary) {
  Tensor a = Tensor::from_vector({2, 3}, {1, -2, 3, -4, 5, -6});
  EXPECT_EQ(transpose(a).to_vector(), (std::vector<float>{1, -4, -2, 5, 3, -6}));
  EXPECT_EQ(relu(a).to_vector(), (std::vector<float>{1, 0, 3, 0, 5, 0}));
  EXPECT_EQ(square(a).to_vector(), (std::vector<float>{1, 4, 9, 16, 25, 36}));
  EXPECT_NEAR(sigmoid(Tensor::scalar(0)).item(), 0.5f, 1e-7);
}

TEST(Random, DeterministicForASeed) {
  Generator g1(42), g2(42), g3(43);
  Tensor a = uniform({100}, -1, 1, g1);
  Tensor b = uniform({100}, -1, 1, g2);
  Tensor c = uniform({100}, -1, 1, g3);
  EXPECT_EQ(a.to_vector(), b.to_vector());
  EXPECT_NE(a.to_vector(), c.to_vector());
  for (float v : a.values()) {
    EXPECT_GE(v, -1.0f);
    EXPECT_LT(v, 1.0f);
  }
  Generator gn(5);
  Tensor n = normal({20000}, 0, 1, gn);
  double m = mean(n).item();
  EXPECT_NEAR(m, 0.0, 0.03);
  EXPECT_NEAR(mean(square(n)).item(), 1.0, 0.05);
}

TEST(Threads, SetAndGet) {
  set_num_threads(1);
  EXPECT_EQ(num_threads(), 1);
  EXPECT_THROW(set_num_threads(0), std::invalid_argument);
}
