// Picks a Backend implementation by name.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/backend.h"
#include "engine/model/model.h"

namespace sinkserve {

struct BackendOptions {
  std::string kind = "auto";  // cpu | cuda | auto (cuda when a device is present)
  int32_t threads = 0;        // CPU worker threads; 0 = all cores
  bool dequantize_weights = false;  // CPU: every weight to fp32 at load (the reference path)
  std::string dtype = "fp16";  // CUDA weight/KV dtype: fp16 | bf16
  double gpu_memory_gib = 0;   // CUDA KV pool budget in GiB; 0 = use gpu_memory_fraction
  double gpu_memory_fraction = 0.9;  // of the memory free after weights are loaded
};

// The model is moved in: the CPU backend keeps its weights (quantized ones in
// the file's mapping), the CUDA backend uploads them and frees the host copy.
absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(Model model, const BackendOptions& options);

// True when this build has the CUDA backend and a device is visible.
bool CudaDeviceAvailable();

}  // namespace sinkserve
