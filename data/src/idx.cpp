// Reading IDX files, plain or gzip-compressed.
#include <zlib.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iomanip>
#include <sstream>
#include <stdexcept>
#include <string_view>

#include "axon/data.h"
#include "dims.h"

namespace axon::data {
namespace {

[[noreturn]] void fail(const std::string& path, const std::string& problem) {
  throw std::runtime_error(path + ": " + problem);
}

std::string hex(uint32_t value, int width) {
  std::ostringstream out;
  out << "0x" << std::hex << std::uppercase << std::setw(width) << std::setfill('0') << value;
  return out.str();
}

// Reads a file through zlib's gz* functions: zlib checks the first bytes for the gzip magic
// 1f 8b and decompresses if it is there, and passes any other file through unchanged, so
// plain and compressed files share one code path whatever their names.
class Reader {
 public:
  explicit Reader(const std::string& path) : path_(path) {
    // Check up front so the common mistakes get a plain message rather than an errno.
    std::error_code ec;
    const auto status = std::filesystem::status(path, ec);
    if (!std::filesystem::exists(status)) fail(path, "no such file");
    if (std::filesystem::is_directory(status)) fail(path, "is a directory, not an IDX file");

    errno = 0;
    file_ = gzopen(path.c_str(), "rb");
    if (file_ == nullptr) {
      fail(path, std::string("cannot open: ") + (errno != 0 ? std::strerror(errno) : "out of memory"));
    }
    gzbuffer(file_, 1 << 17);           // larger than the 8 KiB default: fewer read calls
    gzip_ = gzdirect(file_) == 0;      // makes zlib look at the magic now
    check();
  }
  ~Reader() { gzclose(file_); }
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;

  // Reads up to n bytes; fewer only at the end of the (decompressed) data.
  size_t read(unsigned char* out, size_t n) {
    size_t total = 0;
    while (total < n) {
      // gzread takes an unsigned count and returns an int: keep each call well below both.
      const auto want = static_cast<unsigned>(std::min<size_t>(n - total, 1u << 30));
      const int got = gzread(file_, out + total, want);
      check();
      if (got < 0) fail(path_, "read error");  // check() should already have thrown
      if (got == 0) break;
      total += static_cast<size_t>(got);
    }
    return total;
  }

 private:
  // Turns zlib's sticky error state into an exception. A truncated gzip stream shows up as
  // Z_BUF_ERROR, corrupt data (bad header, bad block, CRC mismatch) as Z_DATA_ERROR.
  void check() {
    int err = Z_OK;
    const char* msg = gzerror(file_, &err);
    if (err == Z_OK) return;
    // zlib prefixes its messages with the path, which our own prefix already gives.
    std::string_view text = msg != nullptr ? msg : "unknown zlib error";
    const std::string zlib_prefix = path_ + ": ";
    if (text.starts_with(zlib_prefix)) text.remove_prefix(zlib_prefix.size());
    const std::string what = err == Z_ERRNO ? "read error: " : gzip_ ? "corrupt gzip stream: " : "";
    fail(path_, what + std::string(text));
  }

  std::string path_;
  gzFile file_ = nullptr;
  bool gzip_ = false;
};

struct ElementType {
  const char* name;
  size_t size;  // bytes per element
};

// The element types IDX defines, by type code; nullptr name for an unknown code.
ElementType element_type(uint8_t code) {
  switch (code) {
    case 0x08: return {"ubyte", 1};
    case 0x09: return {"sbyte", 1};
    case 0x0B: return {"int16", 2};
    case 0x0C: return {"int32", 4};
    case 0x0D: return {"float32", 4};
    case 0x0E: return {"float64", 8};
    default: return {nullptr, 0};
  }
}

uint16_t big_endian16(const unsigned char* p) {
  return static_cast<uint16_t>(p[0] << 8 | p[1]);
}
uint32_t big_endian32(const unsigned char* p) {
  return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | uint32_t{p[3]};
}
uint64_t big_endian64(const unsigned char* p) {
  return uint64_t{big_endian32(p)} << 32 | big_endian32(p + 4);
}

// Converts `count` big-endian elements of the given type to float. The switch sits outside
// the loops so each loop is a simple, vectorisable conversion.
void convert(uint8_t code, const unsigned char* in, size_t count, float* out) {
  switch (code) {
    case 0x08:
      for (size_t i = 0; i < count; ++i) out[i] = in[i];
      break;
    case 0x09:
      for (size_t i = 0; i < count; ++i) out[i] = static_cast<int8_t>(in[i]);
      break;
    case 0x0B:
      for (size_t i = 0; i < count; ++i) out[i] = static_cast<int16_t>(big_endian16(in + 2 * i));
      break;
    case 0x0C:
      for (size_t i = 0; i < count; ++i) {
        out[i] = static_cast<float>(static_cast<int32_t>(big_endian32(in + 4 * i)));
      }
      break;
    case 0x0D:
      for (size_t i = 0; i < count; ++i) out[i] = std::bit_cast<float>(big_endian32(in + 4 * i));
      break;
    case 0x0E:
      for (size_t i = 0; i < count; ++i) {
        out[i] = static_cast<float>(std::bit_cast<double>(big_endian64(in + 8 * i)));
      }
      break;
  }
}

}  // namespace

IdxArray read_idx(const std::string& path) {
  Reader in(path);

  unsigned char magic[4];
  if (const size_t got = in.read(magic, sizeof magic); got < sizeof magic) {
    fail(path, "truncated: file has " + std::to_string(got) +
                   " bytes, too short for the 4-byte IDX magic");
  }
  const uint32_t magic_value = big_endian32(magic);
  if (magic[0] != 0 || magic[1] != 0) {
    fail(path, "bad magic " + hex(magic_value, 8) +
                   ": not an IDX file (expected 0x0000TTNN: two zero bytes, type code, dims)");
  }
  const uint8_t code = magic[2];
  const ElementType type = element_type(code);
  if (type.name == nullptr) {
    fail(path, "unknown IDX type code " + hex(code, 2) + " in magic " + hex(magic_value, 8) +
                   " (expected 0x08, 0x09, 0x0B, 0x0C, 0x0D or 0x0E)");
  }
  const size_t ndims = magic[3];
  if (ndims == 0 || ndims > 8) {
    fail(path, "bad number of dimensions " + std::to_string(ndims) + " in magic " +
                   hex(magic_value, 8) + " (expected 1 to 8)");
  }

  unsigned char dim_bytes[4 * 8];
  if (const size_t got = in.read(dim_bytes, 4 * ndims); got < 4 * ndims) {
    fail(path, "truncated: header declares " + std::to_string(ndims) + " dims (" +
                   std::to_string(4 * ndims) + " bytes) but the file ends " +
                   std::to_string(got) + " bytes into them");
  }
  IdxArray result;
  result.dims.resize(ndims);
  // Element count, checked against 2^32 after every factor: a factor is below 2^32 and the
  // running product at most 2^32, so the product cannot overflow 64 bits.
  constexpr uint64_t max_elements = uint64_t{1} << 32;
  uint64_t count = 1;
  for (size_t i = 0; i < ndims; ++i) {
    result.dims[i] = big_endian32(dim_bytes + 4 * i);
    count *= result.dims[i];
    if (count > max_elements) {
      // Report all dims, not just those read so far.
      for (size_t j = i + 1; j < ndims; ++j) result.dims[j] = big_endian32(dim_bytes + 4 * j);
      fail(path, "too many elements: header says " + join_dims(result.dims) +
                     ", more than the limit of 2^32");
    }
  }
  const uint64_t data_bytes = count * type.size;
  const auto describe_data = [&] {
    return "header says " + join_dims(result.dims) + " " + type.name + " = " +
           std::to_string(data_bytes) + " bytes of data";
  };

  // Read and convert in chunks, growing `values` only as data actually arrives, so a
  // corrupt header claiming billions of elements cannot make us allocate for them.
  constexpr size_t chunk_bytes = size_t{1} << 20;  // a multiple of every element size
  std::vector<unsigned char> chunk(static_cast<size_t>(std::min<uint64_t>(data_bytes, chunk_bytes)));
  uint64_t done = 0;
  while (done < data_bytes) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(data_bytes - done, chunk_bytes));
    const size_t got = in.read(chunk.data(), want);
    if (got < want) {
      fail(path, "truncated: " + describe_data() + ", file has " + std::to_string(done + got));
    }
    const size_t elements = got / type.size;
    const size_t old_size = result.values.size();
    result.values.resize(old_size + elements);
    convert(code, chunk.data(), elements, result.values.data() + old_size);
    done += got;
  }

  // Anything left over means the header and the data disagree: count it for the message.
  unsigned char rest[4096];
  uint64_t trailing = 0;
  while (const size_t got = in.read(rest, sizeof rest)) trailing += got;
  if (trailing > 0) {
    fail(path, "trailing garbage: " + std::to_string(trailing) + " bytes after the data (" +
                   describe_data() + ")");
  }
  return result;
}

}  // namespace axon::data
