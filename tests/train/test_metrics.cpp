// Streaming metrics against their formulas on small hand-checked batches: update per batch, merge
// (as ranks would), compute, reset; empty batches; bad input.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <vector>

#include "axon/metrics.h"

using namespace axon;

namespace {

Tensor f32(const Shape& shape, std::vector<float> v) { return Tensor::from_vector(shape, v); }

TEST(Metrics, BinaryConfusionCountsAndRatios) {
  // prediction > 0.5 is positive: predicted 1 1 0 0 1 0; actual 1 0 0 1 1 1.
  const Tensor p = f32({6}, {0.9f, 0.7f, 0.2f, 0.4f, 0.51f, 0.5f}), y = f32({6}, {1, 0, 0, 1, 1, 1});
  // tp 2 (0, 4), fp 1 (1), tn 1 (2), fn 2 (3, 5)
  auto value = [&](std::unique_ptr<Metric> m) {
    m->update(p, y);
    return *m->compute();
  };
  EXPECT_EQ(value(true_positives()), 2);
  EXPECT_EQ(value(false_positives()), 1);
  EXPECT_EQ(value(true_negatives()), 1);
  EXPECT_EQ(value(false_negatives()), 2);
  EXPECT_DOUBLE_EQ(value(precision()), 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(value(recall()), 0.5);
  EXPECT_DOUBLE_EQ(value(sensitivity()), 0.5);
  EXPECT_DOUBLE_EQ(value(specificity()), 0.5);
  EXPECT_DOUBLE_EQ(value(f1_score()), 2 * (2.0 / 3.0) * 0.5 / (2.0 / 3.0 + 0.5));
  EXPECT_DOUBLE_EQ(value(accuracy_metric()), 3.0 / 6.0);
  EXPECT_EQ(value(true_positives(0.8)), 1);
  // No positive prediction: precision is 0, not NaN.
  auto none = precision(0.99);
  none->update(p, y);
  EXPECT_EQ(*none->compute(), 0.0);
}

TEST(Metrics, CategoricalSparseAndTopK) {
  const Tensor scores = f32({3, 4}, {0.1f, 0.6f, 0.2f, 0.1f,    // argmax 1
                                     0.5f, 0.1f, 0.3f, 0.1f,    // argmax 0
                                     0.2f, 0.2f, 0.25f, 0.35f}); // argmax 3
  const Tensor labels = Tensor::from_vector({3}, std::vector<int32_t>{1, 2, 0}, {DType::i32});
  auto acc = accuracy_metric();
  acc->update(scores, labels);
  EXPECT_DOUBLE_EQ(*acc->compute(), 1.0 / 3.0);
  // The same with one-hot targets.
  auto dense = accuracy_metric();
  dense->update(scores, f32({3, 4}, {0, 1, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0}));
  EXPECT_DOUBLE_EQ(*dense->compute(), 1.0 / 3.0);
  auto top2 = top_k_categorical_accuracy(2);
  top2->update(scores, labels);  // row 0 yes, row 1 (label 2 second) yes, row 2 (label 0 tied 3rd) no
  EXPECT_DOUBLE_EQ(*top2->compute(), 2.0 / 3.0);
  auto top5 = top_k_categorical_accuracy();
  top5->update(scores, labels);
  EXPECT_EQ(*top5->compute(), 1.0);
}

TEST(Metrics, StreamingMergeAndReset) {
  // Two batches into one metric equal one batch each into two merged metrics, and one update of all.
  const Tensor a = f32({2, 2}, {1, 2, 3, 4}), ya = f32({2, 2}, {1, 1, 1, 1});
  const Tensor b = f32({1, 2}, {0, -2}), yb = f32({1, 2}, {0, 0});
  auto whole = mean_absolute_error_metric(), left = mean_absolute_error_metric(), right = mean_absolute_error_metric();
  whole->update(a, ya);
  whole->update(b, yb);
  left->update(a, ya);
  right->update(b, yb);
  left->merge(*right);
  EXPECT_DOUBLE_EQ(*whole->compute(), (0 + 1 + 2 + 3 + 0 + 2) / 6.0);
  EXPECT_EQ(*left->compute(), *whole->compute());
  // As an all-reduce would: add the counts.
  auto third = mean_absolute_error_metric();
  third->add_counts(whole->counts());
  EXPECT_EQ(*third->compute(), *whole->compute());
  auto mse = mean_squared_error_metric();
  mse->update(a, ya);
  EXPECT_DOUBLE_EQ(*mse->compute(), (0 + 1 + 4 + 9) / 4.0);
  whole->reset();
  EXPECT_FALSE(whole->compute().has_value());
  EXPECT_THROW(left->merge(*precision()), std::invalid_argument);
  EXPECT_THROW(precision(0.5)->merge(*precision(0.7)), std::invalid_argument);
  RunningAverage avg, other;
  EXPECT_FALSE(avg.compute().has_value());
  avg.update(1.0);
  avg.update(2.0);
  other.update(6.0);
  avg.merge(other);
  EXPECT_DOUBLE_EQ(*avg.compute(), 3.0);
}

TEST(Metrics, EmptyBatchesAddNothing) {
  auto acc = accuracy_metric();
  acc->update(Tensor::zeros({0, 3}), Tensor::from_vector({0}, std::vector<int32_t>{}, {DType::i32}));
  EXPECT_FALSE(acc->compute().has_value());
  auto rec = recall();
  rec->update(Tensor::zeros({0}), Tensor::zeros({0}));
  EXPECT_FALSE(rec->compute().has_value());
  auto mae = mean_absolute_error_metric();
  mae->update(Tensor::zeros({0, 2}), Tensor::zeros({0, 2}));
  EXPECT_FALSE(mae->compute().has_value());
}

TEST(Metrics, BadInputNamesTheMetricAndShapes) {
  auto expect_message = [](auto fn, std::vector<std::string> parts) {
    try {
      fn();
      ADD_FAILURE() << "accepted";
    } catch (const std::invalid_argument& e) {
      for (const auto& part : parts) EXPECT_THAT(e.what(), ::testing::HasSubstr(part));
    }
  };
  expect_message([] { precision()->update(Tensor::zeros({3}), Tensor::zeros({4})); }, {"precision", "{4}", "{3}"});
  expect_message([] { accuracy_metric()->update(Tensor::zeros({2, 3}), Tensor::from_vector({2}, std::vector<int32_t>{0, 3}, {DType::i32})); },
                 {"accuracy", "label 3", "row 1"});
  expect_message([] { top_k_categorical_accuracy(0); }, {"top_k_categorical_accuracy", "k = 0"});
  expect_message([] { recall()->add_counts({1.0}); }, {"recall", "1 counts"});
}

}  // namespace
