// Trains a classifier on Fashion-MNIST, data-parallel over MPI ranks.
//
//   axonrun -n 2 bin/fashion_mnist --model mlp --epochs 1 --batch-size 128 --optimizer adam
//
// The last line of stdout is one JSON object with the results, for scripts and benchmarks.
#include <CLI/CLI.hpp>
#include <dlfcn.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "axon/agreement.h"
#include "axon/cli.h"
#include "axon/communicator.h"
#include "axon/cpu_budget.h"
#include "axon/cuda.h"
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

// "OpenBLAS 0.3.26": the BLAS library in this process and its version, from the copy Axon loaded
// (RTLD_NOLOAD: find it, never load another). Different versions may sum in different orders.
static std::string blas_library() {
  std::string name = "OpenBLAS";
  if (void* handle = dlopen("libopenblas.so.0", RTLD_LAZY | RTLD_NOLOAD)) {
    using ConfigFn = char* (*)();
    if (auto config = reinterpret_cast<ConfigFn>(dlsym(handle, "openblas_get_config"))) {
      const std::string text = config();  // "OpenBLAS 0.3.26 DYNAMIC_ARCH NO_AFFINITY Haswell ..."
      if (text.starts_with("OpenBLAS ")) name = text.substr(0, text.find(' ', 9));
    }
    dlclose(handle);
  }
  return name;
}

static int run(int argc, char** argv) {
  CLI::App app{"Train a classifier on Fashion-MNIST with Axon (data-parallel over MPI ranks)", "fashion_mnist"};
  std::string model_name = "mlp", optimizer_name = "adam", data_dir = data::default_fashion_mnist_dir();
  int epochs = 1, threads = 0;
  size_t batch_size = 128;
  double lr = 1e-3;
  uint64_t seed = 0;
  size_t synthetic = 0;
  bool no_progress = false, cuda_graph = false;
  std::string device_name = "cpu", precision = "f32", backend_name = "auto";
  // axonrun --backend B exports AXON_BACKEND=B to the ranks: the default of --backend.
  if (const char* backend = std::getenv("AXON_BACKEND"); backend && *backend) backend_name = backend;
  app.add_option("--model", model_name, "Model to train")->check(CLI::IsMember({"mlp", "mlp_big"}));
  cli::add_integer(app, "--epochs", epochs, 1, 100000, "Passes over the training set");
  cli::add_integer(app, "--batch-size", batch_size, size_t{1}, size_t{1} << 20,
                   "Samples per rank per step (global batch = this × ranks)");
  app.add_option("--optimizer", optimizer_name, "Optimizer")->check(CLI::IsMember({"sgd", "adam", "adamw"}));
  // The optimizers compute in float: a double such as 1e-50 would become 0 there (no training).
  cli::add_real(app, "--lr", lr, cli::positive_float(), "Learning rate");
  cli::add_integer(app, "--threads", threads, 1, 1024, "Threads per rank (default: cores / ranks on this machine)")
      ->default_str("auto");
  cli::add_integer(app, "--seed", seed, uint64_t{0}, std::numeric_limits<uint64_t>::max(),
                   "Seed for initialization and shuffling");
  app.add_option("--data", data_dir, "Folder with the Fashion-MNIST IDX files");
  app.add_flag("--no-progress", no_progress, "No live progress line");
  app.add_option("--device", device_name,
                 "cpu, cuda (GPU local_rank % GPUs, one per rank on a multi-GPU machine) or cuda:K")
      ->default_str("cpu");
  app.add_option("--precision", precision, "f32, or bf16: mixed precision (f32 master weights, bf16 compute)")
      ->check(CLI::IsMember({"f32", "bf16"}));
  app.add_option("--backend", backend_name,
                 "Gradient all-reduce: mpi, nccl (GPU tensors on the GPU), or auto (nccl for cuda when built with it)")
      ->check(CLI::IsMember({"auto", "mpi", "nccl"}));
  cli::add_integer(app, "--synthetic", synthetic, size_t{1}, size_t{1} << 24,
                   "Train on this many synthetic Fashion-MNIST-shaped samples (random, from --seed) instead of --data; "
                   "no test set")
      ->default_str("off");
  app.add_flag("--cuda-graph", cuda_graph, "Capture the training step in a CUDA graph (not implemented yet)");
  Device device;
  cli::ParseOutcome parsed;
  try {
    app.parse(argc, argv);
    try {
      device = parse_device(device_name);
    } catch (const std::invalid_argument& e) {
      throw CLI::ValidationError("--device", e.what());
    }
    if (cuda_graph)
      throw CLI::ValidationError("--cuda-graph", "capturing the training step in a CUDA graph is not implemented yet");
    if (backend_name != "auto" && backend_name != "mpi" && backend_name != "nccl")
      throw CLI::ValidationError("--backend", "AXON_BACKEND='" + backend_name + "': expected mpi, nccl or auto");
    if (backend_name == "nccl" && !device.is_cuda())
      throw CLI::ValidationError("--backend", "nccl needs --device cuda");
  } catch (const CLI::ParseError& e) {
    // A single process reports and exits at once, as it always has.
    if (!launched_with_ranks()) return cli::exit_on_parse_error(app, e, launcher_rank());
    parsed = cli::outcome_of(app, e);
  }
  // Under a launcher the ranks may have been given different command lines (MPMD launches,
  // wrapper scripts): no rank may exit on its own while another waits for it in MPI, so they
  // start MPI (cheap) and agree on the outcome of parsing first.
  std::unique_ptr<Communicator> world;
  if (launched_with_ranks()) {
    try {
      world = make_communicator();
    } catch (const std::exception&) {
      // No MPI to agree through: the old rule, rank 0 reports what every rank presumably has.
      if (parsed.kind == cli::ParseOutcome::Kind::ok) throw;
      return cli::report_parse_outcome(app, parsed, launcher_rank());
    }
    if (std::optional<int> code = cli::agree_on_command_line(*world, app, parsed)) return *code;
  } else {
    world = make_communicator();
  }
  // "cuda" without an index: one GPU per rank on this machine.
  if (device.is_cuda() && device_name == "cuda") device = Device::cuda(cuda::device_for_local_rank(local_rank()));

  // GPU gradients go through NCCL when asked (or by default where it is built in), else through
  // the MPI communicator, staged through host memory.
  std::unique_ptr<Communicator> nccl;
  if (device.is_cuda() && (backend_name == "nccl" || (backend_name == "auto" && !nccl_version().empty())))
    nccl = make_nccl_communicator(*world, device);
  Communicator* comm = nccl ? nccl.get() : world.get();
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

  // A data error is reported once when every rank has it, by each rank that has it otherwise.
  data::Dataset train, test;
  cli::run_on_all_ranks(*comm, "fashion_mnist", [&] {
    if (synthetic > 0) {
      train = data::synthetic_fashion_mnist(synthetic, seed);
    } else {
      train = data::load_fashion_mnist(data_dir, data::Split::train);
      test = data::load_fashion_mnist(data_dir, data::Split::test);
    }
  });

  Model model = build_model(model_name);
  Parameters params = init(model, seed).to(device);
  auto optimizer = make_optimizer(optimizer_name, lr);
  if (comm->is_root()) {
    std::fprintf(stderr, "axon: %s, %zu parameters, %s, %d rank(s) × %d thread(s) (%s; OpenBLAS %s kernels), batch %zu per rank\n",
                 model_name.c_str(), params.count(), optimizer_name.c_str(), comm->size(), threads,
                 threads_source.c_str(), blas_kernels().c_str(), batch_size);
    if (device.is_cuda())
      std::fprintf(stderr, "axon: rank 0 on %s (%s), %s precision, gradients through %s\n", device.str().c_str(),
                   cuda::device_name(device.index).c_str(), precision.c_str(), comm->backend().c_str());
    else if (precision != "f32")
      std::fprintf(stderr, "axon: %s mixed precision on the CPU\n", precision.c_str());
  }

  TrainOptions options;
  options.epochs = epochs;
  options.batch_size = batch_size;
  options.seed = seed;
  options.progress = !no_progress;
  options.compute_dtype = parse_dtype(precision);
  Trainer trainer(model, params, *optimizer, *comm, options);
  TrainResult result = trainer.fit(train, synthetic > 0 ? nullptr : &test);

  if (comm->is_root()) {
    // Metrics over 0 samples were not measured: said on stderr, null in the JSON, never 0.
    auto metric = [](const std::optional<double>& v) { return v ? fmt::format("{:.4f}", *v) : std::string("n/a"); };
    for (const EpochResult& e : result.epochs)
      std::fprintf(stderr, "epoch %d: train loss %.4f acc %.4f | test loss %s acc %s | %.2fs\n", e.epoch,
                   e.train_loss, e.train_accuracy, metric(e.test.loss).c_str(), metric(e.test.accuracy).c_str(),
                   e.train_seconds);
    const EpochResult& last = result.epochs.back();
    if (synthetic > 0)
      std::fprintf(stderr, "fashion_mnist: note: synthetic data has no test split: test metrics not measured\n");
    else if (last.test.samples == 0)
      std::fprintf(stderr, "fashion_mnist: note: test split is empty (%s): test metrics not measured\n",
                   test.source.c_str());
    auto json_metric = [](const std::optional<double>& v) { return v ? nlohmann::json(*v) : nlohmann::json(nullptr); };
    nlohmann::json out = {{"model", model_name},
                          {"world_size", comm->size()},
                          {"epochs", epochs},
                          {"batch_size", batch_size},
                          // Everything else params_sha256 depends on (docs/getting-started.md).
                          {"optimizer", optimizer_name},
                          {"lr", lr},
                          {"seed", seed},
                          {"threads", threads},
                          {"blas", blas_library()},
                          {"blas_kernels", blas_kernels()},
                          {"device", device.str()},
                          {"dtype", precision},
                          {"backend", comm->backend()},
                          {"data", synthetic > 0 ? train.source : data_dir},
                          {"axon_version", AXON_VERSION},
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
    // Every rank stops at the same step with the same message: rank 0 prints it, and MPI can
    // finalize instead of aborting the job.
    if (launcher_rank() == 0) std::fprintf(stderr, "fashion_mnist: error: %s\n", e.what());
    mark_failure_collective();
    return kExitNonFinite;
  } catch (const DisagreementError& e) {
    // Every rank sees the same table of differences; rank 0 prints it.
    if (launcher_rank() == 0) std::fprintf(stderr, "fashion_mnist: error: %s\n", e.what());
    mark_failure_collective();
    return 1;
  } catch (const cli::ReportedError&) {
    // Already printed, once or by the rank that had it; every rank throws it together.
    mark_failure_collective();
    return 1;
  } catch (const std::exception& e) {
    // Anything else may differ between ranks: say which rank it is. (The launcher's variables
    // themselves may be what is wrong: then there is no rank to name.)
    bool ranks = false;
    try {
      ranks = launched_with_ranks();
    } catch (const RankEnvironmentError&) {
    }
    if (ranks)
      std::fprintf(stderr, "fashion_mnist: error: rank %d: %s\n", launcher_rank(), e.what());
    else
      std::fprintf(stderr, "fashion_mnist: error: %s\n", e.what());
    // A non-zero exit under MPI stops the whole job (see distributed/src/mpi_communicator.cpp).
    return 1;
  }
}
