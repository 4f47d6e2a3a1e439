// The block kernels for x86-64-v4 with VNNI (AVX-512); see quant_simd.inc.
#define SINKSERVE_QUANT_LEVEL avx512
#include "kernels/cpu/quant_simd.inc"
