// Checkpoints (safetensors files, atomic directories, verification), bit-exact resume, the loop's
// events and the built-in callbacks and logs.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <tuple>

#include <fmt/format.h>

#include "../support/process.h"
#include "axon/callbacks.h"
#include "axon/checkpoint.h"
#include "axon/communicator.h"
#include "axon/data.h"
#include "axon/optimizers.h"
#include "axon/trainer.h"

namespace axon {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class TempDir : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("axon_ckpt_" + std::to_string(getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}
void spit(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

// ---- safetensors ----

using SafetensorsTest = TempDir;

TEST_F(SafetensorsTest, RoundTripsEveryDtype) {
  NamedTensors in{{"w", Tensor::from_vector({2, 3}, std::vector<float>{1, -2, 3.5f, 4, 5, 6})},
                  {"d", Tensor::from_vector({2}, std::vector<double>{0.1, -1e300}, {DType::f64, Device::cpu()})},
                  {"b", Tensor::from_vector({3}, std::vector<float>{1.5f, -2.0f, 0.25f}).to(DType::bf16)},
                  {"i", Tensor::from_vector({2}, std::vector<int32_t>{7, -8}, {DType::i32, Device::cpu()})},
                  {"l", Tensor::from_vector({1}, std::vector<int64_t>{int64_t{1} << 40}, {DType::i64, Device::cpu()})},
                  {"empty", Tensor::zeros({0, 4})}};
  std::map<std::string, std::string> meta_in{{"by", "axon"}}, meta_out;
  write_safetensors(path("t.safetensors"), in, meta_in);
  const NamedTensors out = read_safetensors(path("t.safetensors"), &meta_out);
  EXPECT_EQ(meta_out, meta_in);
  ASSERT_EQ(out.size(), in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    EXPECT_EQ(out[i].first, in[i].first);  // file order is write order
    EXPECT_EQ(out[i].second.shape(), in[i].second.shape());
    EXPECT_EQ(out[i].second.dtype(), in[i].second.dtype());
    EXPECT_EQ(0, std::memcmp(out[i].second.raw_data(), in[i].second.raw_data(), in[i].second.nbytes())) << in[i].first;
  }
  // The layout safetensors specifies: 8-byte little-endian header length, then JSON.
  const std::string bytes = slurp(path("t.safetensors"));
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  const nlohmann::json header = nlohmann::json::parse(bytes.substr(8, n));
  EXPECT_EQ(header["w"]["dtype"], "F32");
  EXPECT_EQ(header["b"]["dtype"], "BF16");
  EXPECT_EQ(header["w"]["data_offsets"], nlohmann::json::array({0, 24}));
  EXPECT_EQ(header["__metadata__"]["by"], "axon");
}

TEST_F(SafetensorsTest, CorruptFilesAreRefusedNamingTheCheck) {
  write_safetensors(path("good"), {{"w", Tensor::ones({4})}, {"v", Tensor::ones({2})}});
  const std::string good = slurp(path("good"));
  uint64_t n = 0;
  std::memcpy(&n, good.data(), 8);
  const std::string header = good.substr(8, n);
  auto with_header = [&](const std::string& h, const std::string& data) {
    std::string padded = h;
    std::string out(8, '\0');
    const uint64_t len = padded.size();
    std::memcpy(out.data(), &len, 8);
    return out + padded + data;
  };
  const std::string data = good.substr(8 + n);
  const std::vector<std::pair<std::string, std::string>> cases{
      {good.substr(0, 5), "shorter than the 8-byte header length"},
      {good.substr(0, 8 + n / 2), "runs past the end"},
      {good.substr(0, good.size() - 4), "do not fit the 20 data bytes (truncated?)"},
      {good + "xxxx", "the tensors cover 24 bytes but the file holds 28"},
      {with_header("{not json", data), "not valid JSON"},
      {with_header("[1,2]", data), "does not start with '{'"},
      {with_header(R"({"w":{"dtype":"F32","shape":4,"data_offsets":[0,16]}})", data.substr(0, 16)), "malformed entry"},
      {with_header(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0.5,16]}})", data.substr(0, 16)), "is not [begin, end]"},
      {with_header(R"({"w":{"dtype":"F16","shape":[4],"data_offsets":[0,16]}})", data.substr(0, 16)), "unsupported dtype"},
      {with_header(R"({"w":{"dtype":"F32","shape":[5],"data_offsets":[0,16]}})", data.substr(0, 16)), "needs 20 bytes"},
      {with_header(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"v":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                   data),
       "overlapping or gapped"},
      {with_header(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,99]}})", data), "do not fit"},
      {with_header(R"({"w":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}})", data.substr(0, 16)), "negative dimension"},
      {with_header(R"({"w":{"dtype":"F32"}})", data), "malformed entry"},
  };
  for (const auto& [bytes, message] : cases) {
    spit(path("bad"), bytes);
    const std::string e = error_of([&] { read_safetensors(path("bad")); });
    EXPECT_THAT(e, HasSubstr(path("bad"))) << message;
    EXPECT_THAT(e, HasSubstr(message));
  }
  (void)header;
}

// ---- checkpoint directories ----

using CheckpointTest = TempDir;

std::map<std::string, NamedTensors> some_files(float value) {
  return {{"model.safetensors", {{"w", Tensor::full({1000}, value)}}}, {"optimizer.safetensors", {{"m", Tensor::zeros({10})}}}};
}

TEST_F(CheckpointTest, AlteredOrTruncatedFilesAreRefusedAndTheNewestValidIsUsed) {
  write_checkpoint(dir_.string(), checkpoint_name(1), some_files(1.0f), {{"step", 1}});
  write_checkpoint(dir_.string(), checkpoint_name(2), some_files(2.0f), {{"step", 2}});
  EXPECT_EQ(list_checkpoints(dir_.string()).size(), 2u);
  const std::string newest = path(checkpoint_name(2)), model = newest + "/model.safetensors";
  EXPECT_EQ(read_checkpoint(newest).meta["step"], 2);

  // One flipped byte: the SHA-256 check names the file.
  std::string bytes = slurp(model);
  bytes[bytes.size() - 3] ^= 0x10;
  spit(model, bytes);
  std::string e = error_of([&] { read_checkpoint(newest); });
  EXPECT_THAT(e, HasSubstr(model));
  EXPECT_THAT(e, HasSubstr("fails its SHA-256 check"));
  // Truncated: the size check names it.
  spit(model, bytes.substr(0, bytes.size() / 2));
  e = error_of([&] { read_checkpoint(newest); });
  EXPECT_THAT(e, HasSubstr(model));
  EXPECT_THAT(e, HasSubstr("truncated or altered"));
  // Resuming from the folder skips it, says why, and uses step 1.
  std::vector<std::string> skipped;
  const LoadedCheckpoint found = find_checkpoint(dir_.string(), &skipped);
  EXPECT_EQ(found.meta["step"], 1);
  ASSERT_EQ(skipped.size(), 1u);
  EXPECT_THAT(skipped[0], HasSubstr(model));
  // Named explicitly, it is refused.
  EXPECT_THAT(error_of([&] { find_checkpoint(newest); }), HasSubstr("truncated or altered"));
  // meta.json missing or not JSON.
  spit(path(checkpoint_name(1)) + "/meta.json", "{\"format\": ");
  EXPECT_THAT(error_of([&] { read_checkpoint(path(checkpoint_name(1))); }), HasSubstr("is not valid JSON"));
  EXPECT_THAT(error_of([&] { find_checkpoint(dir_.string()); }), HasSubstr("no valid checkpoint in"));
  EXPECT_THAT(error_of([&] { find_checkpoint(path("nowhere")); }), HasSubstr("does not exist"));
}

// A process killed at any moment of a save leaves the previous checkpoint loadable, and the one
// being written either complete or absent.
TEST_F(CheckpointTest, KilledWhileWritingLeavesThePreviousOneLoadable) {
  write_checkpoint(dir_.string(), checkpoint_name(1), some_files(1.0f), {{"step", 1}});
  for (int delay_ms : {1, 5, 20, 60}) {
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      // Saves step 2 over and over (each save replaces the last one): 16 MB each.
      std::map<std::string, NamedTensors> big{{"model.safetensors", {{"w", Tensor::full({4 << 20}, 2.0f)}}}};
      for (;;) write_checkpoint(dir_.string(), checkpoint_name(2), big, {{"step", 2}});
    }
    usleep(static_cast<useconds_t>(delay_ms) * 1000);
    kill(child, SIGKILL);
    int status = 0;
    waitpid(child, &status, 0);
    EXPECT_EQ(read_checkpoint(path(checkpoint_name(1))).meta["step"], 1) << delay_ms;
    // Whatever is there loads; ".tmp-" leftovers are ignored.
    EXPECT_NO_THROW(find_checkpoint(dir_.string())) << delay_ms;
    if (fs::exists(path(checkpoint_name(2)))) {
      EXPECT_NO_THROW(read_checkpoint(path(checkpoint_name(2)))) << delay_ms;
    }
  }
  // The next save cleans the leftovers up.
  write_checkpoint(dir_.string(), checkpoint_name(3), some_files(3.0f), {{"step", 3}});
  for (const auto& entry : fs::directory_iterator(dir_))
    EXPECT_NE(entry.path().filename().string().rfind(".tmp-", 0), 0u) << entry.path();
}

// A full disk looks like a file-size limit (ulimit -f): a clear error naming the file, and the
// earlier checkpoint untouched.
TEST_F(CheckpointTest, AFileSizeLimitIsAClearErrorAndLosesNothing) {
  write_checkpoint(dir_.string(), checkpoint_name(1), some_files(1.0f), {{"step", 1}});
  int pipe_fds[2];
  ASSERT_EQ(pipe(pipe_fds), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(pipe_fds[0]);
    rlimit limit{64 << 10, 64 << 10};  // 64 KiB per file
    setrlimit(RLIMIT_FSIZE, &limit);
    std::string message = error_of([&] {
      write_checkpoint(dir_.string(), checkpoint_name(2), {{"model.safetensors", {{"w", Tensor::full({1 << 20}, 2.0f)}}}},
                       {{"step", 2}});
    });
    (void)!write(pipe_fds[1], message.data(), message.size());
    _exit(0);
  }
  close(pipe_fds[1]);
  std::string message;
  char buf[512];
  for (ssize_t n; (n = read(pipe_fds[0], buf, sizeof buf)) > 0;) message.append(buf, static_cast<size_t>(n));
  close(pipe_fds[0]);
  int status = 0;
  waitpid(child, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "the limit must not kill the process (SIGXFSZ)";
  EXPECT_THAT(message, HasSubstr("model.safetensors"));
  EXPECT_THAT(message, HasSubstr("File too large"));
  EXPECT_FALSE(fs::exists(path(checkpoint_name(2))));
  EXPECT_EQ(read_checkpoint(path(checkpoint_name(1))).meta["step"], 1);
}

TEST_F(CheckpointTest, AnUnwritableFolderIsAClearError) {
  spit(path("a_file"), "x");
  const std::string e = error_of([&] { write_checkpoint(path("a_file") + "/ckpts", "step-1", some_files(1.0f), {}); });
  EXPECT_THAT(e, HasSubstr("cannot create directory"));
  EXPECT_THAT(e, HasSubstr(path("a_file") + "/ckpts"));
}

// ---- the trainer: resume, events, callbacks ----

data::Dataset tiny_dataset(size_t count, uint64_t seed) { return data::synthetic_fashion_mnist(count, seed); }

Model small_model() { return input({-1, 784}) | dense(16, Activation::relu) | dense(10); }

struct RunResult {
  std::string sha;
  double loss;
  int64_t steps;
};

using ResumeTest = TempDir;

TEST_F(ResumeTest, IsBitIdenticalFromEpochEndsAndMidEpoch) {
  const data::Dataset train = tiny_dataset(500, 1), validation = tiny_dataset(100, 2);
  const TrainOptions options{.epochs = 3, .batch_size = 32, .seed = 4, .progress = false};
  auto run = [&](int epochs, const std::string& resume_from, const std::string& save_to, int64_t every_steps) {
    Parameters params = init(small_model(), 9);
    auto opt = adam({.lr = 3e-3});
    auto comm = make_local_communicator();
    TrainOptions o = options;
    o.epochs = epochs;
    Trainer trainer(small_model(), params, *opt, *comm, o);
    if (!save_to.empty()) {
      ModelCheckpointOptions saving;
      saving.dir = save_to;
      saving.every_steps = every_steps;
      trainer.add_callback(model_checkpoint(saving));
    }
    if (!resume_from.empty()) trainer.load_checkpoint(resume_from);
    const TrainResult r = trainer.fit(train, &validation);
    return RunResult{parameters_sha256(params), r.epochs.back().train_loss, opt->steps()};
  };
  const RunResult straight = run(3, "", "", 0);
  EXPECT_EQ(straight.steps, 3 * 16);
  // Stopped after epoch 1, resumed for the rest.
  run(1, "", path("a"), 0);
  const RunResult resumed = run(3, path("a"), "", 0);
  EXPECT_EQ(resumed.sha, straight.sha);
  EXPECT_EQ(resumed.loss, straight.loss);
  EXPECT_EQ(resumed.steps, straight.steps);
  // Checkpoints every 5 steps; resuming from step 20 (mid epoch 2) and 45 (mid epoch 3).
  run(3, "", path("b"), 5);
  for (int64_t step : {20, 45}) {
    const RunResult mid = run(3, path("b") + "/" + checkpoint_name(step), "", 0);
    EXPECT_EQ(mid.sha, straight.sha) << step;
    EXPECT_EQ(mid.loss, straight.loss) << step;
  }
}

TEST_F(ResumeTest, AnotherModelOrOptimizerIsRefused) {
  const data::Dataset train = tiny_dataset(64, 1);
  {
    Parameters params = init(small_model(), 1);
    auto opt = adam({});
    auto comm = make_local_communicator();
    Trainer trainer(small_model(), params, *opt, *comm, {.batch_size = 32, .progress = false});
    trainer.fit(train);
    trainer.save_checkpoint(dir_.string());
  }
  auto comm = make_local_communicator();
  Model other = input({-1, 784}) | dense(8) | dense(10);
  Parameters p2 = init(other, 1);
  auto opt2 = adam({});
  Trainer t2(other, p2, *opt2, *comm, {.progress = false});
  EXPECT_THAT(error_of([&] { t2.load_checkpoint(dir_.string()); }), HasSubstr("it is for another model"));
  Parameters p3 = init(small_model(), 1);
  auto sgd_opt = sgd({});
  Trainer t3(small_model(), p3, *sgd_opt, *comm, {.progress = false});
  EXPECT_THAT(error_of([&] { t3.load_checkpoint(dir_.string()); }), HasSubstr("written by optimizer adam, this run uses sgd"));
}

TEST_F(ResumeTest, ModelStateIsSavedRestoredAndResumesBitIdentically) {
  // batch_norm's running statistics are model state: saved beside the parameters, restored on load.
  const data::Dataset train = tiny_dataset(320, 1), validation = tiny_dataset(64, 2);
  auto model = [] { return input({-1, 784}) | dense(16) | batch_norm() | relu() | dense(10); };
  auto run = [&](int epochs, const std::string& resume_from, const std::string& save_to) {
    Parameters params = init(model(), 9);
    auto opt = adam({.lr = 3e-3});
    auto comm = make_local_communicator();
    Trainer trainer(model(), params, *opt, *comm, {.epochs = epochs, .batch_size = 32, .seed = 4, .progress = false});
    if (!resume_from.empty()) trainer.load_checkpoint(resume_from);
    const TrainResult r = trainer.fit(train, &validation);
    if (!save_to.empty()) trainer.save_checkpoint(save_to);
    return std::make_tuple(parameters_sha256(params), params.flat_state().to_vector(), *r.epochs.back().test.loss);
  };
  const auto [sha, state, loss] = run(2, "", "");
  const auto [sha1, state1, loss1] = run(1, "", path("a"));
  EXPECT_NE(state1, std::vector<float>(state1.size(), 0.0f));
  const LoadedCheckpoint ck = find_checkpoint(path("a"));
  bool has_mean = false;
  for (const auto& [name, tensor] : ck.files.at("model.safetensors"))
    if (name == "batch_norm_3.mean") has_mean = tensor.to_vector() == std::vector<float>(state1.begin(), state1.begin() + 16);
  EXPECT_TRUE(has_mean) << "model.safetensors lacks batch_norm_3.mean or holds another value";
  // Resuming restores the state (the evaluation loss uses it) and continues bit-identically.
  const auto [sha2, state2, loss2] = run(2, path("a"), "");
  EXPECT_EQ(sha2, sha);
  EXPECT_EQ(state2, state);
  EXPECT_EQ(loss2, loss);
  // A checkpoint of a model without that state is refused: the layout fingerprint covers the state.
  {
    Parameters params = init(small_model(), 9);
    auto opt = adam({});
    auto comm = make_local_communicator();
    Trainer trainer(small_model(), params, *opt, *comm, {.batch_size = 32, .progress = false});
    trainer.fit(tiny_dataset(64, 1));
    trainer.save_checkpoint(path("b"));
  }
  Parameters params = init(model(), 9);
  auto opt = adam({});
  auto comm = make_local_communicator();
  Trainer trainer(model(), params, *opt, *comm, {.progress = false});
  EXPECT_THAT(error_of([&] { trainer.load_checkpoint(path("b")); }), HasSubstr("it is for another model"));
}

TEST(Events, FireInTheSeedsOrderAndHonourFiltersAndHalts) {
  const data::Dataset train = tiny_dataset(96, 1);  // 3 steps of 32
  Parameters params = init(small_model(), 1);
  auto opt = sgd({.lr = 0.01});
  auto comm = make_local_communicator();
  Trainer trainer(small_model(), params, *opt, *comm, {.epochs = 4, .batch_size = 32, .progress = false});
  std::vector<std::string> log;
  for (Event e : {Event::started, Event::epoch_started, Event::iteration_started, Event::iteration_completed,
                  Event::epoch_completed, Event::epoch_halted, Event::halted, Event::completed})
    trainer.on(e, [&log, e](Trainer&, LoopState& s) { log.push_back(fmt::format("{}:{}.{}", event_name(e), s.epoch, s.iteration)); });
  int every_second = 0;
  trainer.on(Event::iteration_completed, [&](Trainer&, LoopState&) { ++every_second; }, {.every = 2});
  int once = 0;
  trainer.on(Event::epoch_completed, [&](Trainer&, LoopState&) { ++once; }, {.once = true});
  // End epoch 2 after its second step, and training at the end of epoch 3.
  trainer.on(Event::iteration_completed, [](Trainer&, LoopState& s) {
    if (s.epoch == 2 && s.iteration == 2) s.halt_epoch = true;
  });
  trainer.on(Event::epoch_completed, [](Trainer&, LoopState& s) {
    if (s.epoch == 3) s.halt = true;
  });
  trainer.fit(train);
  const std::vector<std::string> expected{
      "started:0.0",          "epoch_started:1.0",    "iteration_started:1.1", "iteration_completed:1.1",
      "iteration_started:1.2", "iteration_completed:1.2", "iteration_started:1.3", "iteration_completed:1.3",
      "epoch_completed:1.3",  "epoch_started:2.0",    "iteration_started:2.1", "iteration_completed:2.1",
      "iteration_started:2.2", "iteration_completed:2.2", "epoch_halted:2.2",     "epoch_started:3.0",
      "iteration_started:3.1", "iteration_completed:3.1", "iteration_started:3.2", "iteration_completed:3.2",
      "iteration_started:3.3", "iteration_completed:3.3", "epoch_completed:3.3",  "halted:3.3"};
  EXPECT_EQ(log, expected);
  EXPECT_EQ(every_second, 4);  // 8 iterations, every 2nd
  EXPECT_EQ(once, 1);
  EXPECT_EQ(opt->steps(), 8);
  EXPECT_EQ(trainer.loop_state().history.size(), 3u);
}

// A scripted validation loss: 5, 4, 4.5, 3.9, 4, 4.1, 4.2, ... With patience 3 and min_delta 0.05,
// epoch 4's 3.9 is the last improvement (4.5 and 3.9 vs best 4: only 3.9 improves by > 0.05), so
// epochs 5, 6, 7 do not, and training stops after epoch 7 with best 3.9 restored.
TEST(Callbacks, EarlyStoppingHaltsAtTheExpectedEpochOnAScriptedSequence) {
  const data::Dataset train = tiny_dataset(64, 1);
  Parameters params = init(small_model(), 1);
  auto opt = sgd({.lr = 0.01});
  auto comm = make_local_communicator();
  Trainer trainer(small_model(), params, *opt, *comm, {.epochs = 20, .batch_size = 32, .progress = false});
  const std::vector<double> script{5, 4, 4.5, 3.9, 4, 4.1, 4.2, 1, 1, 1};
  Tensor at_epoch_4;
  trainer.on(Event::epoch_completed, [&](Trainer& t, LoopState& s) {
    s.metrics["validation_loss"] = script.at(static_cast<size_t>(s.epoch - 1));
    if (s.epoch == 4) at_epoch_4 = t.parameters().flat_values().clone();
  });
  EarlyStoppingOptions o;
  o.patience = 3;
  o.min_delta = 0.05;
  o.restore_best = true;
  auto stopping = early_stopping(o);
  trainer.add_callback(stopping);
  const TrainResult r = trainer.fit(train);
  EXPECT_EQ(r.epochs.size(), 7u);
  EXPECT_TRUE(trainer.loop_state().halt);
  EXPECT_EQ(stopping->state()["best"], 3.9);
  EXPECT_EQ(stopping->state()["best_epoch"], 4);
  EXPECT_EQ(stopping->state()["stopped_epoch"], 7);
  EXPECT_EQ(params.flat_values().to_vector(), at_epoch_4.to_vector());
  // A metric that does not exist is named, with the ones that do.
  Parameters p2 = init(small_model(), 1);
  Trainer t2(small_model(), p2, *opt, *comm, {.epochs = 2, .batch_size = 32, .progress = false});
  t2.add_callback(early_stopping({}));
  EXPECT_THAT(error_of([&] { t2.fit(train); }), HasSubstr("no metric 'validation_loss' at epoch 1 (metrics: epoch_seconds, lr"));
}

// ReduceLROnPlateau against the rule of torch.optim.lr_scheduler.ReduceLROnPlateau (mode min,
// threshold 1e-4 relative, patience 1, cooldown 1, factor 0.5): losses 1, 0.9, 0.95, 0.96 (bad 2 >
// patience: lr 0.1 → 0.05, cooldown), 0.97 (cooldown), 0.98, 0.99 (bad 2: → 0.025).
TEST(Callbacks, ReduceLROnPlateauFollowsPyTorchsRule) {
  const data::Dataset train = tiny_dataset(32, 1);
  Parameters params = init(small_model(), 1);
  auto opt = sgd({.lr = 0.1});
  auto comm = make_local_communicator();
  Trainer trainer(small_model(), params, *opt, *comm, {.epochs = 7, .batch_size = 32, .progress = false});
  const std::vector<double> script{1, 0.9, 0.95, 0.96, 0.97, 0.98, 0.99};
  std::vector<double> lrs;
  trainer.on(Event::epoch_completed, [&](Trainer&, LoopState& s) { s.metrics["validation_loss"] = script.at(static_cast<size_t>(s.epoch - 1)); });
  ReduceLROnPlateauOptions o;
  o.factor = 0.5;
  o.patience = 1;
  o.cooldown = 1;
  trainer.add_callback(reduce_lr_on_plateau(o));
  trainer.on(Event::epoch_completed, [&](Trainer& t, LoopState&) { lrs.push_back(t.optimizer().learning_rate()); });
  trainer.fit(train);
  EXPECT_EQ(lrs, (std::vector<double>{0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025}));
}

using LogsTest = TempDir;

// The TensorBoard file decodes with an independent reader (tests/train/read_tfevents.py: its own
// CRC-32C and protobuf decoding) to the tags and values the CSV has.
TEST_F(LogsTest, TensorBoardDecodesIndependentlyAndAgreesWithTheCsv) {
  const data::Dataset train = tiny_dataset(128, 1), validation = tiny_dataset(64, 2);
  Parameters params = init(small_model(), 1);
  auto opt = adam({});
  auto comm = make_local_communicator();
  Trainer trainer(small_model(), params, *opt, *comm, {.epochs = 2, .batch_size = 32, .progress = false});
  trainer.add_callback(csv_logger(path("metrics.csv")));
  trainer.add_callback(tensorboard_logger(dir_.string()));
  trainer.fit(train, &validation);

  std::ifstream csv(path("metrics.csv"));
  std::string header, line;
  ASSERT_TRUE(std::getline(csv, header));
  EXPECT_EQ(header, "epoch,global_step,epoch_seconds,lr,samples_per_s,train_accuracy,train_loss,validation_accuracy,validation_loss");
  std::vector<std::vector<std::string>> rows;
  while (std::getline(csv, line)) {
    std::vector<std::string> cells;
    std::stringstream ss(line);
    for (std::string cell; std::getline(ss, cell, ',');) cells.push_back(cell);
    rows.push_back(cells);
  }
  ASSERT_EQ(rows.size(), 2u);

  std::string events;
  for (const auto& entry : fs::directory_iterator(dir_))
    if (entry.path().filename().string().find("tfevents") != std::string::npos) events = entry.path().string();
  ASSERT_FALSE(events.empty());
  const std::string command = "/usr/bin/python3 " + std::string(AXON_SOURCE_DIR) + "/tests/train/read_tfevents.py " + events;
  const axon::testing::CommandResult run = axon::testing::run_command(command);
  ASSERT_EQ(run.code, 0) << run.output;
  const std::string& out = run.stdout_text;
  const nlohmann::json decoded = nlohmann::json::parse(out);
  EXPECT_EQ(decoded["file_version"], "brain.Event:2");
  std::vector<std::string> columns{"epoch", "global_step", "epoch_seconds", "lr", "samples_per_s", "train_accuracy",
                                   "train_loss", "validation_accuracy", "validation_loss"};
  size_t compared = 0;
  for (const auto& s : decoded["scalars"]) {
    const int64_t epoch = s[0];
    const std::string tag = s[1];
    ASSERT_EQ(tag.rfind("epoch/", 0), 0u) << tag;
    const auto column = std::find(columns.begin(), columns.end(), tag.substr(6)) - columns.begin();
    ASSERT_LT(static_cast<size_t>(column), columns.size()) << tag;
    const double csv_value = std::stod(rows.at(static_cast<size_t>(epoch - 1)).at(static_cast<size_t>(column)));
    // TensorBoard keeps f32 simple values.
    EXPECT_EQ(s[2].get<double>(), static_cast<double>(static_cast<float>(csv_value))) << tag << " epoch " << epoch;
    ++compared;
  }
  EXPECT_EQ(compared, 2u * 7u);
}

TEST(Crc32c, MatchesTheStandardCheckValue) {
  // RFC 3720 B.4 and the CRC catalogue: CRC-32C("123456789") = 0xE3069283.
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);
}

// Accumulating two batches of 32 is one batch of 64 (the mean of the two means), to rounding.
TEST(GradAccum, TwoHalfBatchesStepLikeOneFullBatch) {
  const data::Dataset train = tiny_dataset(256, 1);
  auto run = [&](size_t batch, int accum) {
    Parameters params = init(small_model(), 3);
    auto opt = sgd({.lr = 0.1});
    auto comm = make_local_communicator();
    TrainOptions o{.epochs = 1, .batch_size = batch, .shuffle = false, .progress = false};
    o.grad_accum = accum;
    Trainer trainer(small_model(), params, *opt, *comm, o);
    trainer.fit(train);
    EXPECT_EQ(opt->steps(), 4);
    return params.flat_values().to_vector();
  };
  const std::vector<float> whole = run(64, 1), halves = run(32, 2);
  ASSERT_EQ(whole.size(), halves.size());
  for (size_t i = 0; i < whole.size(); ++i) EXPECT_NEAR(halves[i], whole[i], 1e-5f) << i;
  Parameters params = init(small_model(), 3);
  auto opt = sgd({});
  auto comm = make_local_communicator();
  TrainOptions o;
  o.grad_accum = 0;
  EXPECT_THAT(error_of([&] { Trainer t(small_model(), params, *opt, *comm, o); }), HasSubstr("grad_accum must be >= 1"));
}

}  // namespace
}  // namespace axon

namespace axon {
namespace {

// Validation every 5 steps between epoch ends: handlers see it at those steps, and TensorBoard
// gets it as step/* scalars at the global step.
TEST_F(LogsTest, ValidationEveryNStepsReachesHandlersAndTensorBoard) {
  const data::Dataset train = tiny_dataset(320, 1), validation = tiny_dataset(64, 2);  // 10 steps of 32
  Parameters params = init(small_model(), 1);
  auto opt = adam({});
  auto comm = make_local_communicator();
  TrainOptions o{.epochs = 2, .batch_size = 32, .progress = false};
  o.validate_every_steps = 4;
  Trainer trainer(small_model(), params, *opt, *comm, o);
  std::vector<int64_t> validated_at;
  trainer.on(Event::iteration_completed, [&](Trainer&, LoopState& s) {
    if (!s.validated) return;
    validated_at.push_back(s.global_step);
    EXPECT_TRUE(s.metrics.count("validation_loss") && s.metrics.count("train_loss"));
  });
  trainer.add_callback(tensorboard_logger(dir_.string()));
  trainer.fit(train, &validation);
  // Steps 4, 8, 12, 16 (step 20 is an epoch end, validated there anyway).
  EXPECT_EQ(validated_at, (std::vector<int64_t>{4, 8, 12, 16}));
  std::string events;
  for (const auto& entry : fs::directory_iterator(dir_)) events = entry.path().string();
  const axon::testing::CommandResult run = axon::testing::run_command("/usr/bin/python3 " + std::string(AXON_SOURCE_DIR) +
                                                                      "/tests/train/read_tfevents.py " + events);
  ASSERT_EQ(run.code, 0) << run.output;
  const std::string& out = run.stdout_text;
  std::vector<int64_t> steps;
  const nlohmann::json decoded = nlohmann::json::parse(out);
  for (const auto& s : decoded["scalars"])
    if (s[1] == "step/validation_loss") steps.push_back(s[0]);
  EXPECT_EQ(steps, validated_at) << out;
}

}  // namespace
}  // namespace axon

namespace axon {
namespace {

// Gradient accumulation (groups of 3 batches, the last group of an epoch shorter) with
// checkpoints every 2 optimizer steps: saves happen only at group ends, and resuming from any of
// them is bit-identical.
TEST_F(ResumeTest, WithGradientAccumulationSavesAtGroupEndsAndResumesExactly) {
  const data::Dataset train = tiny_dataset(448, 1);  // 14 batches of 32: groups 3+3+3+3+2
  auto run = [&](const std::string& resume_from, const std::string& save_to) {
    Parameters params = init(small_model(), 9);
    auto opt = adam({.lr = 3e-3});
    auto comm = make_local_communicator();
    TrainOptions o{.epochs = 2, .batch_size = 32, .seed = 4, .progress = false};
    o.grad_accum = 3;
    Trainer trainer(small_model(), params, *opt, *comm, o);
    if (!save_to.empty()) {
      ModelCheckpointOptions saving;
      saving.dir = save_to;
      saving.every_steps = 2;
      trainer.add_callback(model_checkpoint(saving));
    }
    if (!resume_from.empty()) trainer.load_checkpoint(resume_from);
    trainer.fit(train);
    return std::make_pair(parameters_sha256(params), opt->steps());
  };
  const auto straight = run("", "");
  EXPECT_EQ(straight.second, 10);  // 5 optimizer steps per epoch
  run("", path("ga"));
  const std::vector<std::string> saved = list_checkpoints(path("ga"));
  ASSERT_FALSE(saved.empty());
  for (const std::string& ck : saved) {
    const nlohmann::json meta = read_checkpoint(ck).meta;
    const int64_t in_epoch = meta["step_in_epoch"];
    EXPECT_TRUE(in_epoch % 3 == 0 || in_epoch == 14) << ck << " saved inside a group at batch " << in_epoch;
    EXPECT_EQ(run(ck, "").first, straight.first) << ck;
  }
}

}  // namespace
}  // namespace axon
