// C entry point to the CUDA perforated convolution for custom_ops/gpu_check.py, which
// drives it with PyTorch tensors on a GPU machine that has no TensorFlow (device_check.sh).

#include <cstdint>

#include <cuda_runtime.h>

#include "perforated_conv_gpu.h"

extern "C" int tfpriors_gpu_perforated_conv2d(
    void* stream, const float* input, const float* filter, const int32_t* kept_host,
    const int32_t* fill_host, int32_t* tables_device, float* output, int64_t batch,
    int64_t height, int64_t width, int64_t channels, int64_t kh, int64_t kw, int64_t filters,
    int64_t stride_h, int64_t stride_w, int64_t pad_top, int64_t pad_left, int64_t out_h,
    int64_t out_w, int64_t kept) {
  return tfpriors::LaunchPerforatedConv2D(
             static_cast<cudaStream_t>(stream), input, filter, kept_host, fill_host,
             tables_device, output, batch, height, width, channels, kh, kw, filters, stride_h,
             stride_w, pad_top, pad_left, out_h, out_w, kept)
             ? 0
             : 1;
}

#include "lrt_sample_gpu.h"

// The fused local-reparameterization noise (LrtSample / LrtSampleVarianceGrad).
extern "C" int tfpriors_gpu_lrt(void* stream, int gradient, const float* a,
                                const float* variance, const uint64_t* key_device,
                                const uint64_t* counter_device, int64_t offset, int64_t n,
                                float floor, float* out) {
  return tfpriors::LaunchLrt(static_cast<cudaStream_t>(stream), gradient != 0, a, variance,
                             key_device, counter_device, offset, n, floor, out)
             ? 0
             : 1;
}
