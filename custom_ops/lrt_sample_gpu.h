// Launcher of the CUDA kernels of LrtSample and LrtSampleVarianceGrad (lrt_sample_gpu.cu.cc).
#ifndef TFPRIORS_LRT_SAMPLE_GPU_H_
#define TFPRIORS_LRT_SAMPLE_GPU_H_

#include <cstdint>

#include <cuda_runtime.h>

namespace tfpriors {

// Runs on `stream`: out[i] = a[i] + sqrt(variance[i] + floor) * eps[offset + i] (or, with
// `gradient`, a[i] * eps[offset + i] / (2 sqrt(variance[i] + floor))), i < n, where eps
// is the Philox stream of (key[0], counter[0..1]) in device memory. Inputs were validated
// by the op. Returns false when the launch fails.
bool LaunchLrt(cudaStream_t stream, bool gradient, const float* a, const float* variance,
               const uint64_t* key, const uint64_t* counter, int64_t offset, int64_t n,
               float floor, float* out);

}  // namespace tfpriors

#endif  // TFPRIORS_LRT_SAMPLE_GPU_H_
