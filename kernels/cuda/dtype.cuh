// Device-side conversions between fp32 and the 16-bit storage types, and the
// one dtype dispatch switch the launchers use. Included by .cu files only.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/cuda/cuda_check.h"

namespace sinkserve::cuda {

template <typename T> struct Storage;
template <> struct Storage<__half> {
  using Pair = __half2;
  static __device__ __forceinline__ float ToFloat(__half x) { return __half2float(x); }
  static __device__ __forceinline__ __half FromFloat(float x) { return __float2half_rn(x); }
  static __device__ __forceinline__ float2 PairToFloat2(__half2 x) { return __half22float2(x); }
  static __device__ __forceinline__ __half2 Float2ToPair(float2 x) { return __float22half2_rn(x); }
};
template <> struct Storage<__nv_bfloat16> {
  using Pair = __nv_bfloat162;
  static __device__ __forceinline__ float ToFloat(__nv_bfloat16 x) { return __bfloat162float(x); }
  static __device__ __forceinline__ __nv_bfloat16 FromFloat(float x) { return __float2bfloat16_rn(x); }
  static __device__ __forceinline__ float2 PairToFloat2(__nv_bfloat162 x) { return __bfloat1622float2(x); }
  static __device__ __forceinline__ __nv_bfloat162 Float2ToPair(float2 x) { return __float22bfloat162_rn(x); }
};

// Calls f(T{}) with T the storage type of `d`: the one place dtype branches.
template <typename F>
void DispatchDType(DType d, F&& f) {
  switch (d) {
    case DType::kF16: f(__half{}); return;
    case DType::kBF16: f(__nv_bfloat16{}); return;
  }
}

}  // namespace sinkserve::cuda
