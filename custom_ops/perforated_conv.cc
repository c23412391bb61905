// Convolutions computed at chosen output positions, for TensorFlow: the perforated
// convolution (Figurnov et al., PerforatedCNNs) and the sparse residual units of SACT /
// probabilistic ACT share one im2col + GEMM engine.
//
// Ops (all float32, NHWC input, HWIO filter, no dilation):
//   PerforatedConv2D(input, filter, kept, fill_index) -> output (N, out_h, out_w, O)
//       output[n, p, :] = row(n, kept[fill_index[p]]), the nearest kept position's value.
//   ConvAtPositions(input, filter, positions) -> rows (M, O)
//       rows[m, :] = row(positions[m] / P, positions[m] % P) with P = out_h * out_w.
//   ConvAtPositionsBackpropInput / ConvAtPositionsBackpropFilter: its two gradients.
// where row(n, p) = im2col(input[n], output position p) @ reshape(filter, [kh*kw*C, O]).
//
// CPU engine: the rows go through in blocks small enough that one block's im2col stays
// in the core's L2 cache; each block is gathered and multiplied by the worker thread of
// TensorFlow's intra-op pool that took it, so the GEMM reads its left operand from cache.
// The GEMM of the forward pass and of the input gradient multiplies by the filter packed
// once per call (packed_gemm.h: an AVX-512 micro-kernel, used when CPUID says so); the
// filter gradient, and CPUs without AVX-512, use the single-threaded sgemm of the OpenBLAS
// that tfpriors.ops hands over (tfpriors_set_sgemm), else an Eigen product. Nothing is
// compiled for a particular CPU, so the library loads on every x86-64 machine.
//
// Every shape, attribute and index is validated with InvalidArgument before any memory
// is touched: a bad index table never reads or writes out of bounds.

#define EIGEN_USE_THREADS

#include <algorithm>
#include <atomic>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "Eigen/Core"
#include "packed_gemm.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

#if GOOGLE_CUDA
#include "perforated_conv_gpu.h"
#endif

#ifndef TFPRIORS_TF_VERSION
#define TFPRIORS_TF_VERSION "unknown"
#endif

// Read by tfpriors.ops from the file's bytes before loading it: the TensorFlow version
// this library was compiled against (a mismatched ABI must not be loaded at all).
extern "C" __attribute__((visibility("default"), used)) const char
    tfpriors_build_tag[] = "tfpriors-built-against-tensorflow=" TFPRIORS_TF_VERSION ";";

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

// ---- GEMM ----------------------------------------------------------------------------

// The CBLAS signature (32-bit integers) of OpenBLAS' cblas_sgemm.
using CblasSgemm = void (*)(int order, int trans_a, int trans_b, int m, int n, int k,
                            float alpha, const float* a, int lda, const float* b, int ldb,
                            float beta, float* c, int ldc);
constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;
std::atomic<CblasSgemm> g_sgemm{nullptr};

// The packed micro-kernel in use (-1: not chosen yet, then the widest the CPU runs).
std::atomic<int> g_kernel{-1};

packed_gemm::Kernel CurrentKernel() {
  int kernel = g_kernel.load(std::memory_order_relaxed);
  if (kernel < 0) {
    kernel = static_cast<int>(packed_gemm::Detect());
    g_kernel.store(kernel);
  }
  return static_cast<packed_gemm::Kernel>(kernel);
}

}  // namespace tfpriors

// Called once by tfpriors.ops (through ctypes) with the address of cblas_sgemm of a
// single-threaded OpenBLAS; null goes back to the Eigen product. Returns 0.
extern "C" __attribute__((visibility("default"))) int tfpriors_set_sgemm(void* function) {
  tfpriors::g_sgemm.store(reinterpret_cast<tfpriors::CblasSgemm>(function));
  return 0;
}

// Chooses the GEMM of the forward pass and the input gradient: "auto" (the packed kernel
// when the CPU runs it), "avx512" or "blas" (OpenBLAS, else Eigen). Returns 0, or 1 when
// this CPU cannot run the kernel asked for (nothing changes then).
extern "C" __attribute__((visibility("default"))) int tfpriors_select_gemm(const char* name) {
  using tfpriors::packed_gemm::Kernel;
  const std::string choice = name == nullptr ? "auto" : name;
  Kernel kernel;
  if (choice == "auto") {
    kernel = tfpriors::packed_gemm::Detect();
  } else if (choice == "avx512") {
    kernel = Kernel::kAvx512;
  } else if (choice == "blas") {
    kernel = Kernel::kNone;
  } else {
    return 1;
  }
  if (!tfpriors::packed_gemm::Supported(kernel)) return 1;
  tfpriors::g_kernel.store(static_cast<int>(kernel));
  return 0;
}

// What the forward pass multiplies with now: "avx512", "openblas" or "eigen".
extern "C" __attribute__((visibility("default"))) const char* tfpriors_gemm_backend() {
  if (tfpriors::CurrentKernel() == tfpriors::packed_gemm::Kernel::kAvx512) return "avx512";
  return tfpriors::g_sgemm.load() != nullptr ? "openblas" : "eigen";
}

namespace tfpriors {

// C (m x n, row stride ldc) = op(A) op(B) + beta C, all row-major; op transposes when asked.
// Single-threaded: the callers run it on each worker thread of TF's pool.
void Gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a,
          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  CblasSgemm sgemm = g_sgemm.load(std::memory_order_relaxed);
  if (sgemm != nullptr) {
    sgemm(kRowMajor, trans_a ? kTrans : kNoTrans, trans_b ? kTrans : kNoTrans,
          static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), 1.0f, a,
          static_cast<int>(lda), b, static_cast<int>(ldb), beta, c, static_cast<int>(ldc));
    return;
  }
  using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using Stride = Eigen::OuterStride<>;
  using ConstMap = Eigen::Map<const Matrix, 0, Stride>;
  Eigen::Map<Matrix, 0, Stride> out(c, m, n, Stride(ldc));
  ConstMap a_map(a, trans_a ? k : m, trans_a ? m : k, Stride(lda));
  ConstMap b_map(b, trans_b ? n : k, trans_b ? k : n, Stride(ldb));
  if (beta == 0.0f) out.setZero();
  if (trans_a && trans_b) {
    out.noalias() += a_map.transpose() * b_map.transpose();
  } else if (trans_a) {
    out.noalias() += a_map.transpose() * b_map;
  } else if (trans_b) {
    out.noalias() += a_map * b_map.transpose();
  } else {
    out.noalias() += a_map * b_map;
  }
}

// ---- geometry and validation ---------------------------------------------------------

// The attribute checks shared by the shape functions and the kernels.
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

Status ReadAttributes(InferenceContext* c, std::vector<int64_t>* size) {
  std::vector<int64_t> strides, pads;
  TF_RETURN_IF_ERROR(c->GetAttr("strides", &strides));
  TF_RETURN_IF_ERROR(c->GetAttr("pads", &pads));
  TF_RETURN_IF_ERROR(c->GetAttr("output_size", size));
  // The same bounds as the kernels, before size[0] * size[1] is formed: an overflowed
  // (negative) product would abort the process in MakeDim (found by fuzzing).
  return ValidateAttributes(strides, pads, *size);
}

// The rows of one output channel block: im2col of the input at (image, output position).
struct Geometry {
  int64_t batch, height, width, channels;
  int64_t kh, kw, filters;
  int64_t stride_h, stride_w, pad_top, pad_left;
  int64_t out_h, out_w;
  int64_t depth() const { return kh * kw * channels; }
  int64_t positions() const { return out_h * out_w; }
};

// The im2col scratch of one block: up to kChunkFloats floats (about L2's size), at
// least kMinChunkRows rows (each GEMM call packs the whole filter again: fewer rows than
// this and the packing costs more than the multiply). The fuzzing build (build.py
// --fuzz) makes both tiny, so that small fuzz inputs already go through several blocks,
// a partial last one included.
#ifndef TFPRIORS_CHUNK_FLOATS
#define TFPRIORS_CHUNK_FLOATS (1 << 18)
#endif
#ifndef TFPRIORS_MIN_CHUNK_ROWS
#define TFPRIORS_MIN_CHUNK_ROWS 96
#endif
constexpr int64_t kChunkFloats = TFPRIORS_CHUNK_FLOATS;
constexpr int64_t kMinChunkRows = TFPRIORS_MIN_CHUNK_ROWS;

int64_t ChunkRows(int64_t depth) {
  return std::max<int64_t>(kMinChunkRows, kChunkFloats / std::max<int64_t>(depth, 1));
}

class ConvOpBase : public OpKernel {
 public:
  explicit ConvOpBase(OpKernelConstruction* context) : OpKernel(context) {
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
  // Validates input (N, H, W, C) and filter (kh, kw, C, O); fills `g`.
  Status ReadGeometry(const Tensor& input, const Tensor& filter, Geometry* g) const {
    if (input.dims() != 4) {
      return InvalidArgument("input must be 4-D (batch, height, width, channels), got ",
                             input.shape().DebugString());
    }
    if (filter.dims() != 4) {
      return InvalidArgument("filter must be 4-D (kh, kw, in_channels, filters), got ",
                             filter.shape().DebugString());
    }
    g->batch = input.dim_size(0);
    g->height = input.dim_size(1);
    g->width = input.dim_size(2);
    g->channels = input.dim_size(3);
    g->kh = filter.dim_size(0);
    g->kw = filter.dim_size(1);
    g->filters = filter.dim_size(3);
    if (g->batch <= 0) return InvalidArgument("empty batch: input has 0 examples");
    if (g->height <= 0 || g->width <= 0 || g->channels <= 0) {
      return InvalidArgument("input has an empty dimension: ", input.shape().DebugString());
    }
    if (g->kh <= 0 || g->kw <= 0 || g->filters <= 0) {
      return InvalidArgument("filter has an empty dimension: ",
                             filter.shape().DebugString());
    }
    if (filter.dim_size(2) != g->channels) {
      return InvalidArgument("filter in_channels (", filter.dim_size(2),
                             ") does not match input channels (", g->channels, ")");
    }
    g->stride_h = stride_h_;
    g->stride_w = stride_w_;
    g->pad_top = pad_top_;
    g->pad_left = pad_left_;
    g->out_h = out_h_;
    g->out_w = out_w_;
    if (pad_top_ >= g->kh || pad_left_ >= g->kw) {
      return InvalidArgument("pads must be smaller than the kernel size");
    }
    // GEMM dimensions are 32-bit, and the largest buffer must be addressable.
    if (g->depth() >= std::numeric_limits<int32_t>::max() ||
        g->filters >= std::numeric_limits<int32_t>::max()) {
      return InvalidArgument("kh * kw * in_channels and filters must be below 2^31");
    }
    const double elements = static_cast<double>(g->batch) *
                            std::max<double>(g->positions(), 1.0) *
                            std::max<double>(g->filters, g->depth());
    if (elements >= 9.0e15) return InvalidArgument("tensors too large");
    return Status();
  }

  // Positions (M,) of ConvAtPositions and its gradients: flat n * P + p in [0, N * P).
  static Status CheckPositions(const Tensor& positions, const Geometry& g) {
    if (positions.dims() != 1) {
      return InvalidArgument("positions must be 1-D, got ",
                             positions.shape().DebugString());
    }
    const int64_t bound = g.batch * g.positions();
    const auto values = positions.flat<int32_t>();
    for (int64_t m = 0; m < values.size(); ++m) {
      if (values(m) < 0 || values(m) >= bound) {
        return InvalidArgument("positions[", m, "] = ", values(m), " is outside [0, ",
                               bound, ") (batch * output_size[0] * output_size[1])");
      }
    }
    return Status();
  }

  // Rows (M, O) handed to the gradients: the forward's output shape.
  static Status CheckRows(const Tensor& rows, int64_t count, const Geometry& g) {
    if (rows.dims() != 2 || rows.dim_size(0) != count || rows.dim_size(1) != g.filters) {
      return InvalidArgument("grad_rows must have shape [", count, ", ", g.filters,
                             "] (positions, filters), got ", rows.shape().DebugString());
    }
    return Status();
  }

  int64_t stride_h_, stride_w_, pad_top_, pad_left_, out_h_, out_w_;
};

// Writes the im2col row of (image n, output position p): kh * kw * C floats, zero where
// the receptive field leaves the image.
inline void Im2ColRow(const Geometry& g, const float* input, int64_t n, int64_t p,
                      float* dst) {
  const int64_t top = (p / g.out_w) * g.stride_h - g.pad_top;
  const int64_t left = (p % g.out_w) * g.stride_w - g.pad_left;
  const float* image = input + n * g.height * g.width * g.channels;
  for (int64_t i = 0; i < g.kh; ++i) {
    const int64_t y = top + i;
    if (y < 0 || y >= g.height) {
      std::fill(dst, dst + g.kw * g.channels, 0.0f);
      dst += g.kw * g.channels;
      continue;
    }
    const float* line = image + y * g.width * g.channels;
    // The taps inside the image are contiguous in memory: one copy for all of them,
    // zeros for the taps in the left [0, first) and right [last, kw) padding.
    const int64_t first = std::min<int64_t>(g.kw, std::max<int64_t>(0, -left));
    const int64_t last = std::min<int64_t>(g.kw, std::max<int64_t>(first, g.width - left));
    std::fill(dst, dst + first * g.channels, 0.0f);
    if (last > first) {
      std::memcpy(dst + first * g.channels, line + (left + first) * g.channels,
                  (last - first) * g.channels * sizeof(float));
    }
    std::fill(dst + last * g.channels, dst + g.kw * g.channels, 0.0f);
    dst += g.kw * g.channels;
  }
}

// Adds the im2col row `src` of (image n, position p) back onto `image_grad`, the
// gradient of image n (taps outside the image are dropped).
inline void Col2ImRow(const Geometry& g, const float* src, int64_t p, float* image_grad) {
  const int64_t top = (p / g.out_w) * g.stride_h - g.pad_top;
  const int64_t left = (p % g.out_w) * g.stride_w - g.pad_left;
  for (int64_t i = 0; i < g.kh; ++i) {
    const int64_t y = top + i;
    if (y < 0 || y >= g.height) continue;
    float* line = image_grad + y * g.width * g.channels;
    for (int64_t j = 0; j < g.kw; ++j) {
      const int64_t x = left + j;
      if (x < 0 || x >= g.width) continue;
      const float* from = src + (i * g.kw + j) * g.channels;
      float* to = line + x * g.channels;
      for (int64_t c = 0; c < g.channels; ++c) to[c] += from[c];
    }
  }
}

// Scratch of one worker thread, reused by every block it runs.
float* ThreadScratch(int64_t floats) {
  thread_local std::vector<float> scratch;
  if (static_cast<int64_t>(scratch.size()) < floats) scratch.resize(floats);
  return scratch.data();
}

// Splits [0, count) into at most `parts` contiguous ranges, one per worker thread.
std::vector<int64_t> SplitRanges(int64_t count, int64_t parts) {
  parts = std::max<int64_t>(1, std::min(parts, count));
  std::vector<int64_t> bounds(parts + 1);
  for (int64_t i = 0; i <= parts; ++i) bounds[i] = count * i / parts;
  return bounds;
}

// Runs work(part) for every part on TF's intra-op pool, one part per task.
void ForEachPart(OpKernelContext* context, int64_t parts,
                 const std::function<void(int64_t)>& work) {
  auto* workers = context->device()->tensorflow_cpu_worker_threads();
  // The cost is so large that Shard gives every part its own task.
  tensorflow::Shard(workers->num_threads, workers->workers, parts,
                    std::numeric_limits<int32_t>::max(), [&](int64_t first, int64_t last) {
                      for (int64_t part = first; part < last; ++part) work(part);
                    });
}

int64_t WorkerCount(OpKernelContext* context) {
  return std::max(1, context->device()->tensorflow_cpu_worker_threads()->num_threads);
}

// The right-hand side B (k x n) of the GEMMs: a row-major matrix b, (k x n), or the
// transpose of one, (n x k) when `transposed`. Packed into a temporary once per op call
// for the packed kernels; without one the BLAS reads b as it is.
class PackedOperand {
 public:
  Status Pack(OpKernelContext* context, const float* b, int64_t k, int64_t n,
              bool transposed) {
    kernel_ = CurrentKernel();
    b_ = b;
    k_ = k;
    n_ = n;
    transposed_ = transposed;
    if (kernel_ == packed_gemm::Kernel::kNone) return Status();
    TF_RETURN_IF_ERROR(context->allocate_temp(
        tensorflow::DT_FLOAT, TensorShape({packed_gemm::PackedSize(kernel_, k, n)}),
        &storage_));
    // Large filters are packed by all workers, a share of the panels each.
    float* packed = storage_.flat<float>().data();
    const int64_t panels = packed_gemm::Panels(kernel_, n);
    const int64_t parts = k * n >= (1 << 16) ? std::min(WorkerCount(context), panels) : 1;
    auto pack = [&](int64_t part) {
      packed_gemm::PackB(kernel_, b, transposed ? 1 : n, transposed ? k : 1, k, n, packed,
                         panels * part / parts, panels * (part + 1) / parts);
    };
    if (parts > 1) {
      ForEachPart(context, parts, pack);
    } else {
      pack(0);
    }
    return Status();
  }

  // C (m x n, row stride ldc) = A (m x k, row stride lda) B.
  void Multiply(int64_t m, const float* a, int64_t lda, float* c, int64_t ldc) const {
    if (m == 0) return;
    if (kernel_ != packed_gemm::Kernel::kNone) {
      packed_gemm::Multiply(kernel_, m, n_, k_, a, lda, storage_.flat<float>().data(), c, ldc);
    } else {
      Gemm(false, transposed_, m, n_, k_, a, lda, b_, transposed_ ? k_ : n_, 0.0f, c, ldc);
    }
  }

 private:
  packed_gemm::Kernel kernel_ = packed_gemm::Kernel::kNone;
  const float* b_ = nullptr;
  int64_t k_ = 0, n_ = 0;
  bool transposed_ = false;
  Tensor storage_;
};

// The rows in blocks for the workers to take one at a time: a worker that starts late
// (thread wake-up takes a fraction of a millisecond) simply takes fewer blocks. Blocks
// are at most `chunk` rows (the scratch stays in L2) and, on small inputs, small enough
// that every worker gets about three.
int64_t BlockRows(int64_t count, int64_t chunk, int64_t workers) {
  const int64_t balanced = (count + 3 * workers - 1) / (3 * workers);
  return std::max<int64_t>(1, std::min(chunk, std::max(balanced, kMinChunkRows)));
}

// How the rows go to the workers: `blocks` blocks of `block` rows, `parts` workers.
struct BlockPlan {
  int64_t block, blocks, parts;
};

BlockPlan PlanBlocks(OpKernelContext* context, int64_t count, int64_t depth) {
  const int64_t workers = WorkerCount(context);
  const int64_t block = BlockRows(count, ChunkRows(depth), workers);
  const int64_t blocks = (count + block - 1) / block;
  return {block, blocks, std::max<int64_t>(1, std::min(workers, blocks))};
}

// Calls consume(part, row0, n_rows, patches) for every block of rows, `patches` holding
// the block's im2col rows; each of plan.parts workers takes blocks until none is left.
template <typename Locate, typename Consume>
void ForEachIm2ColBlock(OpKernelContext* context, const Geometry& g, const float* input,
                        int64_t count, const BlockPlan& plan, Locate locate,
                        Consume consume) {
  const int64_t depth = g.depth();
  std::atomic<int64_t> next{0};
  ForEachPart(context, plan.parts, [&](int64_t part) {
    float* patches = ThreadScratch(plan.block * depth);
    for (int64_t b = next++; b < plan.blocks; b = next++) {
      const int64_t row0 = b * plan.block;
      const int64_t n_rows = std::min(plan.block, count - row0);
      for (int64_t r = 0; r < n_rows; ++r) {
        int64_t n, p;
        locate(row0 + r, &n, &p);
        Im2ColRow(g, input, n, p, patches + r * depth);
      }
      consume(part, row0, n_rows, patches);
    }
  });
}

// rows[r, :] = row(image(r), position(r)) for r in [0, count); `locate(r, &n, &p)`.
template <typename Locate>
Status ConvRows(OpKernelContext* context, const Geometry& g, const float* input,
                const float* filter, int64_t count, Locate locate, float* rows) {
  const int64_t depth = g.depth();
  PackedOperand weights;
  TF_RETURN_IF_ERROR(weights.Pack(context, filter, depth, g.filters, /*transposed=*/false));
  ForEachIm2ColBlock(context, g, input, count, PlanBlocks(context, count, depth), locate,
                     [&](int64_t, int64_t row0, int64_t n_rows, const float* patches) {
                       weights.Multiply(n_rows, patches, depth, rows + row0 * g.filters,
                                        g.filters);
                     });
  return Status();
}

// filter_grad = sum_r row_im2col(r)^T grad_rows[r]: each worker accumulates the blocks it
// takes into its own (depth, O) buffer; the buffers are summed at the end.
template <typename Locate>
Status ConvRowsFilterGrad(OpKernelContext* context, const Geometry& g, const float* input,
                          const float* grad_rows, int64_t count, Locate locate,
                          float* filter_grad) {
  const int64_t depth = g.depth();
  const int64_t size = depth * g.filters;
  const BlockPlan plan = PlanBlocks(context, count, depth);
  Tensor partial;
  if (plan.parts > 1) {
    TF_RETURN_IF_ERROR(context->allocate_temp(
        tensorflow::DT_FLOAT, TensorShape({plan.parts - 1, size}), &partial));
    std::fill(partial.flat<float>().data(), partial.flat<float>().data() + partial.NumElements(),
              0.0f);
  }
  std::fill(filter_grad, filter_grad + size, 0.0f);
  ForEachIm2ColBlock(
      context, g, input, count, plan, locate,
      [&](int64_t part, int64_t row0, int64_t n_rows, const float* patches) {
        float* target =
            part == 0 ? filter_grad : partial.flat<float>().data() + (part - 1) * size;
        Gemm(true, false, depth, g.filters, n_rows, patches, depth,
             grad_rows + row0 * g.filters, g.filters, 1.0f, target, g.filters);
      });
  for (int64_t part = 1; part < plan.parts; ++part) {
    const float* from = partial.flat<float>().data() + (part - 1) * size;
    for (int64_t i = 0; i < size; ++i) filter_grad[i] += from[i];
  }
  return Status();
}

// input_grad = col2im(grad_rows @ filter^T). Rows are split into contiguous ranges; a
// range whose images no other range touches adds straight into input_grad, the others
// into a private buffer over their images, added at the end (no two threads ever write
// the same memory).
template <typename Locate>
Status ConvRowsInputGrad(OpKernelContext* context, const Geometry& g, const float* filter,
                         const float* grad_rows, int64_t count, Locate locate,
                         float* input_grad) {
  const int64_t depth = g.depth();
  const int64_t image_size = g.height * g.width * g.channels;
  std::fill(input_grad, input_grad + g.batch * image_size, 0.0f);
  const std::vector<int64_t> bounds = SplitRanges(count, WorkerCount(context));
  const int64_t parts = static_cast<int64_t>(bounds.size()) - 1;
  std::vector<int64_t> low(parts, g.batch), high(parts, -1);
  for (int64_t part = 0; part < parts; ++part) {
    for (int64_t r = bounds[part]; r < bounds[part + 1]; ++r) {
      int64_t n, p;
      locate(r, &n, &p);
      low[part] = std::min(low[part], n);
      high[part] = std::max(high[part], n);
    }
  }
  std::vector<int64_t> offset(parts, -1);  // into `privates`, or -1: writes directly
  int64_t private_images = 0;
  for (int64_t part = 0; part < parts; ++part) {
    bool shared = false;
    for (int64_t other = 0; other < parts; ++other) {
      shared |= other != part && high[other] >= 0 && high[part] >= 0 &&
                low[other] <= high[part] && low[part] <= high[other];
    }
    if (shared) {
      offset[part] = private_images;
      private_images += high[part] - low[part] + 1;
    }
  }
  Tensor privates;
  if (private_images > 0) {
    TF_RETURN_IF_ERROR(context->allocate_temp(
        tensorflow::DT_FLOAT, TensorShape({private_images, image_size}), &privates));
  }
  // dpatch = grad_rows @ filter^T, (filters x depth).
  PackedOperand transposed;
  TF_RETURN_IF_ERROR(transposed.Pack(context, filter, g.filters, depth, /*transposed=*/true));
  const int64_t chunk = ChunkRows(depth);
  ForEachPart(context, parts, [&](int64_t part) {
    float* patches = ThreadScratch(chunk * depth);
    {
      if (high[part] < 0) return;
      float* base = input_grad + low[part] * image_size;
      if (offset[part] >= 0) {
        base = privates.flat<float>().data() + offset[part] * image_size;
        std::fill(base, base + (high[part] - low[part] + 1) * image_size, 0.0f);
      }
      for (int64_t row0 = bounds[part]; row0 < bounds[part + 1]; row0 += chunk) {
        const int64_t n_rows = std::min(chunk, bounds[part + 1] - row0);
        transposed.Multiply(n_rows, grad_rows + row0 * g.filters, g.filters, patches, depth);
        for (int64_t r = 0; r < n_rows; ++r) {
          int64_t n, p;
          locate(row0 + r, &n, &p);
          Col2ImRow(g, patches + r * depth, p, base + (n - low[part]) * image_size);
        }
      }
    }
  });
  for (int64_t part = 0; part < parts; ++part) {
    if (offset[part] < 0) continue;
    const float* from = privates.flat<float>().data() + offset[part] * image_size;
    float* to = input_grad + low[part] * image_size;
    const int64_t size = (high[part] - low[part] + 1) * image_size;
    for (int64_t i = 0; i < size; ++i) to[i] += from[i];
  }
  return Status();
}

// ---- PerforatedConv2D ----------------------------------------------------------------

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
      std::vector<int64_t> size;
      TF_RETURN_IF_ERROR(ReadAttributes(c, &size));
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

class PerforatedConv2DBase : public ConvOpBase {
 public:
  using ConvOpBase::ConvOpBase;

 protected:
  // Validates all inputs; on success fills `g` and `num_kept`.
  Status Validate(OpKernelContext* context, Geometry* g, int64_t* num_kept) const {
    TF_RETURN_IF_ERROR(ReadGeometry(context->input(0), context->input(1), g));
    const Tensor& kept = context->input(2);
    const Tensor& fill = context->input(3);
    if (kept.dims() != 1) {
      return InvalidArgument("kept must be 1-D, got ", kept.shape().DebugString());
    }
    if (fill.dims() != 1) {
      return InvalidArgument("fill_index must be 1-D, got ", fill.shape().DebugString());
    }
    const int64_t positions = g->positions();
    *num_kept = kept.dim_size(0);
    if (*num_kept <= 0 || *num_kept > positions) {
      return InvalidArgument("kept must hold between 1 and ", positions, " positions, got ",
                             *num_kept);
    }
    if (fill.dim_size(0) != positions) {
      return InvalidArgument("fill_index must have output_size[0] * output_size[1] = ",
                             positions, " entries, got ", fill.dim_size(0));
    }
    const auto kept_v = kept.flat<int32_t>();
    for (int64_t k = 0; k < *num_kept; ++k) {
      if (kept_v(k) < 0 || kept_v(k) >= positions) {
        return InvalidArgument("kept[", k, "] = ", kept_v(k), " is outside [0, ", positions,
                               ")");
      }
      if (k > 0 && kept_v(k) <= kept_v(k - 1)) {
        return InvalidArgument("kept must be strictly increasing; kept[", k, "] = ",
                               kept_v(k), " after ", kept_v(k - 1));
      }
    }
    const auto fill_v = fill.flat<int32_t>();
    for (int64_t p = 0; p < positions; ++p) {
      if (fill_v(p) < 0 || fill_v(p) >= *num_kept) {
        return InvalidArgument("fill_index[", p, "] = ", fill_v(p), " is outside [0, ",
                               *num_kept, ")");
      }
    }
    return Status();
  }
};

class PerforatedConv2DCpu : public PerforatedConv2DBase {
 public:
  using PerforatedConv2DBase::PerforatedConv2DBase;

  void Compute(OpKernelContext* context) override {
    Geometry g;
    int64_t num_kept = 0;
    OP_REQUIRES_OK(context, Validate(context, &g, &num_kept));
    const int64_t positions = g.positions();
    Tensor* output = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(
                                0, TensorShape({g.batch, g.out_h, g.out_w, g.filters}),
                                &output));
    Tensor kept_rows;
    OP_REQUIRES_OK(context, context->allocate_temp(tensorflow::DT_FLOAT,
                                                   TensorShape({g.batch * num_kept, g.filters}),
                                                   &kept_rows));
    const int32_t* kept = context->input(2).flat<int32_t>().data();
    const int32_t* fill = context->input(3).flat<int32_t>().data();
    float* rows = kept_rows.flat<float>().data();
    float* out = output->flat<float>().data();
    OP_REQUIRES_OK(context, ConvRows(context, g, context->input(0).flat<float>().data(),
                                     context->input(1).flat<float>().data(),
                                     g.batch * num_kept,
                                     [&](int64_t r, int64_t* n, int64_t* p) {
                                       *n = r / num_kept;
                                       *p = kept[r % num_kept];
                                     },
                                     rows));
    auto fill_rows = [&](int64_t first, int64_t last) {
      for (int64_t row = first; row < last; ++row) {
        const int64_t n = row / positions;
        const int64_t p = row % positions;
        std::memcpy(out + row * g.filters, rows + (n * num_kept + fill[p]) * g.filters,
                    g.filters * sizeof(float));
      }
    };
    auto* workers = context->device()->tensorflow_cpu_worker_threads();
    tensorflow::Shard(workers->num_threads, workers->workers, g.batch * positions,
                      /*cost_per_unit=*/g.filters, fill_rows);
  }
};

REGISTER_KERNEL_BUILDER(Name("PerforatedConv2D").Device(DEVICE_CPU), PerforatedConv2DCpu);

// ---- ConvAtPositions and its gradients -----------------------------------------------

Status ConvAtPositionsShape(InferenceContext* c) {
  ShapeHandle input, filter, positions;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &input));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 4, &filter));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 1, &positions));
  DimensionHandle channels;
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(input, 3), c->Dim(filter, 2), &channels));
  std::vector<int64_t> size;
  TF_RETURN_IF_ERROR(ReadAttributes(c, &size));
  c->set_output(0, c->MakeShape({c->Dim(positions, 0), c->Dim(filter, 3)}));
  return Status();
}

REGISTER_OP("ConvAtPositions")
    .Input("input: float")
    .Input("filter: float")
    .Input("positions: int32")
    .Output("rows: float")
    .Attr("strides: list(int)")
    .Attr("pads: list(int)")
    .Attr("output_size: list(int)")
    .SetShapeFn(ConvAtPositionsShape)
    .Doc(R"doc(
The convolution (NHWC input, HWIO filter, no dilation) at chosen outputs: row m is the
output at image positions[m] / P, flat position positions[m] % P, P = output_size[0] *
output_size[1]. Input pixels outside the image (padding) read zero.
)doc");

REGISTER_OP("ConvAtPositionsBackpropInput")
    .Input("input: float")
    .Input("filter: float")
    .Input("positions: int32")
    .Input("grad_rows: float")
    .Output("input_grad: float")
    .Attr("strides: list(int)")
    .Attr("pads: list(int)")
    .Attr("output_size: list(int)")
    .SetShapeFn([](InferenceContext* c) {
      TF_RETURN_IF_ERROR(ConvAtPositionsShape(c));
      c->set_output(0, c->input(0));
      return Status();
    })
    .Doc("Gradient of ConvAtPositions with respect to its input (`input` gives the shape).");

REGISTER_OP("ConvAtPositionsBackpropFilter")
    .Input("input: float")
    .Input("filter: float")
    .Input("positions: int32")
    .Input("grad_rows: float")
    .Output("filter_grad: float")
    .Attr("strides: list(int)")
    .Attr("pads: list(int)")
    .Attr("output_size: list(int)")
    .SetShapeFn([](InferenceContext* c) {
      TF_RETURN_IF_ERROR(ConvAtPositionsShape(c));
      c->set_output(0, c->input(1));
      return Status();
    })
    .Doc("Gradient of ConvAtPositions with respect to its filter (`filter` gives the shape).");

// Where row r of ConvAtPositions lives.
struct PositionTable {
  const int32_t* positions;
  int64_t per_image;
  void operator()(int64_t r, int64_t* n, int64_t* p) const {
    *n = positions[r] / per_image;
    *p = positions[r] % per_image;
  }
};

class ConvAtPositionsCpu : public ConvOpBase {
 public:
  using ConvOpBase::ConvOpBase;

  void Compute(OpKernelContext* context) override {
    Geometry g;
    const Tensor& positions = context->input(2);
    OP_REQUIRES_OK(context, ReadGeometry(context->input(0), context->input(1), &g));
    OP_REQUIRES_OK(context, CheckPositions(positions, g));
    const int64_t count = positions.dim_size(0);
    Tensor* rows = nullptr;
    OP_REQUIRES_OK(context,
                   context->allocate_output(0, TensorShape({count, g.filters}), &rows));
    OP_REQUIRES_OK(context, ConvRows(context, g, context->input(0).flat<float>().data(),
                                     context->input(1).flat<float>().data(), count,
                                     PositionTable{positions.flat<int32_t>().data(),
                                                   g.positions()},
                                     rows->flat<float>().data()));
  }
};

// The two gradients of ConvAtPositions: of its input (kInput) or of its filter.
template <bool kInput>
class ConvAtPositionsBackpropCpu : public ConvOpBase {
 public:
  using ConvOpBase::ConvOpBase;

  void Compute(OpKernelContext* context) override {
    Geometry g;
    const Tensor& input = context->input(0);
    const Tensor& filter = context->input(1);
    const Tensor& positions = context->input(2);
    const Tensor& grad_rows = context->input(3);
    OP_REQUIRES_OK(context, ReadGeometry(input, filter, &g));
    OP_REQUIRES_OK(context, CheckPositions(positions, g));
    const int64_t count = positions.dim_size(0);
    OP_REQUIRES_OK(context, CheckRows(grad_rows, count, g));
    Tensor* grad = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(
                                0, kInput ? input.shape() : filter.shape(), &grad));
    const PositionTable table{positions.flat<int32_t>().data(), g.positions()};
    if (kInput) {
      OP_REQUIRES_OK(context, ConvRowsInputGrad(context, g, filter.flat<float>().data(),
                                                grad_rows.flat<float>().data(), count, table,
                                                grad->flat<float>().data()));
    } else {
      OP_REQUIRES_OK(context, ConvRowsFilterGrad(context, g, input.flat<float>().data(),
                                                 grad_rows.flat<float>().data(), count, table,
                                                 grad->flat<float>().data()));
    }
  }
};

REGISTER_KERNEL_BUILDER(Name("ConvAtPositions").Device(DEVICE_CPU), ConvAtPositionsCpu);
REGISTER_KERNEL_BUILDER(Name("ConvAtPositionsBackpropInput").Device(DEVICE_CPU),
                        ConvAtPositionsBackpropCpu<true>);
REGISTER_KERNEL_BUILDER(Name("ConvAtPositionsBackpropFilter").Device(DEVICE_CPU),
                        ConvAtPositionsBackpropCpu<false>);

// ---- SparseResidualUnit --------------------------------------------------------------

REGISTER_OP("SparseResidualUnit")
    .Input("input: float")
    .Input("active: bool")
    .Input("kernel1: float")
    .Input("bias1: float")
    .Input("kernel2: float")
    .Input("bias2: float")
    .Output("output: float")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle input, active, kernel1, kernel2, bias;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &input));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 3, &active));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 4, &kernel1));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 1, &bias));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(4), 4, &kernel2));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(5), 1, &bias));
      c->set_output(0, input);
      return Status();
    })
    .Doc(R"doc(
Inference of a shape-preserving residual unit relu(x + conv2(relu(conv1(x) + bias1)) +
bias2) (batch normalization folded into the kernels and biases; "same" padding, stride 1,
odd kernel) at the positions where `active` (N, H, W) is true; elsewhere the output is
the input. conv1 runs at the active positions dilated by the kernel, conv2 at the active
ones, both as im2col + GEMM rows of the ConvAtPositions engine.
)doc");

class SparseResidualUnitCpu : public OpKernel {
 public:
  using OpKernel::OpKernel;

  void Compute(OpKernelContext* context) override {
    const Tensor& input = context->input(0);
    const Tensor& active = context->input(1);
    const Tensor& kernel1 = context->input(2);
    const Tensor& bias1 = context->input(3);
    const Tensor& kernel2 = context->input(4);
    const Tensor& bias2 = context->input(5);
    OP_REQUIRES(context, input.dims() == 4,
                InvalidArgument("input must be 4-D (batch, height, width, channels), got ",
                                input.shape().DebugString()));
    OP_REQUIRES(context, kernel1.dims() == 4 && kernel2.dims() == 4,
                InvalidArgument("kernel1 and kernel2 must be 4-D (k, k, in, out)"));
    const int64_t batch = input.dim_size(0), height = input.dim_size(1);
    const int64_t width = input.dim_size(2), channels = input.dim_size(3);
    const int64_t k = kernel1.dim_size(0);
    OP_REQUIRES(context, active.dims() == 3 && active.dim_size(0) == batch &&
                             active.dim_size(1) == height && active.dim_size(2) == width,
                InvalidArgument("active must have shape (batch, height, width) = (", batch,
                                ", ", height, ", ", width, "), got ",
                                active.shape().DebugString()));
    OP_REQUIRES(context, k > 0 && k % 2 == 1 && kernel1.dim_size(1) == k &&
                             kernel2.dim_size(0) == k && kernel2.dim_size(1) == k,
                InvalidArgument("kernels must be k x k with the same odd k, got ",
                                kernel1.shape().DebugString(), " and ",
                                kernel2.shape().DebugString()));
    OP_REQUIRES(context, kernel1.dim_size(2) == channels && kernel1.dim_size(3) == channels &&
                             kernel2.dim_size(2) == channels &&
                             kernel2.dim_size(3) == channels,
                InvalidArgument("the unit must preserve the shape: kernels (k, k, ", channels,
                                ", ", channels, ") expected, got ",
                                kernel1.shape().DebugString(), " and ",
                                kernel2.shape().DebugString()));
    OP_REQUIRES(context, bias1.dims() == 1 && bias1.dim_size(0) == channels &&
                             bias2.dims() == 1 && bias2.dim_size(0) == channels,
                InvalidArgument("bias1 and bias2 must have shape (", channels, ")"));
    OP_REQUIRES(context, height < (1 << 20) && width < (1 << 20) &&
                             static_cast<double>(batch) * height * width < 2.0e9,
                InvalidArgument("input too large: batch * height * width must be below 2^31"));
    Tensor* output = nullptr;
    // The output is the input with the active positions rewritten: reuse its buffer when
    // nothing else holds it, else copy it once.
    OP_REQUIRES_OK(context, context->forward_input_or_allocate_output({0}, 0, input.shape(),
                                                                      &output));
    float* out = output->flat<float>().data();
    const float* in = input.flat<float>().data();
    if (out != in) std::memcpy(out, in, input.NumElements() * sizeof(float));
    if (input.NumElements() == 0) return;

    // Active and dilated (conv1 is needed wherever conv2 reads) flat positions.
    const bool* mask = active.flat<bool>().data();
    const int64_t per_image = height * width;
    const int64_t radius = k / 2;
    std::vector<int32_t> active_positions;
    std::vector<uint8_t> needed(batch * per_image, 0);
    for (int64_t index = 0; index < batch * per_image; ++index) {
      if (!mask[index]) continue;
      active_positions.push_back(static_cast<int32_t>(index));
      const int64_t n = index / per_image, y = (index % per_image) / width, x = index % width;
      for (int64_t i = std::max<int64_t>(0, y - radius); i <= std::min(height - 1, y + radius);
           ++i) {
        std::fill(needed.begin() + n * per_image + i * width + std::max<int64_t>(0, x - radius),
                  needed.begin() + n * per_image + i * width +
                      std::min(width - 1, x + radius) + 1,
                  uint8_t{1});
      }
    }
    if (active_positions.empty()) return;
    std::vector<int32_t> dilated_positions;
    for (int64_t index = 0; index < batch * per_image; ++index) {
      if (needed[index]) dilated_positions.push_back(static_cast<int32_t>(index));
    }

    Geometry g{batch, height, width, channels, k, k, channels, 1, 1, radius, radius,
               height, width};
    // conv1 rows at the dilated positions, then relu(+ bias1) written into a hidden map
    // whose other positions are never read (conv2 at an active position reads only its
    // dilated neighbourhood).
    Tensor hidden_rows, hidden_map, residual_rows;
    const int64_t dilated = dilated_positions.size();
    const int64_t count = active_positions.size();
    OP_REQUIRES_OK(context, context->allocate_temp(tensorflow::DT_FLOAT,
                                                   TensorShape({dilated, channels}),
                                                   &hidden_rows));
    OP_REQUIRES_OK(context, context->allocate_temp(tensorflow::DT_FLOAT, input.shape(),
                                                   &hidden_map));
    OP_REQUIRES_OK(context, context->allocate_temp(tensorflow::DT_FLOAT,
                                                   TensorShape({count, channels}),
                                                   &residual_rows));
    OP_REQUIRES_OK(context, ConvRows(context, g, in, kernel1.flat<float>().data(), dilated,
                                     PositionTable{dilated_positions.data(), per_image},
                                     hidden_rows.flat<float>().data()));
    const float* b1 = bias1.flat<float>().data();
    const float* b2 = bias2.flat<float>().data();
    float* hidden = hidden_map.flat<float>().data();
    const float* rows1 = hidden_rows.flat<float>().data();
    ForEachPart(context, std::min<int64_t>(WorkerCount(context), dilated), [&](int64_t part) {
      const int64_t parts = std::min<int64_t>(WorkerCount(context), dilated);
      for (int64_t r = dilated * part / parts; r < dilated * (part + 1) / parts; ++r) {
        float* dst = hidden + static_cast<int64_t>(dilated_positions[r]) * channels;
        const float* src = rows1 + r * channels;
        for (int64_t c = 0; c < channels; ++c) dst[c] = std::max(src[c] + b1[c], 0.0f);
      }
    });
    OP_REQUIRES_OK(context, ConvRows(context, g, hidden, kernel2.flat<float>().data(), count,
                                     PositionTable{active_positions.data(), per_image},
                                     residual_rows.flat<float>().data()));
    const float* rows2 = residual_rows.flat<float>().data();
    ForEachPart(context, std::min<int64_t>(WorkerCount(context), count), [&](int64_t part) {
      const int64_t parts = std::min<int64_t>(WorkerCount(context), count);
      for (int64_t r = count * part / parts; r < count * (part + 1) / parts; ++r) {
        float* dst = out + static_cast<int64_t>(active_positions[r]) * channels;
        const float* src = rows2 + r * channels;
        for (int64_t c = 0; c < channels; ++c) dst[c] = std::max(dst[c] + src[c] + b2[c], 0.0f);
      }
    });
  }
};

REGISTER_KERNEL_BUILDER(Name("SparseResidualUnit").Device(DEVICE_CPU), SparseResidualUnitCpu);

#if GOOGLE_CUDA
// The index tables stay in host memory: they are validated on the host before launch.
class PerforatedConv2DGpu : public PerforatedConv2DBase {
 public:
  using PerforatedConv2DBase::PerforatedConv2DBase;

  void Compute(OpKernelContext* context) override {
    Geometry g;
    int64_t num_kept = 0;
    OP_REQUIRES_OK(context, Validate(context, &g, &num_kept));
    // What the CUDA kernel cannot launch is refused here, as InvalidArgument like every
    // other bad shape, instead of failing inside the launch as an Internal error.
    OP_REQUIRES(context, g.depth() * static_cast<int64_t>(sizeof(float)) <= kMaxSharedBytes,
                InvalidArgument("on GPU, kh * kw * in_channels = ", g.depth(),
                                " exceeds the kernel's shared memory (",
                                kMaxSharedBytes / sizeof(float), " floats)"));
    OP_REQUIRES(context, g.batch * num_kept <= kMaxBlocks,
                InvalidArgument("on GPU, batch * kept = ", g.batch * num_kept,
                                " exceeds the CUDA grid (", kMaxBlocks, " blocks)"));
    Tensor* output = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(
                                0, TensorShape({g.batch, g.out_h, g.out_w, g.filters}),
                                &output));
    Tensor tables;
    OP_REQUIRES_OK(context, context->allocate_temp(tensorflow::DT_INT32,
                                                   TensorShape({num_kept + g.positions()}),
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
                    g.out_h, g.out_w, num_kept),
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
