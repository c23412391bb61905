// CUDA perforated convolution: one pass computes the kept positions, one fills the rest.
//
// Pass 1 (one thread block per (image, kept position), threads over filters): the
// block stages the kept position's receptive field (kh * kw * C floats) in shared
// memory once, then every thread forms one filter's dot product with it.
// Pass 2 copies, for every output position, the row of its nearest kept position.
// The index tables were validated on the host by the op before this launch.

#include <cstdint>

#include <cuda_runtime.h>

#include "perforated_conv_gpu.h"

namespace tfpriors {
namespace {

__global__ void KeptPositionsKernel(const float* __restrict__ input,
                                    const float* __restrict__ filter,
                                    const int32_t* __restrict__ kept,
                                    float* __restrict__ kept_out, int64_t height,
                                    int64_t width, int64_t channels, int64_t kh, int64_t kw,
                                    int64_t filters, int64_t stride_h, int64_t stride_w,
                                    int64_t pad_top, int64_t pad_left, int64_t out_w,
                                    int64_t num_kept) {
  extern __shared__ float patch[];
  const int64_t row = blockIdx.x;  // image * num_kept + kept index
  const int64_t n = row / num_kept;
  const int64_t pos = kept[row % num_kept];
  const int64_t top = (pos / out_w) * stride_h - pad_top;
  const int64_t left = (pos % out_w) * stride_w - pad_left;
  const int64_t depth = kh * kw * channels;
  for (int64_t d = threadIdx.x; d < depth; d += blockDim.x) {
    const int64_t c = d % channels;
    const int64_t j = (d / channels) % kw;
    const int64_t i = d / (channels * kw);
    const int64_t y = top + i;
    const int64_t x = left + j;
    patch[d] = (y >= 0 && y < height && x >= 0 && x < width)
                   ? input[((n * height + y) * width + x) * channels + c]
                   : 0.0f;
  }
  __syncthreads();
  for (int64_t o = threadIdx.x; o < filters; o += blockDim.x) {
    float sum = 0.0f;
    for (int64_t d = 0; d < depth; ++d) sum += patch[d] * filter[d * filters + o];
    kept_out[row * filters + o] = sum;
  }
}

__global__ void FillKernel(const float* __restrict__ kept_out,
                           const int32_t* __restrict__ fill, float* __restrict__ output,
                           int64_t positions, int64_t filters, int64_t num_kept,
                           int64_t total) {
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
       index < total; index += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t o = index % filters;
    const int64_t p = (index / filters) % positions;
    const int64_t n = index / (filters * positions);
    output[index] = kept_out[(n * num_kept + fill[p]) * filters + o];
  }
}

}  // namespace

bool LaunchPerforatedConv2D(cudaStream_t stream, const float* input, const float* filter,
                            const int32_t* kept_host, const int32_t* fill_host,
                            int32_t* tables_device, float* output, int64_t batch,
                            int64_t height, int64_t width, int64_t channels, int64_t kh,
                            int64_t kw, int64_t filters, int64_t stride_h, int64_t stride_w,
                            int64_t pad_top, int64_t pad_left, int64_t out_h, int64_t out_w,
                            int64_t kept) {
  const int64_t positions = out_h * out_w;
  const int64_t depth = kh * kw * channels;
  if (cudaMemcpyAsync(tables_device, kept_host, kept * sizeof(int32_t),
                      cudaMemcpyHostToDevice, stream) != cudaSuccess ||
      cudaMemcpyAsync(tables_device + kept, fill_host, positions * sizeof(int32_t),
                      cudaMemcpyHostToDevice, stream) != cudaSuccess) {
    return false;
  }
  const size_t shared = depth * sizeof(float);
  // The receptive field is staged in shared memory: 48 KiB without opting in to more.
  // Checked before the allocation below, which an early return would leak. (The op
  // refuses such shapes with InvalidArgument before launching; this is the last guard.)
  if (shared > kMaxSharedBytes || batch * kept > kMaxBlocks) return false;
  float* kept_out = nullptr;
  if (cudaMallocAsync(reinterpret_cast<void**>(&kept_out),
                      batch * kept * filters * sizeof(float), stream) != cudaSuccess) {
    return false;
  }
  const int threads = filters >= 256 ? 256 : (filters >= 64 ? 128 : 64);
  KeptPositionsKernel<<<batch * kept, threads, shared, stream>>>(
      input, filter, tables_device, kept_out, height, width, channels, kh, kw, filters,
      stride_h, stride_w, pad_top, pad_left, out_w, kept);
  const int64_t total = batch * positions * filters;
  const int64_t blocks = (total + 255) / 256 < 65535 ? (total + 255) / 256 : 65535;
  FillKernel<<<blocks, 256, 0, stream>>>(kept_out, tables_device + kept, output, positions,
                                         filters, kept, total);
  const bool launched = cudaGetLastError() == cudaSuccess;
  return cudaFreeAsync(kept_out, stream) == cudaSuccess && launched;
}

}  // namespace tfpriors
