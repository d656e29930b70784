// Element types and devices: what every tensor carries besides its shape.
//
// DType follows PyTorch's names (float32 is "f32", as in the seed's {:f, 32}). Device is "cpu" or
// "cuda:k", as in PyTorch. Ops never convert implicitly: an op given two dtypes or two devices
// throws, naming the op and both; conversions are explicit (Tensor::to).
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace axon {

enum class DType : uint8_t { f32, f64, bf16, i32, i64 };

// "f32", "f64", "bf16", "i32", "i64".
const char* dtype_name(DType dtype);
// Parses a dtype_name(); throws std::invalid_argument naming the text and the accepted names.
DType parse_dtype(std::string_view text);
// Bytes per element: 4, 8, 2, 4, 8.
size_t dtype_size(DType dtype);
// f32, f64 and bf16: the dtypes arithmetic, autograd and GEMM accept.
bool is_floating(DType dtype);

// bfloat16: the upper half of an IEEE float32 (8 exponent bits, 7 mantissa bits). Conversion from
// float rounds to nearest even, as CUDA's __float2bfloat16 and PyTorch do; NaN stays NaN.
struct bf16 {
  uint16_t bits = 0;

  bf16() = default;
  explicit bf16(float value) : bits(round(value)) {}
  explicit operator float() const {
    uint32_t u = static_cast<uint32_t>(bits) << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
  }

  static uint16_t round(float value) {
    uint32_t u;
    std::memcpy(&u, &value, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // quiet NaN
    const uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
    return static_cast<uint16_t>((u + rounding) >> 16);
  }
};
static_assert(sizeof(bf16) == 2);

enum class DeviceType : uint8_t { cpu, cuda };

struct Device {
  DeviceType type = DeviceType::cpu;
  int index = 0;  // the GPU ordinal for cuda; always 0 for cpu

  static Device cpu() { return {DeviceType::cpu, 0}; }
  static Device cuda(int index = 0) { return {DeviceType::cuda, index}; }
  bool is_cpu() const { return type == DeviceType::cpu; }
  bool is_cuda() const { return type == DeviceType::cuda; }
  bool operator==(const Device&) const = default;
  // "cpu" or "cuda:0".
  std::string str() const;
};

// Parses "cpu", "cuda" (= cuda:0) or "cuda:k". Throws std::invalid_argument naming the text.
// Whether the device exists is checked when memory is first allocated on it.
Device parse_device(std::string_view text);

}  // namespace axon
