// The GEMM of the convolutions at chosen positions: C = A B with A the im2col rows
// (row-major, any number of rows) and B the filter, packed once per op call into
// panels of NR columns (K x NR floats each, zero-padded), so that every micro-tile reads
// B sequentially and keeps an MR x NR block of C in registers over the whole K.
//
// One AVX-512 micro-kernel (12 x 32 tile: 24 accumulators), used when the CPU has
// AVX-512 (checked at run time: the library itself is compiled for baseline x86-64). It
// runs on each worker thread of TensorFlow's pool, one block of rows each. Other CPUs
// use OpenBLAS, whose AVX2 kernels beat a hand-written one there (an AVX2 version of
// this kernel ran 2.2x slower than OpenBLAS on the benchmark's shapes).

#ifndef TFPRIORS_PACKED_GEMM_H_
#define TFPRIORS_PACKED_GEMM_H_

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace tfpriors {
namespace packed_gemm {

enum class Kernel : int { kNone = 0, kAvx512 = 1 };

// The packed kernel this CPU runs, if any (checked by CPUID).
inline Kernel Detect() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") ? Kernel::kAvx512 : Kernel::kNone;
}

inline bool Supported(Kernel kernel) {
  return kernel == Kernel::kNone || Detect() == Kernel::kAvx512;
}

inline int64_t PanelWidth(Kernel) { return 32; }

// Floats of the packed B (k x n) for `kernel`.
inline int64_t PackedSize(Kernel kernel, int64_t k, int64_t n) {
  const int64_t width = PanelWidth(kernel);
  return ((n + width - 1) / width) * width * k;
}

inline int64_t Panels(Kernel kernel, int64_t n) {
  return (n + PanelWidth(kernel) - 1) / PanelWidth(kernel);
}

// Packs panels [first, last) of B(i, j) = b[i * row_stride + j * col_stride] (k x n),
// panels of NR columns each.
inline void PackB(Kernel kernel, const float* b, int64_t row_stride, int64_t col_stride,
                  int64_t k, int64_t n, float* packed, int64_t first, int64_t last) {
  const int64_t width = PanelWidth(kernel);
  for (int64_t c0 = first * width; c0 < std::min(n, last * width); c0 += width) {
    const int64_t cols = std::min(width, n - c0);
    float* dst = packed + c0 * k;
    for (int64_t i = 0; i < k; ++i, dst += width) {
      const float* src = b + i * row_stride + c0 * col_stride;
      if (col_stride == 1) {
        std::memcpy(dst, src, cols * sizeof(float));
      } else {
        for (int64_t j = 0; j < cols; ++j) dst[j] = src[j * col_stride];
      }
      std::fill(dst + cols, dst + width, 0.0f);
    }
  }
}

// ---- AVX-512 ---------------------------------------------------------------------------

// C[0:MR, 0:cols] (+)= A[0:MR, 0:k] panel[0:k, 0:32]; adds to C when `accumulate`.
template <int MR>
__attribute__((target("avx512f"))) inline void Tile512(const float* a, int64_t lda,
                                                       const float* panel, int64_t k,
                                                       float* c, int64_t ldc, int64_t cols,
                                                       bool accumulate) {
  const __mmask16 m0 = cols >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << cols) - 1);
  const __mmask16 m1 =
      cols >= 32 ? 0xFFFF : cols > 16 ? static_cast<__mmask16>((1u << (cols - 16)) - 1) : 0;
  __m512 low[MR], high[MR];
  for (int i = 0; i < MR; ++i) {
    low[i] = accumulate ? _mm512_maskz_loadu_ps(m0, c + i * ldc) : _mm512_setzero_ps();
    high[i] = accumulate ? _mm512_maskz_loadu_ps(m1, c + i * ldc + 16) : _mm512_setzero_ps();
  }
  for (int64_t kk = 0; kk < k; ++kk) {
    const __m512 b0 = _mm512_loadu_ps(panel + kk * 32);
    const __m512 b1 = _mm512_loadu_ps(panel + kk * 32 + 16);
    for (int i = 0; i < MR; ++i) {
      const __m512 ai = _mm512_set1_ps(a[i * lda + kk]);
      low[i] = _mm512_fmadd_ps(ai, b0, low[i]);
      high[i] = _mm512_fmadd_ps(ai, b1, high[i]);
    }
  }
  for (int i = 0; i < MR; ++i) {
    _mm512_mask_storeu_ps(c + i * ldc, m0, low[i]);
    _mm512_mask_storeu_ps(c + i * ldc + 16, m1, high[i]);
  }
}

// ---- dispatch --------------------------------------------------------------------------

// C (m x n, row stride ldc) = A (m x k, row stride lda) times the packed B.
inline void Multiply(Kernel kernel, int64_t m, int64_t n, int64_t k, const float* a,
                     int64_t lda, const float* packed, float* c, int64_t ldc) {
  if (kernel == Kernel::kAvx512) {  // the only packed kernel
    // Depth in slices whose 32-column panel slice (kKc x 32 floats, 32 KiB) stays in L1
    // while every row tile of A multiplies it; C is reloaded once per slice.
    constexpr int64_t kKc = 256;
    for (int64_t k0 = 0; k0 < k; k0 += kKc) {
      const int64_t kc = std::min(kKc, k - k0);
      for (int64_t c0 = 0; c0 < n; c0 += 32) {
        const float* panel = packed + c0 * k;
        const int64_t width = std::min<int64_t>(32, n - c0);
        int64_t i = 0;
        for (; i + 12 <= m; i += 12) {
          Tile512<12>(a + i * lda + k0, lda, panel + k0 * 32, kc, c + i * ldc + c0, ldc,
                      width, k0 > 0);
        }
        const float* rest_a = a + i * lda + k0;
        float* rest_c = c + i * ldc + c0;
        const float* rest_b = panel + k0 * 32;
        const bool more = k0 > 0;
        switch (m - i) {
          case 11: Tile512<11>(rest_a, lda, rest_b, kc, rest_c, ldc, width, more); break;
          case 10: Tile512<10>(rest_a, lda, rest_b, kc, rest_c, ldc, width, more); break;
          case 9: Tile512<9>(rest_a, lda, rest_b, kc, rest_c, ldc, width, more); break;
          case 8: Tile512<8>(rest_a, lda, rest_b, kc, rest_c, ldc, width, more); break;
          case 7: Tile512<7>(rest_a, lda, rest_b, kc, rest_c, ldc, width, more); break;
          case 6: Tile512<6>(rest_a, lda, rest_b, kc, rest_c, ldc, width, more); break;
          case 5: Tile512<5>(rest_a, lda, rest_b, kc, rest_c, ldc, width, more); break;
          case 4: Tile512<4>(rest_a, lda, rest_b, kc, rest_c, ldc, width, more); break;
          case 3: Tile512<3>(rest_a, lda, rest_b, kc, rest_c, ldc, width, more); break;
          case 2: Tile512<2>(rest_a, lda, rest_b, kc, rest_c, ldc, width, more); break;
          case 1: Tile512<1>(rest_a, lda, rest_b, kc, rest_c, ldc, width, more); break;
          default: break;
        }
      }
    }
  }
}

}  // namespace packed_gemm
}  // namespace tfpriors

#endif  // TFPRIORS_PACKED_GEMM_H_
