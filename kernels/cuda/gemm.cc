#include "kernels/cuda/gemm.h"

namespace sinkserve::cuda {

void Gemm(cublasHandle_t handle, const GemmArgs& a) {
  SINKSERVE_REQUIRE(a.w != nullptr && a.in != nullptr && a.out != nullptr);
  SINKSERVE_REQUIRE(a.tokens >= 0 && a.n > 0 && a.k > 0);
  if (a.tokens == 0) return;
  // Column-major view: out^T (n, tokens) = w (k, n)^T . in^T (k, tokens).
  const float alpha = 1.0f;
  const cudaDataType_t type = CudaDataType(a.dtype);
  CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, a.n, a.tokens, a.k, &alpha, a.w, type, a.k, a.in, type,
                            a.k, &a.beta, a.out, CUDA_R_32F, a.n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

}  // namespace sinkserve::cuda
