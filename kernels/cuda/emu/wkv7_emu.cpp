// The CPU emulator build compiles the very same kernel source as C++ (see cuda_emu.h).
#include "../wkv7.cu"
