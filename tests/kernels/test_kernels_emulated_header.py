"""The CPU emulation header (kernels/cuda/emu/cuda_emu.h) models what the WKV kernels rely on.

A small kernel program is compiled with g++ against the header: block-shared memory, __syncthreads(),
__syncthreads_or(), threads that return early, thread/block indices, and bf16 round-to-nearest-even.
"""

import shutil
import subprocess

import pytest
import torch

from mmrwkv.kernels import cuda

PROGRAM = r"""
#include <cstdio>
#include "wkv_common.cuh"

// each thread reads its right neighbour's value after a barrier: needs shared memory per block + a barrier
__global__ void rotate(const float* in, float* out) {
    __shared__ float buf[64];
    const int i = threadIdx.x, base = blockIdx.x * blockDim.x;
    buf[i] = in[base + i];
    __syncthreads();
    out[base + i] = buf[(i + 1) % blockDim.x];
}

// thread 0 exits before the barriers; the others must still get through them (as on the GPU)
__global__ void early_exit(int* out) {
    __shared__ int seen[64];
    const int i = threadIdx.x;
    if (i == 0) return;
    seen[i] = i;
    __syncthreads();
    __syncthreads();
    out[blockIdx.y * 64 + i] = seen[blockDim.x - i] + 1000 * blockIdx.y + 100000 * gridDim.y;
}

// a block-wide OR of the predicates of the threads still running; thread 0 exits first, so its vote is lost
__global__ void vote(const int* predicates, int* out) {
    const int i = threadIdx.x, at = blockIdx.x * blockDim.x + i;
    if (i == 0) return;
    const int first = __syncthreads_or(predicates[at]);
    const int second = __syncthreads_or(0);
    out[at] = 10 * first + second;
}

int main() {
    float in[12], out[12];
    for (int i = 0; i < 12; i++) in[i] = float(i);
    MMRWKV_LAUNCH(rotate, dim3(3), dim3(4), nullptr, in, out);
    for (int i = 0; i < 12; i++) std::printf("%g ", out[i]);
    std::printf("\n");
    int got[128] = {0};
    MMRWKV_LAUNCH(early_exit, dim3(1, 2), dim3(8), nullptr, got);
    for (int b = 0; b < 2; b++)
        for (int i = 1; i < 8; i++) std::printf("%d ", got[b * 64 + i]);
    std::printf("\n");
    int predicates[16] = {1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0}, votes[16] = {0};
    MMRWKV_LAUNCH(vote, dim3(2), dim3(8), nullptr, predicates, votes);
    for (int i = 0; i < 16; i++) std::printf("%d ", votes[i]);
    std::printf("\n");
    float x;
    while (std::scanf("%f", &x) == 1) {
        const bf16 h = from_f<bf16>(x);
        std::printf("%u %a\n", unsigned(h.bits), to_f(h));
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def emulated_program(tmp_path_factory):
    if shutil.which("g++") is None:
        pytest.fail("g++ is required to build the CUDA emulator")
    src = tmp_path_factory.mktemp("emu") / "program.cpp"
    src.write_text(PROGRAM)
    exe = src.with_suffix("")
    cmd = ["g++", "-std=c++20", "-O1", "-pthread", "-DMMRWKV_EMU", f"-I{cuda.SOURCE_DIR}", str(src), "-o", str(exe)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)
    return exe


def run(exe, stdin: str = "") -> list[str]:
    return subprocess.run([str(exe)], input=stdin, check=True, capture_output=True, text=True, timeout=60).stdout.split(
        "\n"
    )


def test_shared_memory_is_per_block_and_syncthreads_is_a_barrier(emulated_program):
    rotated = [float(x) for x in run(emulated_program)[0].split()]
    assert rotated == [1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8]


def test_threads_that_return_early_do_not_block_the_barrier(emulated_program):
    got = [int(x) for x in run(emulated_program)[1].split()]
    # block y reads seen[8 - i] (thread 8 - i wrote it) plus the block index and grid size markers
    want = [(8 - i) + 1000 * b + 200000 for b in range(2) for i in range(1, 8)]
    assert got == want


def test_syncthreads_or_votes_across_the_threads_still_running(emulated_program):
    votes = [int(x) for x in run(emulated_program)[2].split()]
    # block 0: only the exited thread 0 voted 1; block 1: thread 5 votes 1; the second vote is all 0
    assert votes == [0] * 8 + [0] + [10] * 7


def test_bf16_conversion_rounds_to_nearest_even_like_torch(emulated_program):
    one = 1.0
    # exact ties between two bf16 neighbours go to the even one; just above a tie goes up
    values = [one + 2**-8, one + 3 * 2**-8, one + 2**-8 + 2**-20, -2.5, 3.0e38, 1e-40, -0.0, 65504.0, 1 / 3]
    values += torch.randn(200, generator=torch.Generator().manual_seed(1)).mul(100).tolist()
    lines = run(emulated_program, " ".join(f"{v:.9g}" for v in values))[3:-1]
    got_bits = [int(line.split()[0]) for line in lines]
    want = torch.tensor(values, dtype=torch.float32).to(torch.bfloat16).view(torch.int16).to(torch.int64) & 0xFFFF
    assert got_bits == want.tolist()
    back = [float.fromhex(line.split()[1]) for line in lines]
    assert back == torch.tensor(values).to(torch.bfloat16).float().tolist()
