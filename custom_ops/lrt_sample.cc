// Fused sampling of the local reparameterization trick: LrtSample and its gradient.
//
//   LrtSample(mean, variance, key, counter, offset) = mean + sqrt(variance + floor) * eps
//   LrtSampleVarianceGrad(grad, variance, key, counter, offset)
//       = grad * eps / (2 sqrt(variance + floor))
//
// eps[i] is element offset + i of TensorFlow's StatelessRandomNormalV2(key, counter,
// alg=Philox) stream (philox_normal.h): drawn in registers chunk by chunk, never stored
// as a tensor, and redrawn by the gradient from the same (key, counter, offset). The
// offset lets a replica of a distributed step draw its own rows of the global batch's
// noise. Chunks of kChunk elements run on TensorFlow's intra-op thread pool; each uses
// the AVX-512 or AVX2 code when CPUID says the CPU has it (the library is compiled for
// baseline x86-64). The CUDA kernel (lrt_sample_gpu.cu.cc) draws the same numbers.
#define EIGEN_USE_THREADS

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>

#include "philox_normal.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

#if GOOGLE_CUDA
#define EIGEN_USE_GPU
#include "lrt_sample_gpu.h"
#endif

namespace tfpriors {
namespace {

using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::TensorShapeUtils;
using tensorflow::errors::InvalidArgument;
using tensorflow::shape_inference::DimensionHandle;
using tensorflow::shape_inference::InferenceContext;
using tensorflow::shape_inference::ShapeHandle;

// Shapes: the two value inputs agree; key is [1], counter [2] (Philox's sizes in
// StatelessRandomGetKeyCounter), offset a scalar.
absl::Status LrtShape(InferenceContext* c) {
  ShapeHandle values;
  TF_RETURN_IF_ERROR(c->Merge(c->input(0), c->input(1), &values));
  ShapeHandle key, counter, offset;
  DimensionHandle unused;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 1, &key));
  TF_RETURN_IF_ERROR(c->WithValue(c->Dim(key, 0), 1, &unused));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 1, &counter));
  TF_RETURN_IF_ERROR(c->WithValue(c->Dim(counter, 0), 2, &unused));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(4), 0, &offset));
  c->set_output(0, values);
  return absl::OkStatus();
}

}  // namespace

REGISTER_OP("LrtSample")
    .Input("mean: float")
    .Input("variance: float")
    .Input("key: uint64")
    .Input("counter: uint64")
    .Input("offset: int64")
    .Output("output: float")
    .Attr("variance_floor: float = 0")
    .SetShapeFn(LrtShape);

REGISTER_OP("LrtSampleVarianceGrad")
    .Input("grad: float")
    .Input("variance: float")
    .Input("key: uint64")
    .Input("counter: uint64")
    .Input("offset: int64")
    .Output("variance_grad: float")
    .Attr("variance_floor: float = 0")
    .SetShapeFn(LrtShape);

namespace {

// Test and benchmark hook (tfpriors_select_noise_isa): -1 = the CPU's widest.
std::atomic<int> forced_isa{-1};

philox::Isa ActiveIsa() {
  static const philox::Isa detected = philox::DetectIsa();
  const int forced = forced_isa.load();
  return forced < 0 ? detected : static_cast<philox::Isa>(forced);
}

// OP_REQUIRES for functions that return false when they refuse the call.
#define TFPRIORS_REQUIRE(context, condition, status) \
  do {                                               \
    if (!(condition)) {                              \
      (context)->SetStatus(status);                  \
      return false;                                  \
    }                                                \
  } while (0)

// Checks what the CPU and GPU kernels share; returns false (with the status set) when the
// call is refused. On success `n` is the number of elements and the outputs are valid.
bool ValidateInputs(OpKernelContext* context, int64_t* n) {
  const Tensor& values = context->input(0);
  const Tensor& variance = context->input(1);
  const Tensor& key = context->input(2);
  const Tensor& counter = context->input(3);
  const Tensor& offset = context->input(4);
  TFPRIORS_REQUIRE(context, values.shape() == variance.shape(),
              InvalidArgument("`variance` must have the shape of `",
                              context->op_kernel().type_string() == "LrtSample" ? "mean"
                                                                                 : "grad",
                              "`: ", values.shape().DebugString(), " vs ",
                              variance.shape().DebugString()));
  TFPRIORS_REQUIRE(context, key.shape() == tensorflow::TensorShape({1}),
              InvalidArgument("`key` must have shape [1]; received ",
                              key.shape().DebugString()));
  TFPRIORS_REQUIRE(context, counter.shape() == tensorflow::TensorShape({2}),
              InvalidArgument("`counter` must have shape [2]; received ",
                              counter.shape().DebugString()));
  TFPRIORS_REQUIRE(context, TensorShapeUtils::IsScalar(offset.shape()),
              InvalidArgument("`offset` must be a scalar; received shape ",
                              offset.shape().DebugString()));
  *n = values.NumElements();
  return true;
}

bool ValidateOffset(OpKernelContext* context, int64_t offset, int64_t n) {
  TFPRIORS_REQUIRE(context, offset >= 0 && offset <= std::numeric_limits<int64_t>::max() - n,
              InvalidArgument("`offset` must be in [0, 2^63 - 1 - number of elements]; "
                              "received ",
                              offset));
  return true;
}

// What the CPU and GPU kernels share: the checked `variance_floor` attribute, and the
// checks and output allocation before the work.
class LrtKernelBase : public OpKernel {
 public:
  explicit LrtKernelBase(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("variance_floor", &floor_));
    OP_REQUIRES(context, std::isfinite(floor_) && floor_ >= 0.0f,
                InvalidArgument("`variance_floor` must be finite and >= 0; received ", floor_));
  }

 protected:
  // Validates the inputs and allocates the output. Returns false when there is nothing
  // more to do: the call was refused (the status is set) or it has no elements. The
  // offset is read on the host (a HostMemory input on the GPU).
  bool Prepare(OpKernelContext* context, int64_t* n, int64_t* offset, Tensor** output) {
    if (!ValidateInputs(context, n)) return false;
    *offset = context->input(4).scalar<int64_t>()();
    if (!ValidateOffset(context, *offset, *n)) return false;
    auto status = context->allocate_output(0, context->input(0).shape(), output);
    if (!status.ok()) {
      context->SetStatus(status);
      return false;
    }
    return *n > 0;
  }

  float floor_ = 0.0f;
};

template <philox::Combine kCombine>
class LrtCpu : public LrtKernelBase {
 public:
  using LrtKernelBase::LrtKernelBase;

  void Compute(OpKernelContext* context) override {
    int64_t n = 0, offset = 0;
    Tensor* output = nullptr;
    if (!Prepare(context, &n, &offset, &output)) return;
    const auto key = context->input(2).flat<tensorflow::uint64>();
    const auto counter = context->input(3).flat<tensorflow::uint64>();
    const philox::Stream stream = philox::MakeStream(key(0), counter(0), counter(1));
    const float* a = context->input(0).flat<float>().data();
    const float* variance = context->input(1).flat<float>().data();
    float* out = output->flat<float>().data();
    const philox::Isa isa = ActiveIsa();
    const float floor = floor_;
    const int64_t chunks = (n + philox::kChunk - 1) / philox::kChunk;
    auto work = [&](int64_t first, int64_t last) {
      for (int64_t chunk = first; chunk < last; ++chunk) {
        const int64_t start = chunk * philox::kChunk;
        const int64_t size = std::min(philox::kChunk, n - start);
        philox::Chunk(isa, kCombine, stream, static_cast<uint64_t>(offset + start), size,
                      a + start, variance + start, floor, out + start);
      }
    };
    auto* workers = context->device()->tensorflow_cpu_worker_threads();
    // About 2.5 ns per element with the vector code (more without it).
    tensorflow::Shard(workers->num_threads, workers->workers, chunks, philox::kChunk * 8,
                      work);
  }
};

}  // namespace

REGISTER_KERNEL_BUILDER(Name("LrtSample").Device(tensorflow::DEVICE_CPU),
                        LrtCpu<philox::Combine::kSample>);
REGISTER_KERNEL_BUILDER(Name("LrtSampleVarianceGrad").Device(tensorflow::DEVICE_CPU),
                        LrtCpu<philox::Combine::kVarianceGrad>);

#if GOOGLE_CUDA
namespace {

template <bool kGradient>
class LrtGpu : public LrtKernelBase {
 public:
  using LrtKernelBase::LrtKernelBase;

  void Compute(OpKernelContext* context) override {
    int64_t n = 0, offset = 0;
    Tensor* output = nullptr;
    if (!Prepare(context, &n, &offset, &output)) return;
    OP_REQUIRES(context,
                LaunchLrt(context->eigen_gpu_device().stream(), kGradient,
                          context->input(0).flat<float>().data(),
                          context->input(1).flat<float>().data(),
                          reinterpret_cast<const uint64_t*>(
                              context->input(2).flat<tensorflow::uint64>().data()),
                          reinterpret_cast<const uint64_t*>(
                              context->input(3).flat<tensorflow::uint64>().data()),
                          offset, n, floor_, output->flat<float>().data()),
                tensorflow::errors::Internal("CUDA launch of ", type_string(), " failed"));
  }
};

}  // namespace

REGISTER_KERNEL_BUILDER(
    Name("LrtSample").Device(tensorflow::DEVICE_GPU).HostMemory("offset"), LrtGpu<false>);
REGISTER_KERNEL_BUILDER(
    Name("LrtSampleVarianceGrad").Device(tensorflow::DEVICE_GPU).HostMemory("offset"),
    LrtGpu<true>);
#endif  // GOOGLE_CUDA

}  // namespace tfpriors

// The vector code the CPU kernels run: 2 = AVX-512, 1 = AVX2, 0 = scalar.
extern "C" int tfpriors_noise_isa() { return static_cast<int>(tfpriors::ActiveIsa()); }

// Forces a narrower vector code (tests and benchmarks); -1 restores the CPU's widest.
// Returns 0, or -1 when this CPU cannot run the one asked for.
extern "C" int tfpriors_select_noise_isa(int isa) {
  if (isa < -1 || isa > 2) return -1;
  if (isa >= 0 && !tfpriors::philox::IsaSupported(static_cast<tfpriors::philox::Isa>(isa))) {
    return -1;
  }
  tfpriors::forced_isa.store(isa);
  return 0;
}
