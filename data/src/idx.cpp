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
#include <cstdio>
#include <vector>

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

std::string plural(uint64_t n, const char* unit) {
  return std::to_string(n) + " " + unit + (n == 1 ? "" : "s");
}

uint32_t little_endian32(const unsigned char* p) {
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
}

// Reads a plain or gzip-compressed file as one byte stream. Gzip (the 1f 8b magic; an IDX file
// starts with 00 00) is inflated here rather than through zlib's gz* functions, which accept
// corrupt input silently: they ignore bytes after the last gzip member. Here every gzip member
// is checked to its trailer (CRC-32 and length, by zlib), members may follow one another as in
// RFC 1952 (gunzip reads them as one stream), and anything else after the last member, or a
// stream that ends inside a member, is an error naming the byte offset.
class Reader {
 public:
  explicit Reader(const std::string& path) : path_(path) {
    // Check up front so the common mistakes get a plain message rather than an errno.
    std::error_code ec;
    const auto status = std::filesystem::status(path, ec);
    if (!std::filesystem::exists(status)) fail(path, "no such file");
    if (std::filesystem::is_directory(status)) fail(path, "is a directory, not an IDX file");
    // Sizes and offsets in messages come from the file's size: a pipe or device has none.
    if (!std::filesystem::is_regular_file(status)) fail(path, "not a regular file");
    errno = 0;
    file_ = std::fopen(path.c_str(), "rb");
    if (file_ == nullptr) fail(path, std::string("cannot open: ") + std::strerror(errno));
    if (std::fseek(file_, 0, SEEK_END) == 0) {
      const long size = std::ftell(file_);
      if (size >= 0) file_size_ = static_cast<uint64_t>(size);
      std::rewind(file_);
    }
    if (file_size_ == 0) fail(path, "empty file (0 bytes): expected an IDX header");
    buffer_.resize(history + (size_t{1} << 17));
    next_ = buffer_.data() + history;
    refill();
    gzip_ = available_ >= 2 && next_[0] == 0x1f && next_[1] == 0x8b;
    if (gzip_) {
      stream_.zalloc = Z_NULL;
      stream_.zfree = Z_NULL;
      stream_.opaque = Z_NULL;
      if (inflateInit2(&stream_, 16 + MAX_WBITS) != Z_OK) fail(path, "zlib: out of memory");  // 16: gzip only
      stream_ready_ = true;
    }
  }
  ~Reader() {
    if (stream_ready_) inflateEnd(&stream_);
    if (file_ != nullptr) std::fclose(file_);
  }
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;

  bool gzip() const { return gzip_; }
  uint64_t file_size() const { return file_size_; }

  // Reads up to n bytes of content; fewer only at its end.
  size_t read(unsigned char* out, size_t n) { return gzip_ ? inflate_some(out, n) : read_plain(out, n); }

 private:
  static constexpr size_t history = 8;  // bytes kept before next_: a gzip trailer, for messages

  // Moves the unread bytes (and up to `history` bytes before them) to the front of the buffer
  // and fills the rest from the file.
  void refill() {
    const size_t keep_before = std::min<size_t>(history, static_cast<size_t>(next_ - buffer_.data()));
    unsigned char* const begin = buffer_.data() + history - keep_before;
    std::memmove(begin, next_ - keep_before, keep_before + available_);
    next_ = buffer_.data() + history;
    unsigned char* const end = next_ + available_;
    const size_t got = std::fread(end, 1, static_cast<size_t>(buffer_.data() + buffer_.size() - end), file_);
    if (std::ferror(file_)) fail(path_, std::string("read error: ") + std::strerror(errno));
    available_ += got;
  }

  size_t read_plain(unsigned char* out, size_t n) {
    size_t total = 0;
    while (total < n) {
      if (available_ == 0) refill();
      if (available_ == 0) break;
      const size_t take = std::min(n - total, available_);
      std::memcpy(out + total, next_, take);
      next_ += take;
      available_ -= take;
      total += take;
    }
    return total;
  }

  size_t inflate_some(unsigned char* out, size_t n) {
    size_t total = 0;
    while (total < n) {
      if (available_ < 2) refill();  // 2: enough to see the next member's magic
      if (!in_member_) {
        if (available_ == 0) break;  // the end of the last member is the end of the file
        if (available_ < 2 || next_[0] != 0x1f || next_[1] != 0x8b) {
          fail(path_, "trailing garbage: " + plural(file_size_ - offset_, "byte") +
                          " after the end of the gzip stream at byte " + std::to_string(offset_) +
                          " (expected the end of the file or another gzip member, which starts 1f 8b)");
        }
        if (members_ > 0) inflateReset(&stream_);
        in_member_ = true;
        member_start_ = offset_;
        member_out_ = 0;
        ++members_;
      }
      if (available_ == 0) {
        fail(path_, "truncated gzip stream: the file ends at byte " + std::to_string(file_size_) +
                        " inside the gzip member that starts at byte " + std::to_string(member_start_) +
                        ", after " + plural(member_out_, "decompressed byte"));
      }
      stream_.next_in = next_;
      stream_.avail_in = static_cast<uInt>(std::min<size_t>(available_, 1u << 30));
      stream_.next_out = out + total;
      stream_.avail_out = static_cast<uInt>(std::min<size_t>(n - total, 1u << 30));
      const uInt in_before = stream_.avail_in, out_before = stream_.avail_out;
      const int ret = inflate(&stream_, Z_NO_FLUSH);
      const size_t used = in_before - stream_.avail_in, produced = out_before - stream_.avail_out;
      next_ += used;
      available_ -= used;
      offset_ += used;
      member_out_ += produced;
      total += produced;
      if (ret == Z_STREAM_END) {
        in_member_ = false;
      } else if (ret == Z_DATA_ERROR || ret == Z_NEED_DICT) {
        corrupt(stream_.msg != nullptr ? stream_.msg : "invalid data");
      } else if (ret == Z_MEM_ERROR) {
        fail(path_, "zlib: out of memory");
      }
      // Z_OK, or Z_BUF_ERROR (no progress: needs input, which the next turn reads).
    }
    return total;
  }

  [[noreturn]] void corrupt(const std::string& what) {
    const std::string member = "in the gzip member that starts at byte " + std::to_string(member_start_);
    // zlib has just consumed the 4-byte trailer field it checked: it is right before next_.
    if (what == "incorrect data check") {
      const uint32_t stored = little_endian32(next_ - 4);
      fail(path_, "corrupt gzip stream: CRC-32 mismatch " + member + ": the trailer at byte " +
                      std::to_string(offset_ - 4) + " says " + hex(stored, 8) + ", the data has " +
                      hex(static_cast<uint32_t>(stream_.adler), 8));
    }
    if (what == "incorrect length check") {
      const uint32_t stored = little_endian32(next_ - 4);
      fail(path_, "corrupt gzip stream: length mismatch " + member + ": the trailer at byte " +
                      std::to_string(offset_ - 4) + " says " + std::to_string(stored) +
                      " bytes (mod 2^32), the member decompresses to " + std::to_string(member_out_));
    }
    fail(path_, "corrupt gzip stream: " + what + " near byte " + std::to_string(offset_) + " " + member);
  }

  std::string path_;
  std::FILE* file_ = nullptr;
  uint64_t file_size_ = 0;
  std::vector<unsigned char> buffer_;
  unsigned char* next_ = nullptr;  // the unread bytes: [next_, next_ + available_)
  size_t available_ = 0;
  uint64_t offset_ = 0;            // file offset of next_ (gzip only)
  bool gzip_ = false;
  z_stream stream_{};
  bool stream_ready_ = false;
  bool in_member_ = false;
  int members_ = 0;
  uint64_t member_start_ = 0;
  uint64_t member_out_ = 0;
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

  // Where sizes in messages are counted: the file itself, or what its gzip stream holds.
  const std::string content = in.gzip() ? "the decompressed gzip stream" : "the file";
  unsigned char magic[4];
  if (const size_t got = in.read(magic, sizeof magic); got < sizeof magic) {
    fail(path, "truncated: " + content + " has " + plural(got, "byte") +
                   ", too short for the 4-byte IDX magic");
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
  result.type_code = code;
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
  const uint64_t header_bytes = 4 + 4 * ndims;
  const auto describe_data = [&] {
    return "header says " + join_dims(result.dims) + " " + type.name + " = " +
           std::to_string(data_bytes) + " bytes of data";
  };
  // A plain file's size tells at once whether the dims fit, before reading (or allocating for)
  // anything. Gzip streams are checked as they are read, below.
  if (!in.gzip() && in.file_size() != header_bytes + data_bytes) {
    const std::string sizes = "the file is " + plural(in.file_size(), "byte") + ", expected " +
                              std::to_string(header_bytes) + " header + " + std::to_string(data_bytes) +
                              " data = " + std::to_string(header_bytes + data_bytes);
    if (in.file_size() < header_bytes + data_bytes) {
      fail(path, "truncated: " + describe_data() + ", file has " +
                     std::to_string(in.file_size() - header_bytes) + " (" + sizes + ")");
    }
    fail(path, "trailing garbage: " + plural(in.file_size() - header_bytes - data_bytes, "byte") +
                   " after the data, from byte " + std::to_string(header_bytes + data_bytes) + " (" +
                   describe_data() + "; " + sizes + ")");
  }

  // Read and convert in chunks, growing `values` only as data actually arrives, so a
  // corrupt header claiming billions of elements cannot make us allocate for them.
  constexpr size_t chunk_bytes = size_t{1} << 20;  // a multiple of every element size
  std::vector<unsigned char> chunk(static_cast<size_t>(std::min<uint64_t>(data_bytes, chunk_bytes)));
  uint64_t done = 0;
  while (done < data_bytes) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(data_bytes - done, chunk_bytes));
    const size_t got = in.read(chunk.data(), want);
    if (got < want) {
      fail(path, "truncated: " + describe_data() + ", file has " + std::to_string(done + got) + " (" +
                     content + " ends at byte " + std::to_string(header_bytes + done + got) + ")");
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
    fail(path, "trailing garbage: " + plural(trailing, "byte") + " after the data, from byte " +
                   std::to_string(header_bytes + data_bytes) + " of " + content + " (" + describe_data() + ")");
  }
  return result;
}

}  // namespace axon::data
