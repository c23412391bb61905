// Fused perforated 2D convolution (Figurnov et al., PerforatedCNNs) for TensorFlow.
//
// output[n, p, :] = kept_out[n, fill_index[p], :] where
// kept_out[n, k, :] = im2col(input, kept[k]) @ reshape(filter, [kh*kw*C, O]).
//
// CPU: the rows (image, kept position) go through in chunks; each chunk's im2col rows
// are built in parallel on TF's intra-op thread pool, then multiplied with the kernel
// by one Eigen contraction on TF's thread-pool device; a last parallel pass copies
// rows to fill the output. Every shape, attribute and index is validated with InvalidArgument before
// any memory is touched: a bad index table never reads or writes out of bounds.

#define EIGEN_USE_THREADS

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "unsupported/Eigen/CXX11/Tensor"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

#if GOOGLE_CUDA
#include "perforated_conv_gpu.h"
#endif

namespace tfpriors {

using tensorflow::DEVICE_CPU;
using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Status;
using tensorflow::Tensor;
using tensorflow::TensorShape;
using tensorflow::errors::InvalidArgument;
using tensorflow::shape_inference::DimensionHandle;
using tensorflow::shape_inference::InferenceContext;
using tensorflow::shape_inference::ShapeHandle;

// The attribute checks shared by the shape function and the kernels.
Status ValidateAttributes(const std::vector<int64_t>& strides,
                          const std::vector<int64_t>& pads,
                          const std::vector<int64_t>& size) {
  if (strides.size() != 2 || strides[0] <= 0 || strides[1] <= 0) {
    return InvalidArgument("strides must be 2 positive integers");
  }
  if (pads.size() != 2 || pads[0] < 0 || pads[1] < 0) {
    return InvalidArgument("pads must be 2 non-negative integers");
  }
  if (size.size() != 2 || size[0] <= 0 || size[1] <= 0) {
    return InvalidArgument("output_size must be 2 positive integers");
  }
  // Bounds keep every product below int64 overflow and the positions in int32.
  const int64_t kLimit = 1 << 20;
  if (strides[0] >= kLimit || strides[1] >= kLimit || pads[0] >= kLimit ||
      pads[1] >= kLimit || size[0] >= kLimit || size[1] >= kLimit ||
      size[0] * size[1] >= std::numeric_limits<int32_t>::max()) {
    return InvalidArgument("strides, pads or output_size too large (each must be below ",
                           kLimit, ")");
  }
  return Status();
}

REGISTER_OP("PerforatedConv2D")
    .Input("input: float")
    .Input("filter: float")
    .Input("kept: int32")
    .Input("fill_index: int32")
    .Output("output: float")
    .Attr("strides: list(int)")
    .Attr("pads: list(int)")
    .Attr("output_size: list(int)")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle input, filter, kept, fill;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &input));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 4, &filter));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 1, &kept));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 1, &fill));
      DimensionHandle channels;
      TF_RETURN_IF_ERROR(c->Merge(c->Dim(input, 3), c->Dim(filter, 2), &channels));
      std::vector<int64_t> strides, pads, size;
      TF_RETURN_IF_ERROR(c->GetAttr("strides", &strides));
      TF_RETURN_IF_ERROR(c->GetAttr("pads", &pads));
      TF_RETURN_IF_ERROR(c->GetAttr("output_size", &size));
      // The same bounds as the kernel, before size[0] * size[1] is formed: an overflowed
      // (negative) product would abort the process in MakeDim (found by fuzzing).
      TF_RETURN_IF_ERROR(ValidateAttributes(strides, pads, size));
      DimensionHandle positions;
      TF_RETURN_IF_ERROR(c->Merge(c->Dim(fill, 0), c->MakeDim(size[0] * size[1]),
                                  &positions));
      c->set_output(0, c->MakeShape({c->Dim(input, 0), c->MakeDim(size[0]),
                                     c->MakeDim(size[1]), c->Dim(filter, 3)}));
      return Status();
    })
    .Doc(R"doc(
Perforated convolution: the convolution (NHWC input, HWIO filter, no dilation) computed
at the sorted flat output positions `kept`, every output position p taking the value of
kept position `fill_index[p]` (an index into `kept`). Input pixels outside the image
(padding) read zero. `pads` = [pad_top, pad_left].
)doc");

// The im2col scratch of the CPU kernel: up to kChunkFloats floats, at least kMinChunkRows
// rows. The fuzzing build (build.py --fuzz) makes both tiny, so that small fuzz inputs
// already go through several chunks, a partial last one included.
#ifndef TFPRIORS_CHUNK_FLOATS
#define TFPRIORS_CHUNK_FLOATS (1 << 22)
#endif
#ifndef TFPRIORS_MIN_CHUNK_ROWS
#define TFPRIORS_MIN_CHUNK_ROWS 256
#endif
constexpr int64_t kChunkFloats = TFPRIORS_CHUNK_FLOATS;
constexpr int64_t kMinChunkRows = TFPRIORS_MIN_CHUNK_ROWS;

// Geometry shared by the CPU and GPU kernels, validated once.
struct Geometry {
  int64_t batch, height, width, channels;
  int64_t kh, kw, filters;
  int64_t stride_h, stride_w, pad_top, pad_left;
  int64_t out_h, out_w, kept;
  int64_t depth() const { return kh * kw * channels; }
};

class PerforatedConv2DBase : public OpKernel {
 public:
  explicit PerforatedConv2DBase(OpKernelConstruction* context) : OpKernel(context) {
    std::vector<int64_t> strides, pads, size;
    OP_REQUIRES_OK(context, context->GetAttr("strides", &strides));
    OP_REQUIRES_OK(context, context->GetAttr("pads", &pads));
    OP_REQUIRES_OK(context, context->GetAttr("output_size", &size));
    OP_REQUIRES_OK(context, ValidateAttributes(strides, pads, size));
    stride_h_ = strides[0];
    stride_w_ = strides[1];
    pad_top_ = pads[0];
    pad_left_ = pads[1];
    out_h_ = size[0];
    out_w_ = size[1];
  }

 protected:
  // Validates all inputs; on success fills `g`, otherwise sets the context's error.
  void Validate(OpKernelContext* context, Geometry* g) {
    const Tensor& input = context->input(0);
    const Tensor& filter = context->input(1);
    const Tensor& kept = context->input(2);
    const Tensor& fill = context->input(3);
    OP_REQUIRES(context, input.dims() == 4,
                InvalidArgument("input must be 4-D (batch, height, width, channels), got ",
                                input.shape().DebugString()));
    OP_REQUIRES(context, filter.dims() == 4,
                InvalidArgument("filter must be 4-D (kh, kw, in_channels, filters), got ",
                                filter.shape().DebugString()));
    OP_REQUIRES(context, kept.dims() == 1,
                InvalidArgument("kept must be 1-D, got ", kept.shape().DebugString()));
    OP_REQUIRES(context, fill.dims() == 1,
                InvalidArgument("fill_index must be 1-D, got ", fill.shape().DebugString()));
    g->batch = input.dim_size(0);
    g->height = input.dim_size(1);
    g->width = input.dim_size(2);
    g->channels = input.dim_size(3);
    g->kh = filter.dim_size(0);
    g->kw = filter.dim_size(1);
    g->filters = filter.dim_size(3);
    OP_REQUIRES(context, g->batch > 0, InvalidArgument("empty batch: input has 0 examples"));
    OP_REQUIRES(context, g->height > 0 && g->width > 0 && g->channels > 0,
                InvalidArgument("input has an empty dimension: ",
                                input.shape().DebugString()));
    OP_REQUIRES(context, g->kh > 0 && g->kw > 0 && g->filters > 0,
                InvalidArgument("filter has an empty dimension: ",
                                filter.shape().DebugString()));
    OP_REQUIRES(context, filter.dim_size(2) == g->channels,
                InvalidArgument("filter in_channels (", filter.dim_size(2),
                                ") does not match input channels (", g->channels, ")"));
    g->stride_h = stride_h_;
    g->stride_w = stride_w_;
    g->pad_top = pad_top_;
    g->pad_left = pad_left_;
    g->out_h = out_h_;
    g->out_w = out_w_;
    OP_REQUIRES(context, pad_top_ < g->kh && pad_left_ < g->kw,
                InvalidArgument("pads must be smaller than the kernel size"));
    const int64_t positions = out_h_ * out_w_;
    g->kept = kept.dim_size(0);
    OP_REQUIRES(context, g->kept > 0 && g->kept <= positions,
                InvalidArgument("kept must hold between 1 and ", positions,
                                " positions, got ", g->kept));
    OP_REQUIRES(context, fill.dim_size(0) == positions,
                InvalidArgument("fill_index must have output_size[0] * output_size[1] = ",
                                positions, " entries, got ", fill.dim_size(0)));
    const auto kept_v = kept.flat<int32_t>();
    for (int64_t k = 0; k < g->kept; ++k) {
      OP_REQUIRES(context, kept_v(k) >= 0 && kept_v(k) < positions,
                  InvalidArgument("kept[", k, "] = ", kept_v(k), " is outside [0, ",
                                  positions, ")"));
      OP_REQUIRES(context, k == 0 || kept_v(k) > kept_v(k - 1),
                  InvalidArgument("kept must be strictly increasing; kept[", k, "] = ",
                                  kept_v(k), " after ", kept_v(k - 1)));
    }
    const auto fill_v = fill.flat<int32_t>();
    for (int64_t p = 0; p < positions; ++p) {
      OP_REQUIRES(context, fill_v(p) >= 0 && fill_v(p) < g->kept,
                  InvalidArgument("fill_index[", p, "] = ", fill_v(p), " is outside [0, ",
                                  g->kept, ")"));
    }
    // The largest buffer (batch * positions * filters floats) must be addressable.
    const double elements = static_cast<double>(g->batch) *
                            std::max<double>(positions, 1.0) *
                            std::max<double>(g->filters, g->depth());
    OP_REQUIRES(context, elements < 9.0e15, InvalidArgument("tensors too large"));
  }

  int64_t stride_h_, stride_w_, pad_top_, pad_left_, out_h_, out_w_;
};

class PerforatedConv2DCpu : public PerforatedConv2DBase {
 public:
  using PerforatedConv2DBase::PerforatedConv2DBase;

  void Compute(OpKernelContext* context) override {
    Geometry g;
    Validate(context, &g);
    if (!context->status().ok()) return;
    const int64_t positions = g.out_h * g.out_w;
    Tensor* output = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(
                                0, TensorShape({g.batch, g.out_h, g.out_w, g.filters}),
                                &output));
    Tensor kept_out;
    OP_REQUIRES_OK(context, context->allocate_temp(tensorflow::DT_FLOAT,
                                                   TensorShape({g.batch * g.kept, g.filters}),
                                                   &kept_out));
    const float* in = context->input(0).flat<float>().data();
    const float* filter = context->input(1).flat<float>().data();
    const int32_t* kept = context->input(2).flat<int32_t>().data();
    const int32_t* fill = context->input(3).flat<int32_t>().data();
    float* rows_out = kept_out.flat<float>().data();
    float* out = output->flat<float>().data();

    const int64_t depth = g.depth();
    const int64_t rows = g.batch * g.kept;
    // Rows go through in chunks: a parallel im2col of the chunk, then one multithreaded
    // Eigen contraction (TF's own CPU matmul path) - large GEMMs, bounded scratch memory.
    const int64_t chunk = std::min<int64_t>(
        rows, std::max<int64_t>(kMinChunkRows, kChunkFloats / depth));
    Tensor scratch;
    OP_REQUIRES_OK(context, context->allocate_temp(tensorflow::DT_FLOAT,
                                                   TensorShape({chunk, depth}), &scratch));
    float* patches = scratch.flat<float>().data();
    auto worker_threads = context->device()->tensorflow_cpu_worker_threads();
    const Eigen::ThreadPoolDevice& device = context->eigen_cpu_device();
    using ConstMatrix = Eigen::TensorMap<Eigen::Tensor<const float, 2, Eigen::RowMajor>>;
    using Matrix = Eigen::TensorMap<Eigen::Tensor<float, 2, Eigen::RowMajor>>;
    const Eigen::array<Eigen::IndexPair<Eigen::Index>, 1> contract_dims = {
        Eigen::IndexPair<Eigen::Index>(1, 0)};
    ConstMatrix weights(filter, depth, g.filters);

    for (int64_t row0 = 0; row0 < rows; row0 += chunk) {
      const int64_t count = std::min(chunk, rows - row0);
      auto im2col = [&](int64_t first, int64_t last) {
        for (int64_t r = first; r < last; ++r) {
          const int64_t row = row0 + r;
          const int64_t n = row / g.kept;
          const int64_t pos = kept[row % g.kept];
          const int64_t top = (pos / g.out_w) * g.stride_h - g.pad_top;
          const int64_t left = (pos % g.out_w) * g.stride_w - g.pad_left;
          float* dst = patches + r * depth;
          for (int64_t i = 0; i < g.kh; ++i) {
            const int64_t y = top + i;
            for (int64_t j = 0; j < g.kw; ++j, dst += g.channels) {
              const int64_t x = left + j;
              if (y < 0 || y >= g.height || x < 0 || x >= g.width) {
                std::fill(dst, dst + g.channels, 0.0f);
              } else {
                std::memcpy(dst, in + ((n * g.height + y) * g.width + x) * g.channels,
                            g.channels * sizeof(float));
              }
            }
          }
        }
      };
      tensorflow::Shard(worker_threads->num_threads, worker_threads->workers, count,
                        /*cost_per_unit=*/depth, im2col);
      ConstMatrix a(patches, count, depth);
      Matrix c(rows_out + row0 * g.filters, count, g.filters);
      c.device(device) = a.contract(weights, contract_dims);
    }

    auto fill_rows = [&](int64_t first, int64_t last) {
      for (int64_t row = first; row < last; ++row) {
        const int64_t n = row / positions;
        const int64_t p = row % positions;
        std::memcpy(out + row * g.filters, rows_out + (n * g.kept + fill[p]) * g.filters,
                    g.filters * sizeof(float));
      }
    };
    tensorflow::Shard(worker_threads->num_threads, worker_threads->workers,
                      g.batch * positions, /*cost_per_unit=*/g.filters, fill_rows);
  }
};

REGISTER_KERNEL_BUILDER(Name("PerforatedConv2D").Device(DEVICE_CPU), PerforatedConv2DCpu);

#if GOOGLE_CUDA
// The index tables stay in host memory: they are validated on the host before launch.
class PerforatedConv2DGpu : public PerforatedConv2DBase {
 public:
  using PerforatedConv2DBase::PerforatedConv2DBase;

  void Compute(OpKernelContext* context) override {
    Geometry g;
    Validate(context, &g);
    if (!context->status().ok()) return;
    // What the CUDA kernel cannot launch is refused here, as InvalidArgument like every
    // other bad shape, instead of failing inside the launch as an Internal error.
    OP_REQUIRES(context, g.depth() * static_cast<int64_t>(sizeof(float)) <= kMaxSharedBytes,
                InvalidArgument("on GPU, kh * kw * in_channels = ", g.depth(),
                                " exceeds the kernel's shared memory (",
                                kMaxSharedBytes / sizeof(float), " floats)"));
    OP_REQUIRES(context, g.batch * g.kept <= kMaxBlocks,
                InvalidArgument("on GPU, batch * kept = ", g.batch * g.kept,
                                " exceeds the CUDA grid (", kMaxBlocks, " blocks)"));
    Tensor* output = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(
                                0, TensorShape({g.batch, g.out_h, g.out_w, g.filters}),
                                &output));
    Tensor tables;
    const int64_t positions = g.out_h * g.out_w;
    tensorflow::AllocatorAttributes host;
    OP_REQUIRES_OK(context, context->allocate_temp(tensorflow::DT_INT32,
                                                   TensorShape({g.kept + positions}),
                                                   &tables));
    OP_REQUIRES(context,
                LaunchPerforatedConv2D(
                    context->eigen_gpu_device().stream(),
                    context->input(0).flat<float>().data(),
                    context->input(1).flat<float>().data(),
                    context->input(2).flat<int32_t>().data(),
                    context->input(3).flat<int32_t>().data(), tables.flat<int32_t>().data(),
                    output->flat<float>().data(), g.batch, g.height, g.width, g.channels,
                    g.kh, g.kw, g.filters, g.stride_h, g.stride_w, g.pad_top, g.pad_left,
                    g.out_h, g.out_w, g.kept),
                tensorflow::errors::Internal("CUDA launch of PerforatedConv2D failed"));
  }
};

REGISTER_KERNEL_BUILDER(Name("PerforatedConv2D")
                            .Device(tensorflow::DEVICE_GPU)
                            .HostMemory("kept")
                            .HostMemory("fill_index"),
                        PerforatedConv2DGpu);
#endif  // GOOGLE_CUDA

}  // namespace tfpriors
