#include "kernels/backend_factory.h"

#include "absl/strings/str_format.h"
#include "kernels/cpu/cpu_backend.h"
#if SINKSERVE_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace sinkserve {

bool CudaDeviceAvailable() {
#if SINKSERVE_HAVE_CUDA
  return CudaDevicePresent();
#else
  return false;
#endif
}

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(Model model, const BackendOptions& options) {
  std::string kind = options.kind;
  if (kind == "auto") kind = CudaDeviceAvailable() ? "cuda" : "cpu";
  if (kind == "cpu") {
    auto backend = CpuBackend::Create(std::move(model), options.threads, options.dequantize_weights);
    if (!backend.ok()) return backend.status();
    return std::unique_ptr<Backend>(std::move(*backend));
  }
  if (kind == "cuda") {
#if SINKSERVE_HAVE_CUDA
    if (!CudaDevicePresent()) {
      return absl::FailedPreconditionError("--backend cuda: no CUDA device is visible (use --backend cpu or auto)");
    }
    return CreateCudaBackend(std::move(model), options);
#else
    return absl::FailedPreconditionError("--backend cuda: this build has no CUDA backend (configure with -DSINKSERVE_CUDA=ON)");
#endif
  }
  return absl::InvalidArgumentError(absl::StrFormat("unknown backend '%s' (expected cpu, cuda or auto)", options.kind));
}

}  // namespace sinkserve
