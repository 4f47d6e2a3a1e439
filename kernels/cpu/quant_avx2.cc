// The block kernels for x86-64-v3 (AVX2, FMA); see quant_simd.inc.
#define SINKSERVE_QUANT_LEVEL avx2
#include "kernels/cpu/quant_simd.inc"
