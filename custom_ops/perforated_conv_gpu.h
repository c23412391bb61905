// Launcher of the CUDA perforated convolution (perforated_conv_gpu.cu.cc).
#ifndef TFPRIORS_PERFORATED_CONV_GPU_H_
#define TFPRIORS_PERFORATED_CONV_GPU_H_

#include <cstdint>

#include <cuda_runtime.h>

namespace tfpriors {

// Launch limits: the receptive field (kh * kw * in_channels floats) lives in shared
// memory, and pass 1 runs one block per (image, kept position) in a 1-D grid.
constexpr int64_t kMaxSharedBytes = 48 * 1024;
constexpr int64_t kMaxBlocks = 2147483647;

// Runs on `stream`. `kept_host` / `fill_host` are validated host copies of the index
// tables; they are uploaded into `tables_device` (kept followed by fill_index).
// Returns false when a CUDA call fails.
bool LaunchPerforatedConv2D(cudaStream_t stream, const float* input, const float* filter,
                            const int32_t* kept_host, const int32_t* fill_host,
                            int32_t* tables_device, float* output, int64_t batch,
                            int64_t height, int64_t width, int64_t channels, int64_t kh,
                            int64_t kw, int64_t filters, int64_t stride_h, int64_t stride_w,
                            int64_t pad_top, int64_t pad_left, int64_t out_h, int64_t out_w,
                            int64_t kept);

}  // namespace tfpriors

#endif  // TFPRIORS_PERFORATED_CONV_GPU_H_
