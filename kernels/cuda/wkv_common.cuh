// Shared by the WKV kernel files: the bf16 type, float conversions and the launch macro, for nvcc and for
// the CPU emulator (-DMMRWKV_EMU, see emu/cuda_emu.h).
#pragma once

#include "wkv_api.h"

#ifdef MMRWKV_EMU
#include "emu/cuda_emu.h"
#define MMRWKV_LAUNCH(kernel, grid, block, stream, ...) ::mmrwkv_emu::launch(grid, block, [&] { kernel(__VA_ARGS__); })
#define MMRWKV_LAST_ERROR() static_cast<const char*>(nullptr)
#else
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#define MMRWKV_LAUNCH(kernel, grid, block, stream, ...) \
    kernel<<<grid, block, 0, static_cast<cudaStream_t>(stream)>>>(__VA_ARGS__)
#define MMRWKV_LAST_ERROR() mmrwkv_last_error()
static inline const char* mmrwkv_last_error() {
    const cudaError_t err = cudaGetLastError();
    return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}
#endif

typedef __nv_bfloat16 bf16;

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(bf16 x) { return __bfloat162float(x); }

template <class F>
__device__ __forceinline__ F from_f(float x);
template <>
__device__ __forceinline__ float from_f<float>(float x) { return x; }
template <>
__device__ __forceinline__ bf16 from_f<bf16>(float x) { return __float2bfloat16(x); }

// number of checkpoints (one per started chunk of MMRWKV_CHUNK steps)
__host__ __device__ __forceinline__ int mmrwkv_chunks(int T) { return (T + MMRWKV_CHUNK - 1) / MMRWKV_CHUNK; }
