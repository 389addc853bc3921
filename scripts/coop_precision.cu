// What an NVIDIA GPU's tensor cores give for gemm_coop.wgsl's arithmetic: a
// 16 x 16 block of dot products of K = 4096 terms, inputs scaled to
// [-2^14, 2^14] and weights trit * scale * 2^13, each split into f16 halves
// hi + lo (lo = the rest, rounded to f16), multiplied by WMMA 16x16x16 tiles
// with f32 accumulation: hi * hi alone, and hi * hi + lo * hi + hi * lo.
// Prints the largest error against a double-precision sum, relative to the
// sum of |products| (f32's unit roundoff is 5.96e-8). BENCHMARKS.md, round 7.
// Needs an NVIDIA GPU and the CUDA toolkit:
//
//     nvcc -O2 -arch=sm_90 scripts/coop_precision.cu -o /tmp/coop_precision && /tmp/coop_precision
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cuda_fp16.h>
#include <mma.h>
using namespace nvcuda;

const int K = 4096;

// c = sum over k of a[i, k] * b[k, j] (a row-major, b column-major, both [16, K]).
__global__ void block_product(const half* a_hi, const half* a_lo, const half* b_hi, const half* b_lo, float* c,
                              int terms) {
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    wmma::fill_fragment(acc, 0.0f);
    for (int k = 0; k < K; k += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, half, wmma::row_major> ah, al;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, half, wmma::col_major> bh, bl;
        wmma::load_matrix_sync(ah, a_hi + k, K);
        wmma::load_matrix_sync(al, a_lo + k, K);
        wmma::load_matrix_sync(bh, b_hi + k, K);
        wmma::load_matrix_sync(bl, b_lo + k, K);
        wmma::mma_sync(acc, ah, bh, acc);
        if (terms == 3) {
            wmma::mma_sync(acc, al, bh, acc);
            wmma::mma_sync(acc, ah, bl, acc);
        }
    }
    wmma::store_matrix_sync(c, acc, 16, wmma::mem_row_major);
}

int main() {
    srand(1);
    const int n = 16 * K;
    float *a = new float[n], *b = new float[n];
    half *a_hi = new half[n], *a_lo = new half[n], *b_hi = new half[n], *b_lo = new half[n];
    for (int i = 0; i < n; i++) {
        a[i] = ldexpf(rand() / (float)RAND_MAX * 2 - 1, 14);
        b[i] = (rand() % 3 - 1) * ldexpf(0.01f + rand() / (float)RAND_MAX, 13);
        a_hi[i] = __float2half(a[i]);
        a_lo[i] = __float2half(a[i] - __half2float(a_hi[i]));
        b_hi[i] = __float2half(b[i]);
        b_lo[i] = __float2half(b[i] - __half2float(b_hi[i]));
    }
    half *d[4];
    const half* host[4] = {a_hi, a_lo, b_hi, b_lo};
    for (int i = 0; i < 4; i++) {
        cudaMalloc(&d[i], n * sizeof(half));
        cudaMemcpy(d[i], host[i], n * sizeof(half), cudaMemcpyHostToDevice);
    }
    float* dc;
    cudaMalloc(&dc, 256 * sizeof(float));
    for (int terms = 1; terms <= 3; terms += 2) {
        block_product<<<1, 32>>>(d[0], d[1], d[2], d[3], dc, terms);
        float c[256];
        cudaMemcpy(c, dc, sizeof c, cudaMemcpyDeviceToHost);
        double worst = 0;
        for (int i = 0; i < 16; i++) {
            for (int j = 0; j < 16; j++) {
                double sum = 0, magnitude = 0;
                for (int k = 0; k < K; k++) {
                    sum += (double)a[i * K + k] * b[j * K + k];
                    magnitude += fabs((double)a[i * K + k] * b[j * K + k]);
                }
                worst = fmax(worst, fabs(c[i * 16 + j] - sum) / magnitude);
            }
        }
        printf("%s: largest error %.3e of the sum of |products|\n", terms == 1 ? "hi * hi" : "three products", worst);
    }
    return 0;
}
