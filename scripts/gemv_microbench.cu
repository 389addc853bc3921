// Timing-only CUDA microbenchmark of ternary GEMV designs on the 32B shape's
// gate and up projection (55,296 rows of 5,120 columns, f32 scales per 64),
// used to choose gemv_fixed.wgsl's design (BENCHMARKS.md, round 6).
// Weights are random bytes, inputs constant: the results are not checked, only
// timed. Needs an NVIDIA GPU and the CUDA toolkit:
//
//     nvcc -O3 -arch=sm_90 scripts/gemv_microbench.cu -o /tmp/gemv_microbench && /tmp/gemv_microbench
//
// Three layouts, each as a pure read of its weights and with the arithmetic:
// - team: gemv_fixed.wgsl's layout. 64 threads share a row, each reading one
//   4-byte word (16 weights) per step, for 4 rows; 256-thread blocks.
// - per-row: one thread per row, 16 bytes (64 weights) a step; the 8 warps of
//   a block split the row. A warp's 32 loads hit 32 rows.
// - interleaved: as per-row, but 32 rows stored interleaved 16 bytes at a
//   time, so that a warp reads 512 contiguous bytes a step.
// Decoding: "table" turns a base-3 byte into 4 trits with a lookup in shared
// memory (32 copies, one per lane); "2-bit" takes digit j of 4 bytes with a
// shift and mask. Inputs are three planes of signed-byte digits (24-bit fixed
// point) and a scale per word; products by __dp4a.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>

constexpr int ROWS = 55296, COLS = 5120, WORDS = COLS / 16, UNITS = COLS / 64;

enum Decode { LOAD_ONLY, TABLE, TWO_BIT, TWO_BIT_TWO_PLANES };

__device__ uint32_t trits_of(int b) {  // base-3 byte -> 4 signed-byte trits
  return (uint32_t)((b % 3 - 1) & 0xff) | (uint32_t)(((b / 3) % 3 - 1) & 0xff) << 8 |
         (uint32_t)(((b / 9) % 3 - 1) & 0xff) << 16 | (uint32_t)((b / 27 - 1) & 0xff) << 24;
}

__device__ void fill_table(uint32_t* table) {
  for (int e = threadIdx.x; e < 81 * 32; e += blockDim.x) table[e] = trits_of(e / 32);
  __syncthreads();
}

// Digits (or trits) j of the word's 4 bytes.
template <Decode D>
__device__ uint32_t digits(uint32_t word, int j, const uint32_t* table, int lane) {
  if (D == TABLE) return table[((word >> (8 * j)) & 0xff) * 32 + lane];
  return (word >> (2 * j)) & 0x03030303u;
}

// sum over a word's 16 weights of digit * input, inputs as three digit planes.
template <Decode D>
__device__ int word_dot(uint32_t word, uint4 a0, uint4 a1, uint4 a2, const uint32_t* table, int lane) {
  uint32_t t0 = digits<D>(word, 0, table, lane), t1 = digits<D>(word, 1, table, lane);
  uint32_t t2 = digits<D>(word, 2, table, lane), t3 = digits<D>(word, 3, table, lane);
  int d0 = __dp4a((int)t3, (int)a0.w, __dp4a((int)t2, (int)a0.z, __dp4a((int)t1, (int)a0.y, __dp4a((int)t0, (int)a0.x, 0))));
  int d1 = __dp4a((int)t3, (int)a1.w, __dp4a((int)t2, (int)a1.z, __dp4a((int)t1, (int)a1.y, __dp4a((int)t0, (int)a1.x, 0))));
  int d2 = 0;
  if (D != TWO_BIT_TWO_PLANES)
    d2 = __dp4a((int)t3, (int)a2.w, __dp4a((int)t2, (int)a2.z, __dp4a((int)t1, (int)a2.y, __dp4a((int)t0, (int)a2.x, 0))));
  return (d2 * 256 + d1) * 256 + d0;
}

template <Decode D>
__global__ void team(const uint32_t* __restrict__ w, const float* __restrict__ scales, const uint4* __restrict__ planes,
                     const float* __restrict__ in_scales, float* y) {
  __shared__ uint32_t table[D == TABLE ? 81 * 32 : 1];
  __shared__ float partial[16 * 65];
  if (D == TABLE) fill_table(table);
  int lane = threadIdx.x % 64, t = threadIdx.x / 64, first = blockIdx.x * 16 + t * 4;
  float acc[4] = {0, 0, 0, 0};
  for (int wd = lane; wd < WORDS; wd += 64) {
    uint32_t words[4];
    float s[4];
    for (int r = 0; r < 4; r++) {
      words[r] = w[(size_t)(first + r) * WORDS + wd];
      s[r] = scales[(size_t)(first + r) * UNITS + wd / 4];
    }
    if (D == LOAD_ONLY) {
      for (int r = 0; r < 4; r++) acc[r] += __uint_as_float(words[r] & 0x3fffffff) * s[r];
      continue;
    }
    uint4 a0 = planes[wd], a1 = planes[WORDS + wd], a2 = planes[2 * WORDS + wd];
    for (int r = 0; r < 4; r++) acc[r] += (float)word_dot<D>(words[r], a0, a1, a2, table, threadIdx.x % 32) * s[r] * in_scales[wd];
  }
  for (int r = 0; r < 4; r++) partial[(t * 4 + r) * 65 + lane] = acc[r];
  __syncthreads();
  if (threadIdx.x < 16) {
    float sum = 0;
    for (int i = 0; i < 64; i++) sum += partial[threadIdx.x * 65 + i];
    y[blockIdx.x * 16 + threadIdx.x] = sum;
  }
}

// One thread per row of a 32-row block, the 8 warps splitting the row;
// INTERLEAVED: the block's rows stored [unit][row] 16 bytes at a time.
template <Decode D, bool INTERLEAVED>
__global__ void per_row(const uint4* __restrict__ w, const float* __restrict__ scales, const uint4* __restrict__ planes,
                        const float* __restrict__ in_scales, float* y) {
  __shared__ uint32_t table[D == TABLE ? 81 * 32 : 1];
  __shared__ float partial[8][33];
  if (D == TABLE) fill_table(table);
  int lane = threadIdx.x % 32, warp = threadIdx.x / 32, row = blockIdx.x * 32 + lane;
  constexpr int PER_WARP = UNITS / 8;
  float acc = 0;
#pragma unroll 4
  for (int g = warp * PER_WARP; g < (warp + 1) * PER_WARP; g++) {
    size_t at = INTERLEAVED ? ((size_t)blockIdx.x * UNITS + g) * 32 + lane : (size_t)row * UNITS + g;
    uint4 q = w[at];
    float s = scales[at];
    if (D == LOAD_ONLY) {
      acc += __uint_as_float((q.x ^ q.y ^ q.z ^ q.w) & 0x3fffffff) * s;
      continue;
    }
    uint32_t words[4] = {q.x, q.y, q.z, q.w};
    int sum = 0;
#pragma unroll
    for (int j = 0; j < 4; j++) {
      int wd = 4 * g + j;
      sum += word_dot<D>(words[j], planes[wd], planes[WORDS + wd], planes[2 * WORDS + wd], table, lane);
    }
    acc += (float)sum * s * in_scales[4 * g];
  }
  partial[warp][lane] = acc;
  __syncthreads();
  if (threadIdx.x < 32) {
    float sum = 0;
    for (int i = 0; i < 8; i++) sum += partial[i][threadIdx.x];
    y[blockIdx.x * 32 + threadIdx.x] = sum;
  }
}

int main() {
  size_t weight_bytes = (size_t)ROWS * COLS / 4, scale_bytes = (size_t)ROWS * UNITS * 4;
  uint8_t* host = (uint8_t*)malloc(weight_bytes);
  for (size_t i = 0; i < weight_bytes; i++) host[i] = rand() % 81;
  void *w, *scales, *planes, *in_scales, *y;
  cudaMalloc(&w, weight_bytes);
  cudaMalloc(&scales, scale_bytes);
  cudaMalloc(&planes, 3 * COLS);
  cudaMalloc(&in_scales, WORDS * 4);
  cudaMalloc(&y, ROWS * 4);
  cudaMemcpy(w, host, weight_bytes, cudaMemcpyHostToDevice);
  cudaMemset(scales, 0x3c, scale_bytes);
  cudaMemset(planes, 1, 3 * COLS);
  cudaMemset(in_scales, 0x3c, WORDS * 4);
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  auto time = [&](const char* name, auto launch) {
    for (int i = 0; i < 3; i++) launch();
    cudaEventRecord(start);
    for (int i = 0; i < 50; i++) launch();
    cudaEventRecord(stop);
    cudaEventSynchronize(stop);
    float ms;
    cudaEventElapsedTime(&ms, start, stop);
    double us = ms * 1000 / 50;
    printf("%-32s %7.1f us  %5.0f GB/s  %s\n", name, us, (weight_bytes + scale_bytes) / us / 1e3,
           cudaGetErrorString(cudaGetLastError()));
  };
  auto W32 = (const uint32_t*)w;
  auto W128 = (const uint4*)w;
  auto S = (const float*)scales;
  auto P = (const uint4*)planes;
  auto I = (const float*)in_scales;
  auto Y = (float*)y;
  time("team, load only", [&] { team<LOAD_ONLY><<<ROWS / 16, 256>>>(W32, S, P, I, Y); });
  time("team, table", [&] { team<TABLE><<<ROWS / 16, 256>>>(W32, S, P, I, Y); });
  time("team, 2-bit", [&] { team<TWO_BIT><<<ROWS / 16, 256>>>(W32, S, P, I, Y); });
  time("per-row, load only", [&] { per_row<LOAD_ONLY, false><<<ROWS / 32, 256>>>(W128, S, P, I, Y); });
  time("per-row, 2-bit", [&] { per_row<TWO_BIT, false><<<ROWS / 32, 256>>>(W128, S, P, I, Y); });
  time("interleaved, load only", [&] { per_row<LOAD_ONLY, true><<<ROWS / 32, 256>>>(W128, S, P, I, Y); });
  time("interleaved, table", [&] { per_row<TABLE, true><<<ROWS / 32, 256>>>(W128, S, P, I, Y); });
  time("interleaved, 2-bit", [&] { per_row<TWO_BIT, true><<<ROWS / 32, 256>>>(W128, S, P, I, Y); });
  time("interleaved, 2-bit, two planes", [&] { per_row<TWO_BIT_TWO_PLANES, true><<<ROWS / 32, 256>>>(W128, S, P, I, Y); });
  return 0;
}
