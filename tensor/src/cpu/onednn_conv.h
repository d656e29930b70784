// The CPU convolution through oneDNN (cpu/onednn_conv.cpp), when Axon is built with it
// (AXON_HAS_ONEDNN: Debian's libdnnl-dev 2.x found at configure time). The CPU backend's
// conv_forward, conv_backward_data and conv_backward_weights (axon/backend.h) forward here.
#pragma once

#include <string>

#include "axon/backend.h"

namespace axon::cpu_detail {

// Whether this build links oneDNN; whether it is used (built and not turned off by
// set_onednn_enabled(false), e.g. by a test comparing it with im2col + GEMM).
bool onednn_built();
bool onednn_enabled();
void set_onednn_enabled(bool enabled);

// Whether oneDNN runs this convolution: enabled, f32, 1 to 3 spatial dims (the rest of g's dims
// 1), no input dilation (conv_transpose's), nothing empty.
bool onednn_conv_supported(const ConvGeometry& g, int dims, int64_t cout, DType dtype);
// x {batch, in..., channels}, kernel {k..., channels/groups, cout}, bias {cout} or null,
// out {batch, out..., cout}: f32, contiguous. Throws std::runtime_error naming the geometry and
// oneDNN's status if oneDNN fails.
void onednn_conv_forward(const Tensor& x, const Tensor& kernel, const Tensor* bias, const ConvGeometry& g, Tensor& out);
// dx (x's shape) = the input gradient given the output gradient `grad`; written, not added.
void onednn_conv_backward_data(const Tensor& grad, const Tensor& kernel, const ConvGeometry& g, Tensor& dx);
// dw (the kernel's shape) = beta·dw + the kernel gradient; beta is 0 or 1. With db ({cout}, or
// null) also db = db_beta·db + the bias gradient, in the same pass.
void onednn_conv_backward_weights(const Tensor& x, const Tensor& grad, const ConvGeometry& g, float beta, Tensor& dw,
                                  Tensor* db, float db_beta);

// How many convolution passes (forward, backward data, backward weights) oneDNN has run.
int64_t onednn_calls();
// How many GEMMs onednn_sgemm has run.
int64_t onednn_gemm_calls();
// Whether a oneDNN pass was asked to run on more than one thread, i.e. its OpenMP team exists.
bool onednn_team_started();

// C {m, n} = alpha·op(A)·op(B) + beta·C, row-major f32 (blas::sgemm's arguments), on oneDNN's
// OpenMP team (dnnl_sgemm): false, with nothing done, unless oneDNN is enabled and that team has
// started (onednn_team_started). Once a CNN's convolutions run on OpenMP, its dense layers' GEMMs join
// them there, rather than OpenBLAS's own threads competing with OpenMP's spinning ones.
bool onednn_sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                  const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

// oneDNN's OpenMP threads (set_num_threads calls it); "oneDNN 2.6.3", or "" when not built.
void onednn_set_num_threads(int threads);
std::string onednn_version();

}  // namespace axon::cpu_detail
