#include "axon/model_tools.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <stdexcept>

namespace axon {

namespace fs = std::filesystem;

// ---- freezing ----

std::function<bool(const std::string&)> layers_named(const Parameters& params, std::vector<std::string> layers) {
  for (const std::string& layer : layers) {
    bool found = false;
    for (const auto& e : params.entries()) found = found || e.name.rfind(layer + ".", 0) == 0;
    if (!found) {
      std::set<std::string> have;
      for (const auto& e : params.entries()) have.insert(e.name.substr(0, e.name.find('.')));
      std::string list;
      for (const auto& h : have) list += (list.empty() ? "" : ", ") + h;
      throw std::invalid_argument(fmt::format("freeze: no parameters of a layer named '{}' (layers with parameters: {})",
                                              layer, list.empty() ? "none" : list));
    }
  }
  return [layers = std::move(layers)](const std::string& name) {
    for (const std::string& layer : layers)
      if (name.rfind(layer + ".", 0) == 0) return true;
    return false;
  };
}

namespace {

class SkipFrozen : public Optimizer {
 public:
  SkipFrozen(const Parameters& params, std::unique_ptr<Optimizer> inner)
      : Optimizer(inner->learning_rate()), inner_(std::move(inner)) {
    int64_t offset = 0;
    for (size_t i = 0; i < params.size(); ++i) {
      const int64_t n = params.at(i).numel();
      if (params.frozen(i)) {
        frozen_.push_back(params.entries()[i].name);
      } else if (!segments_.empty() && segments_.back().offset + segments_.back().n == offset) {
        segments_.back().n += n;  // adjacent trainable tensors: one copy
      } else if (n > 0) {
        segments_.push_back({offset, n});
      }
      offset += n;
    }
    total_ = offset;
    for (const Segment& s : segments_) trainable_ += s.n;
    steps_ = inner_->steps();
  }
  std::string name() const override { return inner_->name(); }
  std::string config() const override {
    std::string names;
    for (const auto& n : frozen_) names += (names.empty() ? "" : ", ") + n;
    return fmt::format("skip_frozen({}, frozen=[{}])", inner_->config(), names);
  }
  std::vector<std::pair<std::string, Tensor*>> state() override { return inner_->state(); }
  const std::vector<std::string>& frozen() const { return frozen_; }

 protected:
  void update(Tensor& p, const Tensor& g) override {
    if (p.numel() != total_)
      throw std::invalid_argument(fmt::format("skip_frozen({}): the parameters it was made for hold {} elements, the "
                                              "buffer stepped {}", inner_->name(), total_, p.numel()));
    inner_->set_learning_rate(lr_);
    inner_->set_steps(steps_ - 1);
    if (trainable_ == 0) {
      inner_->set_steps(steps_);  // nothing to step; the count still advances like the wrapper's
      return;
    }
    if (frozen_.empty()) {  // nothing frozen: no copies
      inner_->step(p, g);
    } else {
      if (!values_.defined() || values_.device() != p.device()) {
        values_ = Tensor::zeros({trainable_}, p.options());
        grads_ = Tensor::zeros({trainable_}, p.options());
      }
      copy_segments(p, values_, true);
      copy_segments(g, grads_, true);
      inner_->step(values_, grads_);
      copy_segments(p, values_, false);
    }
    nonfinite_.copy_from(inner_->nonfinite_flag());
  }

 private:
  struct Segment {
    int64_t offset, n;
  };
  // gather: flat → compact; else compact → flat.
  void copy_segments(const Tensor& flat, Tensor& compact, bool gather) const {
    int64_t at = 0;
    for (const Segment& s : segments_) {
      Tensor whole = Tensor::view_of(flat.storage(), flat.offset() + static_cast<size_t>(s.offset), {s.n}, flat.dtype());
      Tensor part = Tensor::view_of(compact.storage(), compact.offset() + static_cast<size_t>(at), {s.n}, compact.dtype());
      if (gather) part.copy_from(whole);
      else whole.copy_from(part);
      at += s.n;
    }
  }
  std::unique_ptr<Optimizer> inner_;
  std::vector<Segment> segments_;
  std::vector<std::string> frozen_;
  int64_t total_ = 0, trainable_ = 0;
  Tensor values_, grads_;
};

}  // namespace

std::unique_ptr<Optimizer> skip_frozen(const Parameters& params, std::unique_ptr<Optimizer> inner) {
  if (!inner) throw std::invalid_argument("skip_frozen: no optimizer given");
  return std::make_unique<SkipFrozen>(params, std::move(inner));
}

const std::vector<std::string>* skipped_parameters(const Optimizer& optimizer) {
  const auto* s = dynamic_cast<const SkipFrozen*>(&optimizer);
  return s ? &s->frozen() : nullptr;
}

// ---- safetensors ----

namespace {

std::string tensors_sha256(const NamedTensors& tensors) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) != 1) {
    EVP_MD_CTX_free(ctx);
    throw std::runtime_error("sha256: OpenSSL EVP_DigestInit failed");
  }
  for (const auto& [name, t] : tensors) {
    Tensor host = t.device().is_cpu() ? t : t.to(Device::cpu());
    EVP_DigestUpdate(ctx, host.raw_data(), host.nbytes());
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_DigestFinal_ex(ctx, digest, &length);
  EVP_MD_CTX_free(ctx);
  std::string hex;
  for (unsigned int i = 0; i < length; ++i) hex += fmt::format("{:02x}", digest[i]);
  return hex;
}

void fsync_parent(const fs::path& file) {
  const fs::path dir = file.parent_path().empty() ? fs::path(".") : file.parent_path();
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw CheckpointError(fmt::format("save_parameters: cannot open directory {}: {}", dir.string(), std::strerror(errno)));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) throw CheckpointError(fmt::format("save_parameters: cannot flush directory {}: {}", dir.string(), std::strerror(err)));
}

std::string join(const std::vector<std::string>& items) {
  std::string s;
  for (const auto& i : items) s += (s.empty() ? "" : ", ") + i;
  return s;
}

}  // namespace

void save_parameters(const std::string& path, const Parameters& params) {
  NamedTensors tensors;
  for (const auto& e : params.entries()) tensors.emplace_back(e.name, e.value.detach());
  std::string state_names;
  for (const auto& e : params.state_entries()) {
    tensors.emplace_back(e.name, e.value);
    state_names += (state_names.empty() ? "" : ",") + e.name;
  }
  const std::map<std::string, std::string> metadata{
      {"format", "axon"}, {"axon.state", state_names}, {"axon.sha256", tensors_sha256(tensors)}};
  const fs::path target(path);
  const fs::path tmp = target.parent_path() / fmt::format(".{}.tmp-{}", target.filename().string(), ::getpid());
  try {
    write_safetensors(tmp.string(), tensors, metadata);  // fsyncs the file
    std::error_code ec;
    fs::rename(tmp, target, ec);
    if (ec) throw CheckpointError(fmt::format("save_parameters: cannot rename {} to {}: {}", tmp.string(), path, ec.message()));
    fsync_parent(target);
  } catch (...) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw;
  }
}

std::string LoadReport::str() const {
  if (clean()) return fmt::format("all {} tensors loaded", loaded);
  std::string s;
  auto line = [&](const char* what, const std::vector<std::string>& v) {
    if (!v.empty()) s += fmt::format("{}{} ({}): {}", s.empty() ? "" : "; ", what, v.size(), join(v));
  };
  line("missing from the file", missing);
  line("unexpected (not in the model)", unexpected);
  line("shape mismatch", mismatched);
  return s;
}

LoadReport load_parameters(const std::string& path, Parameters& params, LoadOptions options) {
  std::map<std::string, std::string> metadata;
  const NamedTensors file = read_safetensors(path, &metadata);  // structure checks, naming the file
  if (auto it = metadata.find("axon.sha256"); it != metadata.end() && tensors_sha256(file) != it->second)
    throw CheckpointError(fmt::format("load_parameters: {} fails its SHA-256 check: the tensor data was altered or "
                                      "corrupted after it was written", path));

  // Model tensors (parameters, then model state) by name.
  std::map<std::string, Tensor> model;
  for (const auto& e : params.entries()) model.emplace(e.name, e.value);
  for (const auto& e : params.state_entries()) model.emplace(e.name, e.value);

  LoadReport report;
  std::set<std::string> seen;
  std::vector<std::pair<Tensor, Tensor>> copies;  // (destination, source)
  for (const auto& [name, t] : file) {
    seen.insert(name);
    auto it = model.find(name);
    if (it == model.end()) {
      report.unexpected.push_back(fmt::format("{} {}", name, shape_str(t.shape())));
      continue;
    }
    if (!is_floating(t.dtype()))
      throw CheckpointError(fmt::format("load_parameters: {}: tensor {} is {}, not floating point", path, name,
                                        dtype_name(t.dtype())));
    if (t.shape() != it->second.shape()) {
      report.mismatched.push_back(fmt::format("{}: file {}, model {}", name, shape_str(t.shape()), shape_str(it->second.shape())));
      continue;
    }
    copies.emplace_back(it->second, t);
  }
  for (const auto& e : params.entries())
    if (!seen.count(e.name)) report.missing.push_back(fmt::format("{} {}", e.name, shape_str(e.value.shape())));
  for (const auto& e : params.state_entries())
    if (!seen.count(e.name)) report.missing.push_back(fmt::format("{} {} (model state)", e.name, shape_str(e.value.shape())));
  if (options.strict && !report.clean())
    throw std::invalid_argument(fmt::format("load_parameters: {} does not fit the model (nothing was loaded): {}", path,
                                            report.str()));
  for (auto& [dst, src] : copies) {
    Tensor d = dst.detach();
    d.copy_from(src.to(d.dtype()).to(d.device()));
  }
  report.loaded = copies.size();
  return report;
}

Parameters load_parameters(const std::string& path, const Model& model, LoadOptions options, LoadReport* report) {
  Parameters params = init(model, 0);
  LoadReport r = load_parameters(path, params, options);
  if (report) *report = std::move(r);
  return params;
}

}  // namespace axon
