// Trains a classifier on Fashion-MNIST, data-parallel over MPI ranks.
//
//   axonrun -n 2 bin/fashion_mnist --model mlp --epochs 1 --batch-size 128 --optimizer adam
//
// The last line of stdout is one JSON object with the results, for scripts and benchmarks.
#include <CLI/CLI.hpp>
#include <dlfcn.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "axon/agreement.h"
#include "axon/callbacks.h"
#include "axon/checkpoint.h"
#include "axon/preemption.h"
#include "axon/cli.h"
#include "axon/communicator.h"
#include "axon/conv_ops.h"
#include "axon/cpu_budget.h"
#include "axon/cuda.h"
#include "axon/data.h"
#include "axon/model.h"
#include "axon/optimizers.h"
#include "axon/schedules.h"
#include "axon/trainer.h"

using namespace axon;

// "resnet": a small convolutional residual network (He et al. 2016, "Deep Residual Learning for
// Image Recognition": conv → batch_norm → relu, two 3×3 convolutions per block, the block's input
// added to its output before the last relu; a strided 3×3 conv where the block halves the size,
// with a 1×1 strided conv + batch_norm on the shortcut, their option B). Images {batch, 28, 28, 1},
// channels last. Kept cheap on one core: one 16-channel conv on 28×28, then max_pool 2 at once,
// so the blocks run at 14×14 (16 channels) and 7×7 (32 channels); 35,066 parameters.
//   stem: conv 16 3×3 → bn → relu → max_pool 2                                   {14, 14, 16}
//   block 1: relu(x + bn(conv 16(relu(bn(conv 16(x))))))                         {14, 14, 16}
//   block 2: relu(bn(conv 32 1×1 /2 (x)) + bn(conv 32(relu(bn(conv 32 /2 (x)))))) {7, 7, 32}
//   head: flatten → dense 10
// The head flattens rather than the paper's global average pooling: with 32 channels that learned
// too slowly for one epoch (0.79 test accuracy against 0.87; docs/benchmarks.md). The convolutions
// before a batch_norm have no bias (batch_norm's beta replaces it). batch_norm's gamma starts at
// ones (PyTorch's and the paper's; the seed's default is glorot_uniform), momentum 0.1.
static Model conv_resnet() {
  BatchNormOptions bn;
  bn.gamma_initializer = initializers::ones();
  auto conv3 = [](int64_t units, int64_t stride) {
    return conv(units, {.kernel_size = {3}, .strides = {stride}, .padding = Padding::same(), .use_bias = false});
  };
  Model x = input({-1, 28, 28, 1}) | conv3(16, 1) | batch_norm(bn) | relu() | max_pool({.kernel_size = {2}});
  x = add(x, x | conv3(16, 1) | batch_norm(bn) | relu() | conv3(16, 1) | batch_norm(bn)) | relu();
  Model shortcut = x | conv(32, {.kernel_size = {1}, .strides = {2}, .use_bias = false}) | batch_norm(bn);
  x = add(shortcut, x | conv3(32, 2) | batch_norm(bn) | relu() | conv3(32, 1) | batch_norm(bn)) | relu();
  return x | flatten() | dense(10);
}

// The cnn of issue #8; `padding` is its convolutions' ('same', the default: 28→28→14→14→7, flatten
// 3136, 421,642 parameters; 'valid': 28→26→13→11→5, flatten 1600, 225,034 parameters). 'same'
// reached the 0.90 in 3 epochs where 'valid' stopped at 0.893 (docs/benchmarks.md).
static Model cnn(const std::string& padding) {
  const Padding pad = padding == "same" ? Padding::same() : Padding::valid();
  return input({-1, 28, 28, 1}) |
         conv(32, {.kernel_size = {3}, .padding = pad, .activation = Activation::relu}) |
         max_pool({.kernel_size = {2}}) |
         conv(64, {.kernel_size = {3}, .padding = pad, .activation = Activation::relu}) |
         max_pool({.kernel_size = {2}}) | flatten() | dense(128, Activation::relu) | dense(10);
}

static Model build_model(const std::string& name, const std::string& padding) {
  if (name == "mlp") return input({-1, 784}) | dense(128, Activation::relu) | dense(10);
  if (name == "mlp_big")
    return input({-1, 784}) | dense(1024, Activation::relu) | dense(1024, Activation::relu) | dense(10);
  if (name == "resnet") return conv_resnet();
  if (name == "cnn") return cnn(padding);  // images as {batch, 28, 28, 1}, channels last (the seed's layout)
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
  // --model cnn standardizes its pixels by default (docs/benchmarks.md, "The CNN"); the others don't.
  bool standardize_flag = false, no_standardize = false;
  std::string padding = "same";
  bool no_progress = false, cuda_graph = false;
  double validation_split = 0.0;
  int early_stopping_patience = 0, keep_checkpoints = 0, grad_accum = 1, zero_stage = 0;
  double bucket_mb = 25.0;
  int64_t checkpoint_every = 0, validate_every = 0;
  std::string checkpoint_dir, resume, log_dir;
  std::string device_name = "cpu", precision = "f32", backend_name = "auto";
  // axonrun --backend B exports AXON_BACKEND=B to the ranks: the default of --backend.
  if (const char* backend = std::getenv("AXON_BACKEND"); backend && *backend) backend_name = backend;
  app.add_option("--model", model_name, "Model to train")->check(CLI::IsMember({"mlp", "mlp_big", "resnet", "cnn"}));
  cli::add_integer(app, "--epochs", epochs, 1, 100000, "Passes over the training set");
  cli::add_integer(app, "--batch-size", batch_size, size_t{1}, size_t{1} << 20,
                   "Samples per rank per step (global batch = this × ranks)");
  app.add_option("--optimizer", optimizer_name, "Optimizer (default options, docs/optimizers.md)")
      ->check(CLI::IsMember(optimizer_names()));
  std::string lr_schedule = "constant";
  app.add_option("--lr-schedule", lr_schedule,
                 "Learning rate per step from --lr: constant, exponential, cosine, cosine_restarts, polynomial or step, "
                 "with options as NAME:key=value,... and warmup=N on any (docs/optimizers.md)")
      ->default_str("constant");
  // The optimizers compute in float: a double such as 1e-50 would become 0 there (no training).
  cli::add_real(app, "--lr", lr, cli::positive_float(), "Learning rate");
  cli::add_integer(app, "--threads", threads, 1, 1024, "Threads per rank (default: cores / ranks on this machine)")
      ->default_str("auto");
  cli::add_integer(app, "--seed", seed, uint64_t{0}, std::numeric_limits<uint64_t>::max(),
                   "Seed for initialization and shuffling");
  app.add_option("--data", data_dir, "Folder with the Fashion-MNIST IDX files");
  app.add_flag("--no-progress", no_progress, "No live progress line");
  auto* standardize_option =
      app.add_flag("--standardize", standardize_flag,
                   "Standardize the pixels with the training set's mean and standard deviation (x/255 otherwise); "
                   "the default for --model cnn");
  app.add_flag("--no-standardize", no_standardize, "Pixels as x/255, also for --model cnn")->excludes(standardize_option);
  app.add_option("--padding", padding, "--model cnn's convolutions: same (28→28→14→14→7) or valid (28→26→13→11→5)")
      ->check(CLI::IsMember({"valid", "same"}))
      ->default_str("same");
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
  app.add_flag("--cuda-graph", cuda_graph, "Capture the training step in a CUDA graph and replay it (--device cuda; with several ranks also "
               "--backend nccl)");
  app.add_option("--validation-split", validation_split,
                 "Hold out this fraction of the training set (its last samples) as validation data, evaluated "
                 "after every epoch; the test set is then evaluated once at the end")
      ->check(CLI::Range(0.0, 0.5));
  cli::add_integer(app, "--validate-every", validate_every, int64_t{0}, std::numeric_limits<int64_t>::max(),
                   "Also validate every N optimizer steps (0: at epoch ends only; logged as step/* in TensorBoard)");
  cli::add_integer(app, "--early-stopping-patience", early_stopping_patience, 0, 1000000,
                   "Stop when validation loss has not improved for this many epochs (0: off)");
  app.add_option("--checkpoint-dir", checkpoint_dir,
                 "Write a checkpoint here after every epoch (and every --checkpoint-every steps)");
  cli::add_integer(app, "--checkpoint-every", checkpoint_every, int64_t{0}, std::numeric_limits<int64_t>::max(),
                   "Also checkpoint every N optimizer steps (0: at epoch ends only)");
  cli::add_integer(app, "--keep-checkpoints", keep_checkpoints, 0, 1000000, "Keep only the newest N checkpoints (0: all)");
  app.add_option("--resume", resume,
                 "Continue from a checkpoint: its folder, a folder of checkpoints (the newest valid one), or 'auto' "
                 "(the newest in --checkpoint-dir when there is one, else start fresh)");
  app.add_option("--log-dir", log_dir,
                 "Write metrics.csv (a row per epoch) and a TensorBoard event file here (per epoch, and per "
                 "--validate-every steps)");
  cli::add_integer(app, "--grad-accum", grad_accum, 1, 1 << 20,
                   "Accumulate gradients over N batches per optimizer step");
  app.add_option("--bucket-mb", bucket_mb,
                 "Gradient all-reduce bucket size in MiB (the first bucket is 1 MiB at most), started as backward "
                 "produces them; 0: one all-reduce after backward")
      ->check(CLI::Range(0.0, 4096.0));
  cli::add_integer(app, "--zero", zero_stage, 0, 2,
                   "ZeRO stage: 0 off, 1 shard the optimizer state over the ranks, 2 also reduce-scatter the "
                   "gradients (sgd, adam, adamw)");
  Device device;
  cli::ParseOutcome parsed;
  try {
    app.parse(argc, argv);
    try {
      device = parse_device(device_name);
    } catch (const std::invalid_argument& e) {
      throw CLI::ValidationError("--device", e.what());
    }
    if (cuda_graph && !device.is_cuda()) throw CLI::ValidationError("--cuda-graph", "needs --device cuda");
    if (app.count("--padding") > 0 && model_name != "cnn")
      throw CLI::ValidationError("--padding", "applies to --model cnn only, not " + model_name);
    if ((checkpoint_every > 0 || keep_checkpoints > 0) && checkpoint_dir.empty())
      throw CLI::ValidationError("--checkpoint-every/--keep-checkpoints", "need --checkpoint-dir");
    if (resume == "auto" && checkpoint_dir.empty()) throw CLI::ValidationError("--resume", "auto needs --checkpoint-dir");
    if (early_stopping_patience > 0 && validation_split == 0.0 && synthetic > 0)
      throw CLI::ValidationError("--early-stopping-patience", "needs validation data: --validation-split, or the real data set");
    if (cuda_graph && grad_accum > 1) throw CLI::ValidationError("--grad-accum", "cannot be combined with --cuda-graph");
    if (validate_every > 0 && validation_split == 0.0 && synthetic > 0)
      throw CLI::ValidationError("--validate-every", "needs validation data: --validation-split, or the real data set");
    if (!checkpoint_dir.empty() && std::filesystem::exists(checkpoint_dir) && !std::filesystem::is_directory(checkpoint_dir))
      throw CLI::ValidationError("--checkpoint-dir", checkpoint_dir + " exists and is not a directory");
    try {
      parse_schedule(lr_schedule, lr);
    } catch (const std::invalid_argument& e) {
      throw CLI::ValidationError("--lr-schedule", e.what());
    }
    if (cuda_graph && lr_schedule != "constant")
      throw CLI::ValidationError("--cuda-graph", "needs --lr-schedule constant (a graph replays the captured rate)");
    if (cuda_graph && optimizer_name != "sgd" && optimizer_name != "adam" && optimizer_name != "adamw")
      throw CLI::ValidationError("--cuda-graph", "needs --optimizer sgd, adam or adamw (the fused, capturable ones)");
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

  const bool standardize = standardize_flag || (model_name == "cnn" && !no_standardize);
  if (standardize) {  // (x − mean) / std over every training pixel, the same numbers for the test set
    double sum = 0.0, sq = 0.0;
    for (float v : train.images) sum += v;
    const double mean = sum / static_cast<double>(train.images.size());
    for (float v : train.images) sq += (v - mean) * (v - mean);
    const double sd = std::sqrt(sq / static_cast<double>(train.images.size()));
    for (data::Dataset* ds : {&train, &test})
      for (float& v : ds->images) v = static_cast<float>((v - mean) / sd);
    if (comm->is_root()) std::fprintf(stderr, "axon: pixels standardized: mean %.4f, std %.4f\n", mean, sd);
  }

  Model model = build_model(model_name, padding);
  if (model_name == "cnn" || model_name == "resnet")  // one channel: the samples are {28, 28, 1} images
    for (data::Dataset* ds : {&train, &test}) ds->sample_shape = {28, 28, 1};
  Parameters params = init(model, seed).to(device);
  auto optimizer = make_optimizer(optimizer_name, lr);
  if (lr_schedule != "constant") optimizer = scheduled(std::move(optimizer), parse_schedule(lr_schedule, lr));
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

  // --validation-split: the last samples of the training set become the per-epoch validation data.
  data::Dataset validation;
  if (validation_split > 0.0) {
    const size_t held = static_cast<size_t>(static_cast<double>(train.count) * validation_split);
    if (held == 0 || held == train.count)
      throw std::invalid_argument(fmt::format("--validation-split {} of {} training samples leaves {} for validation",
                                              validation_split, train.count, held));
    validation = train;
    validation.count = held;
    validation.images.assign(train.images.end() - static_cast<std::ptrdiff_t>(held * train.sample_size), train.images.end());
    validation.labels.assign(train.labels.end() - static_cast<std::ptrdiff_t>(held), train.labels.end());
    validation.source = train.source + fmt::format(" (last {} samples, --validation-split {})", held, validation_split);
    train.count -= held;
    train.images.resize(train.count * train.sample_size);
    train.labels.resize(train.count);
  }

  TrainOptions options;
  options.epochs = epochs;
  options.batch_size = batch_size;
  options.seed = seed;
  options.progress = !no_progress;
  options.compute_dtype = parse_dtype(precision);
  options.cuda_graph = cuda_graph;
  options.grad_accum = grad_accum;
  options.bucket_bytes = static_cast<size_t>(bucket_mb * (1 << 20));
  options.first_bucket_bytes = std::min<size_t>(options.first_bucket_bytes, options.bucket_bytes);
  options.zero_stage = zero_stage;
  options.validate_every_steps = validate_every;
  // SIGTERM or SIGUSR1 (Slurm's --signal): checkpoint at the next check step and exit with
  // kExitPreempted, to be resumed with --resume auto.
  if (!checkpoint_dir.empty()) {
    install_preemption_handler();
    options.preemption_checkpoint_dir = checkpoint_dir;
  }
  Trainer trainer(model, params, *optimizer, *comm, options);
  // Every rank attaches the same callbacks (they decide alike; only rank 0 writes).
  if (!log_dir.empty()) {
    trainer.add_callback(csv_logger(log_dir + "/metrics.csv"));
    trainer.add_callback(tensorboard_logger(log_dir));
  }
  if (early_stopping_patience > 0 && validation_split == 0.0 && comm->is_root())
    std::fprintf(stderr, "fashion_mnist: warning: --early-stopping-patience without --validation-split watches the "
                         "test set's loss: the test accuracy is then no longer an unbiased estimate\n");
  if (early_stopping_patience > 0) {
    EarlyStoppingOptions stopping;
    stopping.patience = early_stopping_patience;  // on validation_loss
    trainer.add_callback(early_stopping(stopping));
  }
  if (!checkpoint_dir.empty()) {
    ModelCheckpointOptions saving;
    saving.dir = checkpoint_dir;
    saving.every_steps = checkpoint_every;
    saving.keep_last = keep_checkpoints;
    trainer.add_callback(model_checkpoint(saving));
  }
  std::string resumed_from;
  if (!resume.empty()) {
    const std::string from = resume == "auto" ? checkpoint_dir : resume;
    if (resume != "auto" || !list_checkpoints(from).empty()) resumed_from = trainer.load_checkpoint(from);
    if (comm->is_root() && !resumed_from.empty())
      std::fprintf(stderr, "axon: resumed from %s (optimizer step %lld)\n", resumed_from.c_str(),
                   static_cast<long long>(optimizer->steps()));
  }
  const data::Dataset* per_epoch = validation_split > 0.0 ? &validation : (synthetic > 0 ? nullptr : &test);
  TrainResult result = trainer.fit(train, per_epoch);
  // With a validation split the test set is evaluated once, at the end.
  if (validation_split > 0.0 && !result.epochs.empty())
    result.epochs.back().test = synthetic == 0 ? trainer.evaluate(test) : EvalResult{};  // synthetic: no test set

  if (const int signal = trainer.loop_state().preempted) {
    if (comm->is_root())
      std::fprintf(stderr, "fashion_mnist: preempted by signal %d (%s) at optimizer step %lld: checkpoint %s written; "
                   "continue with --resume auto --checkpoint-dir %s\n",
                   signal, strsignal(signal), static_cast<long long>(optimizer->steps()),
                   trainer.loop_state().preemption_checkpoint.c_str(), checkpoint_dir.c_str());
    mark_failure_collective();  // every rank stops here alike: MPI finalizes instead of aborting
    return kExitPreempted;
  }
  if (result.epochs.empty()) throw std::runtime_error("fashion_mnist: no epoch was trained or recorded");
  if (comm->is_root()) {
    // Metrics over 0 samples were not measured: said on stderr, null in the JSON, never 0.
    auto metric = [](const std::optional<double>& v) { return v ? fmt::format("{:.4f}", *v) : std::string("n/a"); };
    for (const EpochResult& e : result.epochs)
      std::fprintf(stderr, "epoch %d: train loss %.4f acc %.4f | %s loss %s acc %s | %.2fs\n", e.epoch,
                   e.train_loss, e.train_accuracy,
                   validation_split > 0.0 && &e != &result.epochs.back() ? "validation" : "test",
                   metric(e.test.loss).c_str(), metric(e.test.accuracy).c_str(), e.train_seconds);
    const EpochResult& last = result.epochs.back();
    if (synthetic > 0)
      std::fprintf(stderr, "fashion_mnist: note: synthetic data has no test split: test metrics not measured\n");
    else if (last.test.samples == 0)
      std::fprintf(stderr, "fashion_mnist: note: test split is empty (%s): test metrics not measured\n",
                   test.source.c_str());
    std::vector<double> epoch_rates;  // each epoch's own samples/s (the first includes warm-up)
    for (const EpochResult& e : result.epochs)
      epoch_rates.push_back(e.train_seconds > 0 ? static_cast<double>(e.train_samples) / e.train_seconds : 0.0);
    auto json_metric = [](const std::optional<double>& v) { return v ? nlohmann::json(*v) : nlohmann::json(nullptr); };
    // This rank's optimizer state (ZeRO shards it: about 1/world_size of the unsharded bytes).
    size_t optimizer_state_bytes = 0;
    for (const auto& [name, tensor] : optimizer->state())
      if (tensor->defined()) optimizer_state_bytes += tensor->nbytes();
    nlohmann::json out = {{"model", model_name},
                          {"world_size", comm->size()},
                          {"epochs", epochs},
                          {"batch_size", batch_size},
                          // Everything else params_sha256 depends on (docs/getting-started.md).
                          {"optimizer", optimizer_name},
                          {"lr", lr},
                          {"lr_schedule", lr_schedule},
                          {"seed", seed},
                          {"threads", threads},
                          {"blas", blas_library()},
                          {"blas_kernels", blas_kernels()},
                          // What ran the convolutions (axon/conv_ops.h: oneDNN takes f32 on the CPU).
                          {"conv", device.is_cuda() ? "im2col+cublas"
                                   : precision == "f32" && onednn_enabled() ? onednn_version()
                                                                            : "im2col+gemm"},
                          {"device", device.str()},
                          {"dtype", precision},
                          {"cuda_graph", cuda_graph},
                          {"backend", comm->backend()},
                          {"bucket_mb", bucket_mb},
                          {"zero_stage", zero_stage},
                          {"optimizer_state_bytes", optimizer_state_bytes},
                          {"gradient_wait_s", trainer.gradient_wait_seconds()},
                          {"data", synthetic > 0 ? train.source : data_dir},
                          {"standardize", standardize},
                          {"padding", model_name == "cnn" ? nlohmann::json(padding) : nlohmann::json(nullptr)},
                          {"axon_version", AXON_VERSION},
                          {"test_accuracy", json_metric(last.test.accuracy)},
                          {"test_loss", json_metric(last.test.loss)},
                          {"test_samples", last.test.samples},
                          {"train_samples_per_s", result.samples_per_second()},
                          {"train_loss", last.train_loss},
                          {"epochs_trained", result.epochs.size()},
                          {"global_step", optimizer->steps()},
                          {"stopped_early", trainer.loop_state().halt},
                          {"resumed_from", resumed_from.empty() ? nlohmann::json(nullptr) : nlohmann::json(resumed_from)},
                          {"epoch_samples_per_s", epoch_rates},
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
