// char_lm: a character-level language model trained on text that a Debian package ships (the
// `fortunes` package's files), on the CPU, a GPU, or several ranks (axonrun -n 2: data parallel,
// gradients averaged with one all-reduce per step).
//
//   build/bin/char_lm --steps 300                       # transformer, default data, one rank
//   build/bin/axonrun -n 2 build/bin/char_lm --steps 300
//   build/bin/char_lm --device cuda --data /usr/share/games/fortunes/fortunes
//
// Prints the loss curve (nats per character), a few sampled lines, and ends with one JSON line:
// model, steps, train_loss, val_loss, tokens_per_s (training tokens over every rank per second
// of training, evaluation excluded), world_size. bench/torch_char_lm.py is the same model and data
// in PyTorch (docs/benchmarks.md).
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "axon/autograd.h"
#include "axon/cli.h"
#include "axon/communicator.h"
#include "axon/cpu_budget.h"
#include "axon/cuda.h"
#include "axon/data_parallel.h"
#include "axon/losses.h"
#include "axon/model.h"
#include "axon/recurrent_layers.h"
#include "axon/optimizers.h"

using namespace axon;

namespace {

// The vocabulary: '\n' is 0, printable ASCII ' '..'~' are 1..95; every other byte (tabs, UTF-8)
// is dropped. bench/torch_char_lm.py uses the same.
constexpr int64_t kVocab = 96;
int encode(unsigned char c) {
  if (c == '\n') return 0;
  if (c >= 32 && c <= 126) return c - 31;
  return -1;
}
char decode(int64_t id) { return id == 0 ? '\n' : static_cast<char>(id + 31); }

// The default text: every file of the fortunes package without an extension (the .dat indexes
// and .u8 links are left out), in name order.
std::vector<std::string> default_files() {
  const std::filesystem::path dir = "/usr/share/games/fortunes";
  std::vector<std::string> files;
  if (std::filesystem::is_directory(dir))
    for (const auto& e : std::filesystem::directory_iterator(dir))
      if (e.is_regular_file() && !e.path().has_extension()) files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  if (files.empty())
    throw std::runtime_error(fmt::format("no text in {} (install the Debian package fortunes: scripts/install-deps.sh), "
                                         "or pass --data FILE...",
                                         dir.string()));
  return files;
}

std::vector<int32_t> load_text(const std::vector<std::string>& files) {
  std::vector<int32_t> ids;
  for (const std::string& f : files) {
    std::ifstream in(f, std::ios::binary);
    if (!in) throw std::runtime_error(fmt::format("--data: cannot read {}", f));
    std::ostringstream ss;
    ss << in.rdbuf();
    for (char c : ss.str())
      if (int id = encode(static_cast<unsigned char>(c)); id >= 0) ids.push_back(id);
  }
  return ids;
}

struct ModelConfig {
  std::string kind = "transformer";
  int64_t context = 64, d_model = 64, layers = 2, heads = 4;
};

// The one place a model is chosen: {batch, context} ids (i64) -> {batch, context, kVocab} logits.
Model build_model(const ModelConfig& c) {
  if (c.kind != "transformer" && c.kind != "lstm")
    throw std::invalid_argument(fmt::format("--model {}: expected transformer or lstm", c.kind));
  Model ids = input({-1, c.context});
  Model tokens = ids | embedding(kVocab, c.d_model);
  if (c.kind == "lstm") {
    // `layers` stacked lstm layers of 2·d_model units (the fused CPU path), then a dense head over
    // every position: {batch, context, 2·d_model} -> {batch, context, kVocab}.
    Model h = tokens;
    for (int64_t i = 0; i < c.layers; ++i) h = h | lstm(2 * c.d_model);
    return h | dense(kVocab);
  }
  // Learned positions (GPT-2), one {context, d_model} table added to every sample.
  CustomLayerOptions pos;
  pos.op_name = "position_embedding";
  pos.params = {{"kernel", {c.context, c.d_model}, initializers::normal(0.0f, 0.02f)}};
  pos.output_shape = [](const std::vector<Shape>& in) { return in.at(0); };
  Model h = layer([](const std::vector<Tensor>& in, std::span<const Tensor> p) { return add(in[0], p[0]); }, {tokens},
                  pos);
  for (int64_t i = 0; i < c.layers; ++i) h = h | transformer_block({.num_heads = c.heads, .causal = true});
  return h | layer_norm({.gamma_initializer = initializers::ones()}) | tied_dense(tokens);
}

struct Batch {
  Tensor ids;     // i64 {batch, context}
  Tensor labels;  // i32 {batch·context}: the next character of each position
};

Batch make_batch(const std::vector<int32_t>& text, const std::vector<int64_t>& starts, int64_t context, Device device) {
  std::vector<int64_t> ids;
  std::vector<int32_t> labels;
  for (int64_t s : starts)
    for (int64_t t = 0; t < context; ++t) {
      ids.push_back(text[static_cast<size_t>(s + t)]);
      labels.push_back(text[static_cast<size_t>(s + t + 1)]);
    }
  const int64_t n = static_cast<int64_t>(starts.size());
  return {Tensor::from_vector({n, context}, ids, {DType::i64, device}),
          Tensor::from_vector({n * context}, labels, {DType::i32, device})};
}

Tensor batch_loss(const ModelPlan& plan, const Parameters& params, const Batch& b, bool training) {
  Tensor logits = forward(plan, params, b.ids, ForwardContext{.training = training});
  return softmax_cross_entropy(logits.reshape({-1, kVocab}), b.labels);
}

// The mean loss over fixed windows evenly spread over the validation text (the same on every rank).
double validation_loss(const ModelPlan& plan, const Parameters& params, const std::vector<int32_t>& val,
                       int64_t context, int64_t batch, int64_t batches, Device device) {
  NoGradGuard no_grad;
  const int64_t span = static_cast<int64_t>(val.size()) - context - 1;
  double total = 0;
  for (int64_t k = 0; k < batches; ++k) {
    std::vector<int64_t> starts;
    for (int64_t i = 0; i < batch; ++i) starts.push_back(((k * batch + i) * span) / (batch * batches));
    total += batch_loss(plan, params, make_batch(val, starts, context, device), false).item_double();
  }
  return total / static_cast<double>(batches);
}

std::string sample(const ModelPlan& plan, const Parameters& params, int64_t context, int64_t chars, std::mt19937_64& rng,
                   Device device) {
  NoGradGuard no_grad;
  std::vector<int64_t> window(static_cast<size_t>(context), 0);  // starts after a run of newlines
  std::string out;
  for (int64_t n = 0; n < chars; ++n) {
    Tensor ids = Tensor::from_vector({1, context}, window, {DType::i64, device});
    Tensor logits = forward(plan, params, ids, {}).reshape({context, kVocab});
    std::vector<double> last = logits.to(Device::cpu()).to_double_vector();
    std::vector<double> p(last.end() - kVocab, last.end());
    const double m = *std::max_element(p.begin(), p.end());
    for (double& x : p) x = std::exp((x - m) / 0.8);  // temperature 0.8
    std::discrete_distribution<int64_t> pick(p.begin(), p.end());
    const int64_t id = pick(rng);
    out += decode(id);
    window.erase(window.begin());
    window.push_back(id);
  }
  return out;
}

int run(int argc, char** argv) {
  CLI::App app{"Train a character-level language model on the fortunes package's text"};
  ModelConfig mc;
  int64_t steps = 300, batch = 16, eval_every = 50, eval_batches = 8;
  int threads = 0;
  uint64_t seed = 0;
  double lr = 3e-3;
  std::string device_name = "cpu";
  std::vector<std::string> files;
  app.add_option("--model", mc.kind, "transformer or lstm")->check(CLI::IsMember({"transformer", "lstm"}));
  cli::add_integer(app, "--steps", steps, int64_t{1}, int64_t{10000000}, "Optimizer steps");
  cli::add_integer(app, "--batch-size", batch, int64_t{1}, int64_t{1} << 20, "Sequences per rank per step");
  cli::add_integer(app, "--context", mc.context, int64_t{2}, int64_t{4096}, "Characters per sequence");
  cli::add_integer(app, "--d-model", mc.d_model, int64_t{1}, int64_t{1} << 16, "Embedding width");
  cli::add_integer(app, "--layers", mc.layers, int64_t{0}, int64_t{64}, "Transformer blocks");
  cli::add_integer(app, "--heads", mc.heads, int64_t{1}, int64_t{256}, "Attention heads (must divide --d-model)");
  cli::add_real(app, "--lr", lr, cli::positive_float(), "AdamW learning rate (weight decay 0.01)");
  cli::add_integer(app, "--eval-every", eval_every, int64_t{1}, int64_t{10000000}, "Steps between validation losses");
  cli::add_integer(app, "--threads", threads, 1, 1024, "Threads per rank (default: cores / ranks on this machine)");
  cli::add_integer(app, "--seed", seed, uint64_t{0}, std::numeric_limits<uint64_t>::max(), "Seed of init and batches");
  app.add_option("--device", device_name, "cpu, cuda or cuda:k");
  app.add_option("--data", files, "Text files (default: every fortunes file in /usr/share/games/fortunes)");
  Device device;
  try {
    app.parse(argc, argv);
    try {
      device = parse_device(device_name);
    } catch (const std::invalid_argument& e) {
      throw CLI::ValidationError("--device", e.what());
    }
    if (mc.kind == "transformer" && mc.d_model % mc.heads != 0)
      throw CLI::ValidationError("--heads", fmt::format("{} does not divide --d-model {}", mc.heads, mc.d_model));
  } catch (const CLI::ParseError& e) {
    return cli::exit_on_parse_error(app, e, launcher_rank());
  }
  std::unique_ptr<Communicator> comm = make_communicator();
  if (device.is_cuda() && device_name == "cuda") device = Device::cuda(cuda::device_for_local_rank(local_rank()));
  if (threads == 0) threads = cpu_budget(local_world_size()).threads;
  set_num_threads(threads);

  std::vector<int32_t> text;
  cli::run_on_all_ranks(*comm, "char_lm", [&] {
    text = load_text(files.empty() ? default_files() : files);
    if (static_cast<int64_t>(text.size()) < 20 * (mc.context + 1))
      throw std::runtime_error(fmt::format("--data: {} usable characters is too little for --context {}", text.size(),
                                           mc.context));
  });
  // The last 10% is the validation text.
  const size_t cut = text.size() - text.size() / 10;
  const std::vector<int32_t> train(text.begin(), text.begin() + static_cast<int64_t>(cut)), val(text.begin() + static_cast<int64_t>(cut), text.end());

  const Model model = build_model(mc);
  const ModelPlan plan = axon::plan(model);
  Parameters params = init(model, seed);
  if (!device.is_cpu()) params = params.to(device);
  DataParallel dp(*comm, params.flat_values(), params.flat_grads());
  dp.broadcast_parameters();
  auto optimizer = adamw({.lr = lr, .weight_decay = 1e-2});
  Tensor flat = params.flat_values();
  const Tensor grads = params.flat_grads();
  if (comm->is_root())
    std::cout << fmt::format("char_lm: {} ({} blocks, d_model {}, {} heads, context {}), {} parameters, {} characters "
                             "({} train, {} validation), {} rank(s) x batch {}, {} thread(s), {}\n",
                             mc.kind, mc.layers, mc.d_model, mc.heads, mc.context, params.count(), text.size(),
                             train.size(), val.size(), comm->size(), batch, threads, device.str())
              << std::flush;

  // Each rank draws its own windows (seed, rank): together they are one batch of world·batch.
  std::mt19937_64 rng(seed * 1000003 + static_cast<uint64_t>(comm->rank()) + 1);
  std::uniform_int_distribution<int64_t> start_of(0, static_cast<int64_t>(train.size()) - mc.context - 2);
  double train_seconds = 0, last_train_loss = 0, window_loss = 0, val_loss = 0;
  int64_t window_steps = 0;
  for (int64_t step = 1; step <= steps; ++step) {
    std::vector<int64_t> starts;
    for (int64_t i = 0; i < batch; ++i) starts.push_back(start_of(rng));
    const Batch b = make_batch(train, starts, mc.context, device);
    const auto t0 = std::chrono::steady_clock::now();
    params.zero_grad();
    Tensor loss = batch_loss(plan, params, b, true);
    loss.backward();
    const double l = loss.item_double();
    if (comm->size() > 1) {
      // Every rank learns whether any rank's loss is not finite (a max over 0/1 flags folded into
      // the gradient average's step), so all stop together instead of one waiting forever.
      std::vector<double> bad{std::isfinite(l) ? 0.0 : 1.0};
      comm->allreduce(std::span<double>(bad), ReduceOp::max);
      if (bad[0] != 0.0)
        throw std::runtime_error(fmt::format("step {}: the training loss is not finite on some rank (here {})", step, l));
      dp.average_gradients();
    }
    if (!std::isfinite(l)) throw std::runtime_error(fmt::format("step {}: the training loss is {}", step, l));
    optimizer->step(flat, grads);
    train_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    window_loss += l;
    ++window_steps;
    if (step % eval_every == 0 || step == steps) {
      std::vector<double> mean{window_loss / static_cast<double>(window_steps)};
      comm->allreduce(std::span<double>(mean));  // the loss over every rank's windows
      last_train_loss = mean[0] / comm->size();
      val_loss = validation_loss(plan, params, val, mc.context, batch, eval_batches, device);
      if (comm->is_root())
        std::cout << fmt::format("step {:>6}  train_loss {:.4f}  val_loss {:.4f}  ({:.1f} s training)\n", step,
                                 last_train_loss, val_loss, train_seconds)
                  << std::flush;
      window_loss = 0;
      window_steps = 0;
    }
  }
  const double tokens_per_s =
      static_cast<double>(steps * batch * mc.context * comm->size()) / std::max(train_seconds, 1e-9);
  if (comm->is_root()) {
    std::mt19937_64 sampler(seed);
    std::cout << "samples:\n" << sample(plan, params, mc.context, 240, sampler, device) << "\n";
    nlohmann::json out{{"model", mc.kind},           {"steps", steps},
                       {"train_loss", last_train_loss}, {"val_loss", val_loss},
                       {"tokens_per_s", tokens_per_s},  {"world_size", comm->size()},
                       {"threads", threads},            {"device", device.str()},
                       {"parameters", params.count()}};
    std::cout << out.dump() << std::endl;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const cli::ReportedError&) {
    mark_failure_collective();
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "char_lm: error: %s\n", e.what());
    return 1;
  }
}
