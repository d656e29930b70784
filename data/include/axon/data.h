// Axon data loading: IDX files (the MNIST format), the Fashion-MNIST data set, and a
// distributed sampler that shards a data set across ranks without communication.
//
// Every error is a std::runtime_error whose message names the file (or the function) and
// what is wrong with it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace axon::data {

// ---- IDX files ---------------------------------------------------------------------------

// An IDX file: big-endian magic 0x0000TTNN (TT type code, NN number of dims), the dims as
// big-endian uint32, then the data, row-major and big-endian.
struct IdxArray {
  uint8_t type_code = 0;  // from the magic: 0x08 ubyte, ... (see read_idx)
  std::vector<uint32_t> dims;
  std::vector<float> values;  // converted to float, row-major
};

// Reads a plain or gzip-compressed IDX file. Gzip is detected by the 1f 8b magic, not by
// the file name; several gzip members one after another are read as one stream (RFC 1952, as
// gunzip does). Type codes: 0x08 ubyte, 0x09 sbyte, 0x0B int16, 0x0C int32, 0x0D float32,
// 0x0E float64. Throws std::runtime_error("<path>: <problem>", with expected and found sizes
// and byte offsets where they help) for a missing, unreadable or empty file, bad magic, unknown
// type code, 0 or more than 8 dims, more than 2^32 elements, dims that do not match the
// amount of data (truncated data, or trailing bytes after it), and for gzip: a truncated
// stream, a corrupt block, a CRC-32 or length mismatch in a member's trailer, or bytes after
// the last member that are not another member.
IdxArray read_idx(const std::string& path);

// ---- Fashion-MNIST -----------------------------------------------------------------------

struct Dataset {
  std::vector<float> images;         // count × sample_size, row-major
  std::vector<int32_t> labels;       // count
  size_t count = 0;
  std::vector<size_t> sample_shape;  // e.g. {28, 28}
  size_t sample_size = 0;            // product of sample_shape
  int num_classes = 0;
  std::string source;                // where it came from (the images file), for messages; "" in memory
};

enum class Split { train, test };

// $AXON_FASHION_MNIST_DIR if set and non-empty, else "/usr/share/datasets/fashion-mnist"
// (where the Debian package dataset-fashion-mnist installs it).
std::string default_fashion_mnist_dir();

// Loads {train,t10k}-{images-idx3,labels-idx1}-ubyte from `dir`, preferring the .gz file
// when both exist. Pixels are scaled to [0, 1] (x / 255). Checks what the format defines:
// both files of type ubyte (0x08), the images count x 28 x 28, the labels 1-d with values in
// [0, 10), and the same count in both. A count of 0 is valid here; the trainer decides what an
// empty split means. Errors start with "fashion-mnist: " and
// name the directory or file; `source` is set to the images file's path.
Dataset load_fashion_mnist(const std::string& dir, Split split);

// `count` samples shaped like Fashion-MNIST ({28, 28} pixels k/255, labels in [0, 10)), random but
// the same for the same seed on every platform; `source` says "synthetic(...)". For benchmarks.
Dataset synthetic_fashion_mnist(size_t count, uint64_t seed);

// Copies the samples at `indices` into caller buffers: images_out holds
// indices.size() * ds.sample_size floats, labels_out indices.size() labels. Every index is
// checked before anything is written.
void gather(const Dataset& ds, std::span<const size_t> indices, float* images_out,
            int32_t* labels_out);

// ---- Distributed sampling ----------------------------------------------------------------

// Like PyTorch's DistributedSampler: every rank builds the same permutation of
// [0, dataset_size) from (seed, epoch), pads it by wrapping around to a multiple of
// world_size (or truncates it when drop_last), and rank r takes positions r, r+W, r+2W, ...
// So the ranks get disjoint shards of equal length and agree on the order without
// communicating. With per-rank batch size b, the union over ranks of batch k is exactly
// positions [k*W*b, (k+1)*W*b) of the padded permutation.
class DistributedSampler {
 public:
  // Throws std::runtime_error unless world_size >= 1, 0 <= rank < world_size,
  // dataset_size > 0, and (when drop_last) dataset_size >= world_size.
  DistributedSampler(size_t dataset_size, int rank, int world_size, uint64_t seed,
                     bool shuffle = true, bool drop_last = false);

  std::vector<size_t> indices(uint64_t epoch) const;  // this rank's indices for the epoch
  size_t num_samples() const;                         // per rank
  size_t total_size() const;                          // num_samples * world_size

 private:
  size_t dataset_size_;
  int rank_;
  int world_size_;
  uint64_t seed_;
  bool shuffle_;
  size_t num_samples_;
};

// The permutation of [0, n) for (seed, epoch), the same on every platform and standard
// library: std::mt19937_64 seeded with seed ^ (epoch * 0x9E3779B97F4A7C15) drives a
// Fisher–Yates shuffle with unbiased bounded integers.
std::vector<size_t> permutation(size_t n, uint64_t seed, uint64_t epoch);

}  // namespace axon::data
