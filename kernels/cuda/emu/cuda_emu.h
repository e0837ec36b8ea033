// CPU emulation of the small CUDA subset the WKV kernels use, so that the very same .cu sources compile
// with g++ (-x c++ -std=c++20 -DMMRWKV_EMU) and run in the normal CPU test suite.
//
// Model: a launch runs its blocks one after another; a block's threads are real std::threads; __syncthreads()
// and __syncthreads_or() are one barrier (a thread that returns early drops out of it, as exited threads do
// on the GPU);
// __shared__ becomes a function-local static, which is per block because blocks never overlap; launches are
// serialised by a mutex for the same reason. threadIdx/blockIdx/blockDim/gridDim are thread-locals.
// Not modelled: warps (shuffles, votes), tensor cores, atomics, streams, asynchronous errors.
#pragma once

#include <condition_variable>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <math.h>
#include <mutex>
#include <thread>
#include <vector>

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __restrict__ __restrict

inline thread_local dim3 threadIdx;
inline thread_local dim3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

namespace mmrwkv_emu {

// A reusable barrier for the threads of one block that also ORs a predicate across them.
class BlockBarrier {
public:
    explicit BlockBarrier(unsigned threads) : expected_(threads) {}

    int arrive_and_wait(int predicate) {
        std::unique_lock<std::mutex> lock(mutex_);
        const unsigned long generation = generation_;
        any_ |= predicate != 0;
        if (++arrived_ == expected_) {
            release();
            return result_;
        }
        // the next generation cannot complete (and overwrite result_) before this thread arrives again
        released_.wait(lock, [&] { return generation_ != generation; });
        return result_;
    }

    void drop() {
        std::lock_guard<std::mutex> lock(mutex_);
        --expected_;
        if (arrived_ > 0 && arrived_ == expected_) release();
    }

private:
    void release() {
        result_ = any_;
        any_ = 0;
        arrived_ = 0;
        ++generation_;
        released_.notify_all();
    }

    std::mutex mutex_;
    std::condition_variable released_;
    unsigned expected_, arrived_ = 0;
    unsigned long generation_ = 0;
    int any_ = 0, result_ = 0;
};

inline thread_local BlockBarrier* block_barrier = nullptr;

inline std::mutex& launch_mutex() {
    static std::mutex m;
    return m;
}

// Runs body() once per thread of every block of the grid, blocks in sequence.
template <class Body>
void launch(dim3 grid, dim3 block, Body body) {
    std::lock_guard<std::mutex> lock(launch_mutex());
    const unsigned nthreads = block.x * block.y * block.z;
    for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx) {
                BlockBarrier bar(nthreads);
                std::vector<std::thread> threads;
                threads.reserve(nthreads);
                for (unsigned tid = 0; tid < nthreads; ++tid) {
                    threads.emplace_back([&, tid] {
                        threadIdx = dim3(tid % block.x, (tid / block.x) % block.y, tid / (block.x * block.y));
                        blockIdx = dim3(bx, by, bz);
                        blockDim = block;
                        gridDim = grid;
                        block_barrier = &bar;
                        body();
                        // an exited thread no longer holds back the others' barriers
                        bar.drop();
                        block_barrier = nullptr;
                    });
                }
                for (auto& t : threads) t.join();
            }
}

}  // namespace mmrwkv_emu

inline void __syncthreads() { mmrwkv_emu::block_barrier->arrive_and_wait(0); }
inline int __syncthreads_or(int predicate) { return mmrwkv_emu::block_barrier->arrive_and_wait(predicate); }

// bfloat16: the upper 16 bits of an IEEE float, rounded to nearest even (as __float2bfloat16 does)
struct __nv_bfloat16 {
    uint16_t bits;
};

inline float __bfloat162float(__nv_bfloat16 h) {
    const uint32_t u = static_cast<uint32_t>(h.bits) << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

inline __nv_bfloat16 __float2bfloat16(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    if (std::isnan(f)) return __nv_bfloat16{static_cast<uint16_t>((u >> 16) | 0x40)};
    u += 0x7fffu + ((u >> 16) & 1u);
    return __nv_bfloat16{static_cast<uint16_t>(u >> 16)};
}

inline float __expf(float x) { return std::exp(x); }
inline float __fdividef(float a, float b) { return a / b; }

using cudaStream_t = void*;
