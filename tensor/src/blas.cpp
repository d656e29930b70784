#include "blas.h"

#include <dlfcn.h>
#include <fmt/format.h>

#include <cstdlib>
#include <stdexcept>

namespace axon::blas {

namespace {

using SgemmFn = void (*)(CBLAS_ORDER, CBLAS_TRANSPOSE, CBLAS_TRANSPOSE, int, int, int, float, const float*, int,
                         const float*, int, float, float*, int);

using DgemmFn = void (*)(CBLAS_ORDER, CBLAS_TRANSPOSE, CBLAS_TRANSPOSE, int, int, int, double, const double*, int,
                         const double*, int, double, double*, int);

struct OpenBlas {
  SgemmFn sgemm = nullptr;
  DgemmFn dgemm = nullptr;
  void (*set_num_threads)(int) = nullptr;
  int (*get_num_threads)() = nullptr;
  char* (*get_corename)() = nullptr;
};

// The newest OpenBLAS kernel family this CPU can run, judged by its instruction set.
const char* kernels_for_this_cpu() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vl"))
    return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
  return nullptr;  // OpenBLAS's own choice
}

template <class T>
T symbol(void* handle, const char* name, const std::string& path) {
  void* p = dlsym(handle, name);
  if (!p) throw std::runtime_error(fmt::format("axon: {} has no symbol {}: is it OpenBLAS?", path, name));
  return reinterpret_cast<T>(p);
}

OpenBlas load() {
  // Only while loading: the choice must not leak into programs this process starts.
  const char* kernels = std::getenv("OPENBLAS_CORETYPE") ? nullptr : kernels_for_this_cpu();
  if (kernels) setenv("OPENBLAS_CORETYPE", kernels, 1);
  std::string path = "libopenblas.so.0";
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
#ifdef AXON_OPENBLAS_PATH
  if (!handle) handle = dlopen((path = AXON_OPENBLAS_PATH).c_str(), RTLD_NOW | RTLD_LOCAL);
#endif
  if (kernels) unsetenv("OPENBLAS_CORETYPE");
  if (!handle)
    throw std::runtime_error(fmt::format("axon: cannot load OpenBLAS ({}); install the libopenblas0 package", dlerror()));
  OpenBlas b;
  b.sgemm = symbol<SgemmFn>(handle, "cblas_sgemm", path);
  b.dgemm = symbol<DgemmFn>(handle, "cblas_dgemm", path);
  b.set_num_threads = symbol<void (*)(int)>(handle, "openblas_set_num_threads", path);
  b.get_num_threads = symbol<int (*)()>(handle, "openblas_get_num_threads", path);
  b.get_corename = symbol<char* (*)()>(handle, "openblas_get_corename", path);
  return b;
}

const OpenBlas& openblas() {
  static const OpenBlas instance = load();
  return instance;
}

}  // namespace

void sgemm(CBLAS_ORDER order, CBLAS_TRANSPOSE trans_a, CBLAS_TRANSPOSE trans_b, int m, int n, int k, float alpha,
           const float* a, int lda, const float* b, int ldb, float beta, float* c, int ldc) {
  openblas().sgemm(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void dgemm(CBLAS_ORDER order, CBLAS_TRANSPOSE trans_a, CBLAS_TRANSPOSE trans_b, int m, int n, int k, double alpha,
           const double* a, int lda, const double* b, int ldb, double beta, double* c, int ldc) {
  openblas().dgemm(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void set_num_threads(int threads) { openblas().set_num_threads(threads); }
int num_threads() { return openblas().get_num_threads(); }
std::string kernel_name() { return openblas().get_corename(); }

}  // namespace axon::blas
