// The Fashion-MNIST data set (four IDX files) and copying samples out of a Dataset.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <sstream>
#include <utility>
#include <stdexcept>

#include "axon/data.h"
#include "dims.h"

namespace axon::data {
namespace {

namespace fs = std::filesystem;

constexpr int fashion_mnist_classes = 10;
constexpr uint32_t fashion_mnist_side = 28;  // images are 28 x 28 pixels
constexpr uint8_t ubyte_code = 0x08;

// What is at dir/name: nothing, a file to read, or something that is there but cannot be used.
struct Candidate {
  bool present = false;
  std::string problem;  // non-empty: present but unusable (a dangling symlink, a loop, ...)
};

Candidate inspect(const fs::path& path) {
  std::error_code ec;
  const fs::file_status link = fs::symlink_status(path, ec);
  if (link.type() == fs::file_type::not_found) return {};
  if (ec) return {true, ec.message()};
  if (!fs::is_symlink(link)) return {true, ""};  // read_idx reports a directory, pipe, ...
  // A symlink at an expected name was put there on purpose: a target that cannot be reached is
  // an error naming it, never a reason to fall back to another file or to call the file missing.
  const fs::file_status target = fs::status(path, ec);
  if (!ec && fs::exists(target)) return {true, ""};
  if (ec && ec != std::errc::no_such_file_or_directory) return {true, ec.message()};  // e.g. a loop
  std::error_code read_ec;
  const fs::path to = fs::read_symlink(path, read_ec);
  return {true, "dangling symbolic link" + (read_ec ? std::string() : " to '" + to.string() + "'") +
                    " (its target does not exist)"};
}

// dir/name.gz if it is there, else dir/name if it is there, else nothing. The .gz file is
// preferred when both exist (docs/reliability.md); the path returned is named in every error
// about its contents. Throws when a candidate is present but unusable.
std::optional<std::string> find_file(const fs::path& dir, const std::string& name) {
  for (const auto& path : {dir / (name + ".gz"), dir / name}) {
    const Candidate c = inspect(path);
    if (!c.present) continue;
    if (!c.problem.empty()) throw std::runtime_error("fashion-mnist: " + path.string() + ": " + c.problem);
    return path.string();
  }
  return std::nullopt;
}

// read_idx with its message prefixed, so the caller sees which loader failed.
IdxArray read_part(const std::string& path) {
  try {
    return read_idx(path);
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(std::string("fashion-mnist: ") + e.what());
  }
}

[[noreturn]] void fail(const std::string& path, const std::string& problem) {
  throw std::runtime_error("fashion-mnist: " + path + ": " + problem);
}

// Shortest natural form ("12", "3.5", "nan"), unlike std::to_string's "12.000000".
std::string number(float value) {
  std::ostringstream out;
  out << value;
  return out.str();
}

}  // namespace

std::string default_fashion_mnist_dir() {
  if (const char* env = std::getenv("AXON_FASHION_MNIST_DIR"); env != nullptr && *env != '\0') {
    return env;
  }
  return "/usr/share/datasets/fashion-mnist";
}

Dataset load_fashion_mnist(const std::string& dir, Split split) {
  const std::string prefix = split == Split::train ? "train" : "t10k";
  const std::string images_name = prefix + "-images-idx3-ubyte";
  const std::string labels_name = prefix + "-labels-idx1-ubyte";
  const std::string install_hint =
      "; install the Debian package dataset-fashion-mnist or set AXON_FASHION_MNIST_DIR";
  // The folder first: a file, a symlink loop or an unreadable path is not "missing files".
  std::error_code dir_ec;
  const fs::file_status dir_status = fs::status(dir, dir_ec);
  if (dir_status.type() == fs::file_type::not_found) {
    throw std::runtime_error("fashion-mnist: " + dir + ": missing " + images_name + "[.gz], " + labels_name +
                             "[.gz] (no such directory)" + install_hint);
  }
  if (dir_ec) throw std::runtime_error("fashion-mnist: '" + dir + "': " + dir_ec.message());
  if (!fs::is_directory(dir_status)) {
    throw std::runtime_error("fashion-mnist: '" + dir +
                             "' is not a directory: expected the folder with the Fashion-MNIST IDX files");
  }
  const auto images_path = find_file(dir, images_name);
  const auto labels_path = find_file(dir, labels_name);
  if (!images_path || !labels_path) {
    std::string missing;
    if (!images_path) missing += images_name + "[.gz]";
    if (!labels_path) missing += (missing.empty() ? "" : ", ") + labels_name + "[.gz]";
    throw std::runtime_error("fashion-mnist: " + dir + ": missing " + missing + install_hint);
  }

  IdxArray images = read_part(*images_path);
  IdxArray labels = read_part(*labels_path);
  if (images.dims.size() != 3) {
    fail(*images_path, "expected 3-d images (count x rows x cols), got " +
                           std::to_string(images.dims.size()) + "-d " + join_dims(images.dims));
  }
  if (labels.dims.size() != 1) {
    fail(*labels_path, "expected 1-d labels, got " + std::to_string(labels.dims.size()) +
                           "-d " + join_dims(labels.dims));
  }
  // The format stores both as unsigned bytes: another type code means another file.
  for (const auto& [array, path] : {std::pair{&images, &*images_path}, std::pair{&labels, &*labels_path}}) {
    if (array->type_code != ubyte_code) {
      std::ostringstream code;
      code << "0x" << std::hex << std::uppercase << (array->type_code < 16 ? "0" : "") << int{array->type_code};
      fail(*path, "expected IDX type ubyte (0x08), found type code " + code.str());
    }
  }
  if (images.dims[1] != fashion_mnist_side || images.dims[2] != fashion_mnist_side) {
    fail(*images_path, "expected 28x28 images, got " + join_dims(images.dims));
  }
  if (images.dims[0] != labels.dims[0]) {
    // The files chosen (X.gz or X), by full path: which of two copies was read is not a guess.
    throw std::runtime_error("fashion-mnist: " + *images_path + " has " + std::to_string(images.dims[0]) +
                             " samples but " + *labels_path + " has " + std::to_string(labels.dims[0]));
  }

  Dataset ds;
  ds.count = images.dims[0];
  ds.sample_shape = {images.dims[1], images.dims[2]};
  ds.sample_size = ds.sample_shape[0] * ds.sample_shape[1];
  ds.num_classes = fashion_mnist_classes;
  ds.source = *images_path;

  // Pixels: checked (the file may not be ubyte) and scaled to [0, 1] in place.
  ds.images = std::move(images.values);
  for (size_t i = 0; i < ds.images.size(); ++i) {
    const float pixel = ds.images[i];
    if (!(pixel >= 0.0f && pixel <= 255.0f)) {  // also rejects NaN
      fail(*images_path, "pixel " + number(pixel) + " at element " + std::to_string(i) +
                             " is outside [0, 255]");  // unreachable for ubyte, kept as a guard
    }
    ds.images[i] = pixel / 255.0f;
  }

  ds.labels.resize(ds.count);
  for (size_t i = 0; i < ds.count; ++i) {
    const float label = labels.values[i];
    if (!(label >= 0.0f && label < fashion_mnist_classes) || label != std::floor(label)) {
      // Byte offset in the (decompressed) IDX content: 8 header bytes, then one byte per label.
      fail(*labels_path, "label " + number(label) + " at index " + std::to_string(i) + " (byte " +
                             std::to_string(8 + i) + ") is not a class in [0, 10)");
    }
    ds.labels[i] = static_cast<int32_t>(label);
  }
  return ds;
}

void gather(const Dataset& ds, std::span<const size_t> indices, float* images_out,
            int32_t* labels_out) {
  if (ds.images.size() != ds.count * ds.sample_size || ds.labels.size() != ds.count) {
    throw std::runtime_error("gather: inconsistent dataset: count " + std::to_string(ds.count) +
                             ", sample_size " + std::to_string(ds.sample_size) + ", but " +
                             std::to_string(ds.images.size()) + " image values and " +
                             std::to_string(ds.labels.size()) + " labels");
  }
  if (indices.empty()) return;
  if (images_out == nullptr || labels_out == nullptr) {
    throw std::runtime_error("gather: null output buffer");
  }
  // Check everything first so a bad index leaves the output untouched.
  for (size_t i = 0; i < indices.size(); ++i) {
    if (indices[i] >= ds.count) {
      throw std::runtime_error("gather: index " + std::to_string(indices[i]) + " at position " +
                               std::to_string(i) + " is out of range for a dataset of " +
                               std::to_string(ds.count) + " samples");
    }
  }
  for (size_t i = 0; i < indices.size(); ++i) {
    std::copy_n(ds.images.begin() + static_cast<std::ptrdiff_t>(indices[i] * ds.sample_size),
                ds.sample_size, images_out + i * ds.sample_size);
    labels_out[i] = ds.labels[indices[i]];
  }
}

}  // namespace axon::data
