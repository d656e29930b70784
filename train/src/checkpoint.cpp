#include "axon/checkpoint.h"

#include <fcntl.h>
#include <stdio.h>  // renameat2
#include <fmt/format.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>

#include "axon/heartbeat.h"

namespace axon {

namespace fs = std::filesystem;

namespace {

constexpr const char* kFormat = "axon-checkpoint";
constexpr int kFormatVersion = 1;
constexpr const char* kMeta = "meta.json";
// A header larger than this is not a real checkpoint header (they are a few KB).
constexpr uint64_t kMaxHeader = uint64_t{100} << 20;

const char* st_dtype(DType dtype) {
  switch (dtype) {
    case DType::f32: return "F32";
    case DType::f64: return "F64";
    case DType::bf16: return "BF16";
    case DType::i32: return "I32";
    case DType::i64: return "I64";
  }
  return "?";
}

bool parse_st_dtype(const std::string& name, DType& out) {
  for (DType d : {DType::f32, DType::f64, DType::bf16, DType::i32, DType::i64})
    if (name == st_dtype(d)) {
      out = d;
      return true;
    }
  return false;
}

std::string errno_text(int err) { return std::strerror(err); }

// Writes all of `data` to `path` (created or truncated) and fsyncs it. A file-size limit
// (ulimit -f) would otherwise kill the process with SIGXFSZ; ignoring it turns that into EFBIG, a
// clear error (Python does the same).
void write_file_synced(const std::string& path, const std::string& data) {
  static const bool sigxfsz_ignored = [] {
    std::signal(SIGXFSZ, SIG_IGN);
    return true;
  }();
  (void)sigxfsz_ignored;
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw CheckpointError(fmt::format("checkpoint: cannot create {}: {}", path, errno_text(errno)));
  size_t done = 0;
  constexpr size_t kChunk = size_t{64} << 20;
  while (done < data.size()) {
    // A big checkpoint takes a while: tell axonrun's watchdog this rank is busy, not hung.
    heartbeat::progress();
    const ssize_t n = ::write(fd, data.data() + done, std::min(kChunk, data.size() - done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = n < 0 ? errno : ENOSPC;
      ::close(fd);
      throw CheckpointError(fmt::format("checkpoint: cannot write {} ({} of {} bytes written): {}", path, done,
                                        data.size(), errno_text(err)));
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    throw CheckpointError(fmt::format("checkpoint: cannot flush {} to disk: {}", path, errno_text(err)));
  }
  if (::close(fd) != 0) throw CheckpointError(fmt::format("checkpoint: cannot close {}: {}", path, errno_text(errno)));
}

void fsync_dir(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw CheckpointError(fmt::format("checkpoint: cannot open directory {}: {}", path, errno_text(errno)));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) throw CheckpointError(fmt::format("checkpoint: cannot flush directory {}: {}", path, errno_text(err)));
}

std::string read_file(const std::string& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) throw CheckpointError(fmt::format("checkpoint: {} is not a regular file", path));
  std::ifstream in(path, std::ios::binary);
  if (!in) throw CheckpointError(fmt::format("checkpoint: cannot open {}: {}", path, errno_text(errno)));
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw CheckpointError(fmt::format("checkpoint: cannot read {}", path));
  return data;
}

std::string serialize_safetensors(const NamedTensors& tensors, const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  std::set<std::string> names;
  std::vector<Tensor> host;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (name.empty() || name == "__metadata__")
      throw std::invalid_argument(fmt::format("safetensors: invalid tensor name '{}'", name));
    if (!names.insert(name).second) throw std::invalid_argument(fmt::format("safetensors: duplicate tensor name '{}'", name));
    Tensor t = tensor.device().is_cpu() ? tensor : tensor.to(Device::cpu());
    const uint64_t bytes = t.nbytes();
    header[name] = {{"dtype", st_dtype(t.dtype())}, {"shape", t.shape()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    host.push_back(t);
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string text = header.dump();
  text.resize((text.size() + 7) / 8 * 8, ' ');  // the data starts 8-byte aligned
  std::string out(8, '\0');
  const uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
  out += text;
  out.reserve(out.size() + offset);
  for (const Tensor& t : host) out.append(static_cast<const char*>(t.raw_data()), t.nbytes());
  return out;
}

NamedTensors parse_safetensors(const std::string& path, const std::string& data,
                               std::map<std::string, std::string>* metadata) {
  auto bad = [&](const std::string& what) { return CheckpointError(fmt::format("safetensors file {}: {}", path, what)); };
  if (data.size() < 8) throw bad(fmt::format("{} bytes, shorter than the 8-byte header length", data.size()));
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(data[static_cast<size_t>(i)]);
  if (n > kMaxHeader || n > data.size() - 8)
    throw bad(fmt::format("header length {} runs past the end of the {}-byte file (truncated?)", n, data.size()));
  if (n == 0 || data[8] != '{') throw bad("the header does not start with '{'");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(data.begin() + 8, data.begin() + 8 + static_cast<std::ptrdiff_t>(n));
  } catch (const nlohmann::json::exception& e) {
    throw bad(fmt::format("the header is not valid JSON ({})", e.what()));
  }
  if (!header.is_object()) throw bad("the header is not a JSON object");
  const uint64_t data_bytes = data.size() - 8 - n;
  struct Entry {
    std::string name;
    DType dtype;
    Shape shape;
    uint64_t begin, end;
  };
  std::vector<Entry> entries;
  for (const auto& [name, info] : header.items()) {
    if (name == "__metadata__") {
      if (!info.is_object()) throw bad("__metadata__ is not an object");
      for (const auto& [k, v] : info.items()) {
        if (!v.is_string()) throw bad(fmt::format("__metadata__ value of '{}' is not a string", k));
        if (metadata) (*metadata)[k] = v.get<std::string>();
      }
      continue;
    }
    try {
      Entry e{name, DType::f32, {}, 0, 0};
      if (!parse_st_dtype(info.at("dtype").get<std::string>(), e.dtype))
        throw bad(fmt::format("tensor '{}' has unsupported dtype {}", name, info.at("dtype").dump()));
      if (!info.is_object() || !info.at("dtype").is_string() || !info.at("shape").is_array())
        throw bad(fmt::format("tensor '{}' has a malformed entry {} (needs dtype string, shape array, data_offsets)", name,
                              info.dump()));
      uint64_t count = 1;
      for (const auto& d : info.at("shape")) {
        if (!d.is_number_integer()) throw bad(fmt::format("tensor '{}' has a non-integer dimension in shape {}", name, info.at("shape").dump()));
        const int64_t v = d.get<int64_t>();
        if (v < 0) throw bad(fmt::format("tensor '{}' has a negative dimension in shape {}", name, info.at("shape").dump()));
        if (v > 0 && count > std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(v))
          throw bad(fmt::format("tensor '{}' has an impossibly large shape {}", name, info.at("shape").dump()));
        count *= static_cast<uint64_t>(v);
        e.shape.push_back(v);
      }
      const auto& offsets = info.at("data_offsets");
      if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() || !offsets[1].is_number_unsigned())
        throw bad(fmt::format("tensor '{}': data_offsets {} is not [begin, end] of byte offsets", name, offsets.dump()));
      e.begin = offsets[0].get<uint64_t>();
      e.end = offsets[1].get<uint64_t>();
      if (e.begin > e.end || e.end > data_bytes)
        throw bad(fmt::format("tensor '{}': bytes [{}, {}) do not fit the {} data bytes (truncated?)", name, e.begin, e.end,
                              data_bytes));
      const uint64_t element = dtype_size(e.dtype);
      if (count > std::numeric_limits<uint64_t>::max() / element || count * element != e.end - e.begin)
        throw bad(fmt::format("tensor '{}': shape {} of {} needs {} bytes, its range holds {}", name,
                              info.at("shape").dump(), st_dtype(e.dtype), count * element, e.end - e.begin));
      entries.push_back(std::move(e));
    } catch (const nlohmann::json::exception& ex) {
      throw bad(fmt::format("tensor '{}' has a malformed entry {} ({})", name, info.dump(), ex.what()));
    }
  }
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) { return a.begin < b.begin; });
  uint64_t expected = 0;
  for (const Entry& e : entries) {
    if (e.begin != expected)
      throw bad(fmt::format("tensor '{}' starts at byte {}, expected {} (overlapping or gapped data)", e.name, e.begin, expected));
    expected = e.end;
  }
  if (expected != data_bytes)
    throw bad(fmt::format("the tensors cover {} bytes but the file holds {} data bytes", expected, data_bytes));
  NamedTensors out;
  const char* base = data.data() + 8 + n;
  for (const Entry& e : entries) {
    Tensor t = Tensor::empty(e.shape, {e.dtype, Device::cpu()});
    if (e.end > e.begin) std::memcpy(t.raw_data(), base + e.begin, e.end - e.begin);
    out.emplace_back(e.name, std::move(t));
  }
  return out;
}

void remove_quietly(const fs::path& p) {
  std::error_code ec;
  fs::remove_all(p, ec);
}

int64_t step_of(const std::string& name) {
  if (name.rfind("step-", 0) != 0 || name.size() == 5) return -1;
  int64_t v = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9' || v > (std::numeric_limits<int64_t>::max() - 9) / 10) return -1;
    v = v * 10 + (name[i] - '0');
  }
  return v;
}

}  // namespace

std::string sha256_hex(const void* data, size_t size) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_Digest(data, size, digest, &length, EVP_sha256(), nullptr) != 1)
    throw std::runtime_error("sha256: OpenSSL EVP_Digest failed");
  std::string hex;
  for (unsigned int i = 0; i < length; ++i) hex += fmt::format("{:02x}", digest[i]);
  return hex;
}

void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata) {
  write_file_synced(path, serialize_safetensors(tensors, metadata));
}

NamedTensors read_safetensors(const std::string& path, std::map<std::string, std::string>* metadata) {
  return parse_safetensors(path, read_file(path), metadata);
}

std::string checkpoint_name(int64_t step) { return fmt::format("step-{:09d}", step); }

std::vector<std::string> list_checkpoints(const std::string& dir) {
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return {};
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    const int64_t step = step_of(name);
    if (step >= 0 && entry.is_directory(ec)) found.emplace_back(step, entry.path().string());
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> out;
  for (auto& f : found) out.push_back(std::move(f.second));
  return out;
}

std::string checkpoint_temp_path(const std::string& dir, const std::string& name, int64_t writer_pid) {
  return (fs::path(dir) / fmt::format(".tmp-{}-{}", name, writer_pid)).string();
}

std::string begin_checkpoint(const std::string& dir, const std::string& name) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw CheckpointError(fmt::format("checkpoint: cannot create directory {}: {}", dir, ec.message()));
  // Temporary directories of saves that were killed part-way (".tmp-<name>-<pid>" of a process
  // that no longer runs): never loaded, removed here.
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string file = entry.path().filename().string();
    if (file.rfind(".tmp-", 0) != 0) continue;
    const size_t dash = file.rfind('-');
    const long pid = dash == std::string::npos ? 0 : std::strtol(file.c_str() + dash + 1, nullptr, 10);
    if (pid > 0 && pid != ::getpid() && ::kill(static_cast<pid_t>(pid), 0) == 0) continue;  // a live writer's
    remove_quietly(entry.path());
  }
  const std::string tmp = checkpoint_temp_path(dir, name, ::getpid());
  fs::create_directory(tmp, ec);
  if (ec) throw CheckpointError(fmt::format("checkpoint: cannot create directory {}: {}", tmp, ec.message()));
  return tmp;
}

void commit_checkpoint(const std::string& dir, const std::string& name, const std::string& tmp_dir,
                       const std::map<std::string, NamedTensors>& files, const std::vector<std::string>& written_files,
                       const nlohmann::json& meta) {
  const fs::path final_path = fs::path(dir) / name;
  const fs::path tmp = tmp_dir;
  std::error_code ec;
  try {
    nlohmann::json full = meta;
    full["format"] = kFormat;
    full["format_version"] = kFormatVersion;
    nlohmann::json listing = nlohmann::json::object();
    for (const auto& [file, tensors] : files) {
      const std::string bytes = serialize_safetensors(tensors, {});
      write_file_synced((tmp / file).string(), bytes);
      listing[file] = {{"bytes", bytes.size()}, {"sha256", sha256_hex(bytes.data(), bytes.size())}};
    }
    // Files other processes wrote (and fsynced) here: read back, which also proves that this
    // process sees them, i.e. that the directory is shared by every writer.
    for (const std::string& file : written_files) {
      std::string bytes;
      try {
        bytes = read_file((tmp / file).string());
      } catch (const CheckpointError&) {
        throw CheckpointError(fmt::format(
            "checkpoint: {} was written by another rank but is not visible here ({}): a checkpoint written by "
            "every rank needs a directory all ranks share",
            file, (tmp / file).string()));
      }
      listing[file] = {{"bytes", bytes.size()}, {"sha256", sha256_hex(bytes.data(), bytes.size())}};
    }
    full["files"] = listing;
    write_file_synced((tmp / kMeta).string(), full.dump(2) + "\n");
    fsync_dir(tmp.string());
    if (fs::exists(final_path, ec)) {
      // Replace in one step: the two directories swap names atomically (Linux renameat2), so the
      // name always holds a complete checkpoint; the old one, now under the temporary name, goes.
      if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, final_path.c_str(), RENAME_EXCHANGE) != 0)
        throw CheckpointError(fmt::format("checkpoint: cannot replace {}: {}", final_path.string(), errno_text(errno)));
      remove_quietly(tmp);
    } else {
      fs::rename(tmp, final_path, ec);
      if (ec) throw CheckpointError(fmt::format("checkpoint: cannot rename {} to {}: {}", tmp.string(), final_path.string(), ec.message()));
    }
    fsync_dir(dir);
  } catch (...) {
    remove_quietly(tmp);
    throw;
  }
}

void abort_checkpoint(const std::string& tmp_dir) { remove_quietly(tmp_dir); }

void write_checkpoint(const std::string& dir, const std::string& name, const std::map<std::string, NamedTensors>& files,
                      const nlohmann::json& meta) {
  commit_checkpoint(dir, name, begin_checkpoint(dir, name), files, {}, meta);
}

LoadedCheckpoint read_checkpoint(const std::string& path, const FileFilter& parse) {
  LoadedCheckpoint out;
  out.path = path;
  const std::string meta_path = (fs::path(path) / kMeta).string();
  std::string text;
  try {
    text = read_file(meta_path);
  } catch (const CheckpointError&) {
    throw CheckpointError(fmt::format("checkpoint {}: {} is missing or unreadable", path, meta_path));
  }
  try {
    out.meta = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(fmt::format("checkpoint {}: {} is not valid JSON ({})", path, meta_path, e.what()));
  }
  auto field_is = [&](const char* key, auto check) { return out.meta.is_object() && out.meta.contains(key) && check(out.meta[key]); };
  if (!field_is("format", [](const nlohmann::json& v) { return v.is_string(); }) || out.meta["format"] != kFormat)
    throw CheckpointError(fmt::format("checkpoint {}: {} is not an Axon checkpoint (no \"format\": \"{}\")", path,
                                      meta_path, kFormat));
  if (!field_is("format_version", [](const nlohmann::json& v) { return v.is_number_integer(); }) ||
      out.meta["format_version"] != kFormatVersion)
    throw CheckpointError(fmt::format("checkpoint {}: format version {} (this Axon reads version {})", path,
                                      out.meta.value("format_version", nlohmann::json()).dump(), kFormatVersion));
  if (!out.meta.contains("files") || !out.meta["files"].is_object())
    throw CheckpointError(fmt::format("checkpoint {}: {} lists no files", path, meta_path));
  for (const auto& [file, info] : out.meta["files"].items()) {
    if (file.find('/') != std::string::npos || file.empty() || file[0] == '.')
      throw CheckpointError(fmt::format("checkpoint {}: {} names an invalid file '{}'", path, meta_path, file));
    const std::string file_path = (fs::path(path) / file).string();
    std::string bytes;
    try {
      bytes = read_file(file_path);
    } catch (const CheckpointError&) {
      throw CheckpointError(fmt::format("checkpoint {}: {} is missing or unreadable", path, file_path));
    }
    if (!info.is_object() || !info.contains("bytes") || !info["bytes"].is_number_unsigned() || !info.contains("sha256") ||
        !info["sha256"].is_string())
      throw CheckpointError(fmt::format("checkpoint {}: {} lists {} without a byte count and a SHA-256", path, meta_path, file));
    const uint64_t expected = info["bytes"].get<uint64_t>();
    if (bytes.size() != expected)
      throw CheckpointError(fmt::format("checkpoint {}: {} has {} bytes, meta.json says {} (truncated or altered)", path,
                                        file_path, bytes.size(), expected));
    const std::string sha = sha256_hex(bytes.data(), bytes.size());
    if (sha != info["sha256"].get<std::string>())
      throw CheckpointError(fmt::format("checkpoint {}: {} fails its SHA-256 check (altered or corrupt)", path, file_path));
    if (!parse || parse(file, out.meta)) out.files[file] = parse_safetensors(file_path, bytes, nullptr);
  }
  return out;
}

LoadedCheckpoint find_checkpoint(const std::string& path, std::vector<std::string>* skipped, const FileFilter& parse) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw CheckpointError(fmt::format("checkpoint: {} does not exist", path));
  if (fs::exists(fs::path(path) / kMeta, ec)) return read_checkpoint(path, parse);
  std::vector<std::string> all = list_checkpoints(path);
  if (all.empty())
    throw CheckpointError(fmt::format("checkpoint: {} holds no checkpoint (neither a meta.json nor step-* directories)", path));
  std::vector<std::string> reasons;
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    try {
      return read_checkpoint(*it, parse);
    } catch (const std::exception& e) {
      reasons.push_back(e.what());
      if (skipped) skipped->push_back(e.what());
    }
  }
  std::string text;
  for (const std::string& r : reasons) text += "\n  " + r;
  throw CheckpointError(fmt::format("checkpoint: no valid checkpoint in {}:{}", path, text));
}

}  // namespace axon
