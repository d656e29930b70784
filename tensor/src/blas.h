// Axon's access to OpenBLAS, loaded at first use.
//
// OpenBLAS chooses its kernels once, when it is loaded, from the CPU model. Builds that do not
// know a newer CPU fall back to their oldest x86-64 kernels ("Prescott", SSE3), which run GEMM 2-4×
// slower than the AVX2/AVX-512 kernels the CPU can run. So Axon loads OpenBLAS itself and, unless
// the user chose (OPENBLAS_CORETYPE is set), first tells it the kernels that match the CPU's
// features. See docs/benchmarks.md for what this changes.
#pragma once

#include <cblas.h>

#include <string>

namespace axon::blas {

void sgemm(CBLAS_ORDER order, CBLAS_TRANSPOSE trans_a, CBLAS_TRANSPOSE trans_b, int m, int n, int k, float alpha,
           const float* a, int lda, const float* b, int ldb, float beta, float* c, int ldc);
void dgemm(CBLAS_ORDER order, CBLAS_TRANSPOSE trans_a, CBLAS_TRANSPOSE trans_b, int m, int n, int k, double alpha,
           const double* a, int lda, const double* b, int ldb, double beta, double* c, int ldc);
void set_num_threads(int threads);
int num_threads();
// The kernel family OpenBLAS runs ("SkylakeX", "Haswell", "Prescott", ...).
std::string kernel_name();

}  // namespace axon::blas
