// CUDA kernel of the fused local-reparameterization sampling (lrt_sample.cc).
//
// One thread per Philox block: it runs the block's ten rounds (philox_normal.h, the same
// code as the CPU's scalar path), turns the 4 words into 4 normals and combines the ones
// that fall in [offset, offset + n) with their elements. Consecutive threads touch
// consecutive 16-byte runs, so the loads and stores coalesce.

#include <cstdint>

#include <cuda_runtime.h>

#include "lrt_sample_gpu.h"
#include "philox_normal.h"

namespace tfpriors {
namespace {

__global__ void LrtKernel(bool gradient, const float* __restrict__ a,
                          const float* __restrict__ variance, const uint64_t* __restrict__ key,
                          const uint64_t* __restrict__ counter, int64_t offset, int64_t n,
                          float floor, float* __restrict__ out) {
  const philox::Stream s = philox::MakeStream(key[0], counter[0], counter[1]);
  const int64_t first_block = offset / 4;
  const int64_t blocks = (offset + n + 3) / 4 - first_block;
  for (int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; b < blocks;
       b += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    float eps[4];
    philox::Block(s, static_cast<uint64_t>(first_block + b), eps);
    for (int lane = 0; lane < 4; ++lane) {
      const int64_t i = (first_block + b) * 4 + lane - offset;
      if (i < 0 || i >= n) continue;
      const float root = sqrtf(variance[i] + floor);
      out[i] = gradient ? (0.5f * a[i] * eps[lane]) / root : a[i] + root * eps[lane];
    }
  }
}

}  // namespace

bool LaunchLrt(cudaStream_t stream, bool gradient, const float* a, const float* variance,
               const uint64_t* key, const uint64_t* counter, int64_t offset, int64_t n,
               float floor, float* out) {
  const int threads = 256;
  const int64_t blocks = n / 4 + 2;
  const int64_t grid = std::min<int64_t>((blocks + threads - 1) / threads, 65535 * 16);
  LrtKernel<<<static_cast<unsigned>(grid), threads, 0, stream>>>(
      gradient, a, variance, key, counter, offset, n, floor, out);
  return cudaGetLastError() == cudaSuccess;
}

}  // namespace tfpriors
