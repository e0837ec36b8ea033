// The launch wrappers the torch binding (wkv_ops.cpp) calls; defined in wkv4.cu, wkv6.cu, wkv7.cu.
// All buffers are contiguous. Inputs [B, T, H, N] (v4: [B, T, C]) are fp32 or bf16 (`is_bf16` true) and share
// one dtype; states, checkpoints, `sa` and the partial sums of shared-parameter gradients are fp32.
// Checkpoints hold the state before steps 0, K, 2K, ... (K = MMRWKV_CHUNK); forward skips saving when the
// pointer is null. Each wrapper returns nullptr on success or a launch error message.
#pragma once

// Build parameters: head size and the number of steps between the checkpoints backward restarts from.
#ifndef MMRWKV_N
#define MMRWKV_N 64
#endif
#ifndef MMRWKV_CHUNK
#define MMRWKV_CHUNK 16
#endif
// Backward steps the state back (dividing by the decay) through chunks whose log decays are all >= this:
// the error grows by 1 / decay per step, so stronger decays recompute the chunk instead.
#ifndef MMRWKV_BACKSTEP_MIN_W
#define MMRWKV_BACKSTEP_MIN_W -0.61f
#endif

struct Wkv7Fwd {
    int B, T, H;
    bool is_bf16;
    const void *r, *w, *k, *v, *a, *b;
    const float* s0;  // [B, H, N, N] indexed [value, key]
    void* y;
    float* sT;
    float* sa;    // [B, T, H, N] S @ a per step, or null
    float* ckpt;  // [B, H, chunks + 1, N, N] (the last one: the final state), or null
    void* stream;
};

struct Wkv7Bwd {
    int B, T, H;
    bool is_bf16;
    const void *r, *w, *k, *v, *a, *b, *dy;
    const float *sa, *ckpt, *dsT;
    void *dr, *dw, *dk, *dv, *da, *db;
    float* ds0;
    float* scratch;  // [B, H, K, N, N]: the states of one chunk, recomputed from its checkpoint
    void* stream;
};

struct Wkv6Fwd {
    int B, T, H;
    bool is_bf16;
    const void *r, *w, *k, *v;
    const float* u;   // [H, N]
    const float* s0;  // [B, H, N, N] indexed [key, value]
    void* y;
    float* sT;
    float* ckpt;  // [B, H, chunks + 1, N, N] (the last one: the final state), or null
    void* stream;
};

struct Wkv6Bwd {
    int B, T, H;
    bool is_bf16;
    const void *r, *w, *k, *v, *dy;
    const float *u, *ckpt, *dsT;
    void *dr, *dw, *dk, *dv;
    float* du;  // [B, H, N]: per-batch partial sums
    float* ds0;
    float* scratch;
    void* stream;
};

struct Wkv4Fwd {
    int B, T, C;
    bool is_bf16;
    const float *w, *u;  // [C]
    const void *k, *v;
    const float* s0;  // [B, 3, C] = (aa, bb, pp)
    void* y;
    float* sT;
    float* ckpt;  // [B, chunks, 3, C], or null
    void* stream;
};

struct Wkv4Bwd {
    int B, T, C;
    bool is_bf16;
    const float *w, *u;
    const void *k, *v, *dy;
    const float *ckpt, *dsT;
    float *dw, *du;  // [B, C]: per-batch partial sums
    void *dk, *dv;
    float* ds0;
    void* stream;
};

const char* mmrwkv_wkv7_forward(const Wkv7Fwd& p);
const char* mmrwkv_wkv7_backward(const Wkv7Bwd& p);
const char* mmrwkv_wkv6_forward(const Wkv6Fwd& p);
const char* mmrwkv_wkv6_backward(const Wkv6Bwd& p);
const char* mmrwkv_wkv4_forward(const Wkv4Fwd& p);
const char* mmrwkv_wkv4_backward(const Wkv4Bwd& p);
