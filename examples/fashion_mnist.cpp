// Trains a classifier on Fashion-MNIST, data-parallel over MPI ranks.
//
//   axonrun -n 2 bin/fashion_mnist --model mlp --epochs 1 --batch-size 128 --optimizer adam
//
// The last line of stdout is one JSON object with the results, for scripts and benchmarks.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "axon/agreement.h"
#include "axon/communicator.h"
#include "axon/cpu_budget.h"
#include "axon/data.h"
#include "axon/model.h"
#include "axon/optimizers.h"
#include "axon/trainer.h"

using namespace axon;

static Model build_model(const std::string& name) {
  if (name == "mlp") return input({-1, 784}) | dense(128, Activation::relu) | dense(10);
  if (name == "mlp_big")
    return input({-1, 784}) | dense(1024, Activation::relu) | dense(1024, Activation::relu) | dense(10);
  throw std::invalid_argument(fmt::format("unknown model '{}'", name));
}

static int run(int argc, char** argv) {
  CLI::App app{"Train a classifier on Fashion-MNIST with Axon (data-parallel over MPI ranks)"};
  std::string model_name = "mlp", optimizer_name = "adam", data_dir = data::default_fashion_mnist_dir();
  int epochs = 1, threads = 0;
  size_t batch_size = 128;
  double lr = 1e-3;
  uint64_t seed = 0;
  bool no_progress = false;
  app.add_option("--model", model_name, "Model to train")->check(CLI::IsMember({"mlp", "mlp_big"}));
  app.add_option("--epochs", epochs, "Passes over the training set")->check(CLI::Range(1, 100000));
  app.add_option("--batch-size", batch_size, "Samples per rank per step (global batch = this × ranks)")
      ->check(CLI::Range(size_t{1}, size_t{1} << 20));
  app.add_option("--optimizer", optimizer_name, "Optimizer")->check(CLI::IsMember({"sgd", "adam", "adamw"}));
  app.add_option("--lr", lr, "Learning rate")->check(CLI::PositiveNumber);
  app.add_option("--threads", threads, "Threads per rank (default: cores / ranks on this machine)")
      ->check(CLI::Range(1, 1024));
  app.add_option("--seed", seed, "Seed for initialization and shuffling");
  app.add_option("--data", data_dir, "Folder with the Fashion-MNIST IDX files");
  app.add_flag("--no-progress", no_progress, "No live progress line");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  auto comm = make_communicator();
  // Each rank gets its share of the cores: oversubscribed BLAS threads are a classic slowdown.
  // Without --threads: OPENBLAS_NUM_THREADS / OMP_NUM_THREADS, else the usable CPUs (affinity
  // mask, cgroup quota) divided by the ranks on this node; see axon/cpu_budget.h.
  std::string threads_source = "from --threads";
  if (threads == 0) {
    CpuBudget budget = cpu_budget(local_world_size());
    threads = budget.threads;
    threads_source = budget.source;
  }
  set_num_threads(threads);

  const data::Dataset train = data::load_fashion_mnist(data_dir, data::Split::train);
  const data::Dataset test = data::load_fashion_mnist(data_dir, data::Split::test);

  Model model = build_model(model_name);
  Parameters params = init(model, seed);
  auto optimizer = make_optimizer(optimizer_name, lr);
  if (comm->is_root()) {
    std::fprintf(stderr, "axon: %s, %zu parameters, %s, %d rank(s) × %d thread(s) (%s; OpenBLAS %s kernels), batch %zu per rank\n",
                 model_name.c_str(), params.count(), optimizer_name.c_str(), comm->size(), threads,
                 threads_source.c_str(), blas_kernels().c_str(), batch_size);
  }

  TrainOptions options;
  options.epochs = epochs;
  options.batch_size = batch_size;
  options.seed = seed;
  options.progress = !no_progress;
  Trainer trainer(model, params, *optimizer, *comm, options);
  TrainResult result = trainer.fit(train, &test);

  if (comm->is_root()) {
    // Metrics over 0 samples were not measured: said on stderr, null in the JSON, never 0.
    auto metric = [](const std::optional<double>& v) { return v ? fmt::format("{:.4f}", *v) : std::string("n/a"); };
    for (const EpochResult& e : result.epochs)
      std::fprintf(stderr, "epoch %d: train loss %.4f acc %.4f | test loss %s acc %s | %.2fs\n", e.epoch,
                   e.train_loss, e.train_accuracy, metric(e.test.loss).c_str(), metric(e.test.accuracy).c_str(),
                   e.train_seconds);
    const EpochResult& last = result.epochs.back();
    if (last.test.samples == 0)
      std::fprintf(stderr, "fashion_mnist: note: test split is empty (%s): test metrics not measured\n",
                   test.source.c_str());
    auto json_metric = [](const std::optional<double>& v) { return v ? nlohmann::json(*v) : nlohmann::json(nullptr); };
    nlohmann::json out = {{"model", model_name},
                          {"world_size", comm->size()},
                          {"epochs", epochs},
                          {"batch_size", batch_size},
                          {"test_accuracy", json_metric(last.test.accuracy)},
                          {"test_loss", json_metric(last.test.loss)},
                          {"test_samples", last.test.samples},
                          {"train_samples_per_s", result.samples_per_second()},
                          {"params_sha256", parameters_sha256(params)}};
    std::cout << out.dump() << std::endl;
  }
  return 0;
}

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const NonFiniteError& e) {
    // Its own exit status, so scripts can tell a diverged run from bad input (docs/getting-started.md).
    // Every rank stops at the same step, so MPI can finalize instead of aborting the job.
    std::fprintf(stderr, "fashion_mnist: error: %s\n", e.what());
    mark_failure_collective();
    return kExitNonFinite;
  } catch (const DisagreementError& e) {
    std::fprintf(stderr, "fashion_mnist: error: %s\n", e.what());
    mark_failure_collective();
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fashion_mnist: error: %s\n", e.what());
    // A non-zero exit under MPI stops the whole job (see distributed/src/mpi_communicator.cpp).
    return 1;
  }
}
