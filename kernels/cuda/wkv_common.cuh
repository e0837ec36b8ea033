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

// Time steps whose inputs a block loads into shared memory at once (all loads of a stage are in flight together,
// instead of one global load latency per step). Divides MMRWKV_CHUNK so stages never straddle a checkpoint.
#ifndef MMRWKV_STAGE
#define MMRWKV_STAGE 8
#endif
static_assert(MMRWKV_CHUNK % MMRWKV_STAGE == 0, "MMRWKV_STAGE must divide MMRWKV_CHUNK");

// An [n, n] fp32 matrix in shared memory, rows padded by one word: thread i writing row i and thread i reading
// column i both hit 32 different banks per warp.
template <int n>
using mmrwkv_tile = float[n][n + 1];

// Coalesced store of an [n, n] matrix of which thread i holds row i in `row`: through the tile, so that each
// warp store writes consecutive addresses. Every thread of the block must call it (it has barriers).
template <int n>
__device__ __forceinline__ void mmrwkv_store_rows(float* __restrict__ dst, const float (&row)[n], mmrwkv_tile<n>& tile) {
    const int i = threadIdx.x;
    __syncthreads();  // earlier readers of the tile are done
#pragma unroll
    for (int j = 0; j < n; j++) tile[i][j] = row[j];
    __syncthreads();
    for (int j = 0; j < n; j++) dst[j * n + i] = tile[j][i];
}

// Coalesced load of row i of an [n, n] matrix into `row` (thread i), through the tile; barriers as above.
template <int n>
__device__ __forceinline__ void mmrwkv_load_rows(const float* __restrict__ src, float (&row)[n], mmrwkv_tile<n>& tile) {
    const int i = threadIdx.x;
    __syncthreads();
    for (int j = 0; j < n; j++) tile[j][i] = src[j * n + i];
    __syncthreads();
#pragma unroll
    for (int j = 0; j < n; j++) row[j] = tile[i][j];
}
