// Gaussian noise from a counter: Philox-4x32-10 and the Box-Muller transform.
//
// The stream is TensorFlow's StatelessRandomNormalV2(key, counter, alg=Philox): element
// i of a draw is lane i % 4 of the Philox block at `counter + i / 4` (a 128-bit add), and
// each pair of lanes (x0, x1) gives sqrt(-2 log u(x0)) * (sin, cos)(2 pi u(x1)), where
// u(x) in [0, 1) has the low 23 bits of x as its mantissa and u(x0) is at least 1e-7.
// So a value depends on (key, counter, i) alone: any element can be drawn, by any
// thread, in any order, and redrawn for the gradient, without storing the noise.
//
// Three implementations of the same numbers:
// - Block (scalar, host and CUDA device): one Philox block -> 4 normals;
// - FillNormalsVector<W> (host): W blocks at a time in GCC vector extensions, compiled
//   for AVX2 (W = 8) and AVX-512 (W = 16) in functions with those targets and chosen at
//   run time (CPUID), so the library itself needs no -m flag;
// - FillNormals: the dispatcher over a run of elements.
// The vector log and sine/cosine are minimax polynomials (single precision, Cephes' coefficients)
// within 2 ulp of libm's; sine and cosine take the angle in turns, so their range
// reduction is exact.
#ifndef TFPRIORS_PHILOX_NORMAL_H_
#define TFPRIORS_PHILOX_NORMAL_H_

#include <cstdint>
#include <cstring>

#include <cmath>

#ifdef __CUDACC__
#define TFPRIORS_HOST_DEVICE __host__ __device__
#else
#define TFPRIORS_HOST_DEVICE
#include <immintrin.h>
#endif

namespace tfpriors {
namespace philox {

// Philox-4x32-10 constants (Salmon et al., SC'11; the values TensorFlow uses).
constexpr uint32_t kMulA = 0xD2511F53u;
constexpr uint32_t kMulB = 0xCD9E8D57u;
constexpr uint32_t kKeyA = 0x9E3779B9u;
constexpr uint32_t kKeyB = 0xBB67AE85u;
constexpr int kRounds = 10;
// Box-Muller's floor on the first uniform (keeps log finite; TensorFlow's value).
constexpr float kMinUniform = 1.0e-7f;
constexpr float kTwoPi = 6.283185307179586f;

// The key (2 words) and the 128-bit counter (4 words, lowest first) of a stream.
struct Stream {
  uint32_t key[2];
  uint32_t counter[4];
};

// The stream of TensorFlow's key (uint64) and counter (two uint64, lowest first).
TFPRIORS_HOST_DEVICE inline Stream MakeStream(uint64_t key, uint64_t counter_low,
                                              uint64_t counter_high) {
  Stream s;
  s.key[0] = static_cast<uint32_t>(key);
  s.key[1] = static_cast<uint32_t>(key >> 32);
  s.counter[0] = static_cast<uint32_t>(counter_low);
  s.counter[1] = static_cast<uint32_t>(counter_low >> 32);
  s.counter[2] = static_cast<uint32_t>(counter_high);
  s.counter[3] = static_cast<uint32_t>(counter_high >> 32);
  return s;
}

// The counter of block `block` of the stream: counter + block, modulo 2^128.
TFPRIORS_HOST_DEVICE inline void BlockCounter(const Stream& s, uint64_t block,
                                              uint32_t out[4]) {
  const uint64_t low = (static_cast<uint64_t>(s.counter[1]) << 32) | s.counter[0];
  const uint64_t sum = low + block;
  const uint64_t carry = sum < low ? 1 : 0;
  const uint64_t high = ((static_cast<uint64_t>(s.counter[3]) << 32) | s.counter[2]) + carry;
  out[0] = static_cast<uint32_t>(sum);
  out[1] = static_cast<uint32_t>(sum >> 32);
  out[2] = static_cast<uint32_t>(high);
  out[3] = static_cast<uint32_t>(high >> 32);
}

// 4 uniform words of one block: ten Philox rounds on the block's counter.
TFPRIORS_HOST_DEVICE inline void PhiloxWords(const Stream& s, uint64_t block, uint32_t x[4]) {
  uint32_t c[4];
  BlockCounter(s, block, c);
  uint32_t k0 = s.key[0], k1 = s.key[1];
  for (int round = 0; round < kRounds; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(kMulA) * c[0];
    const uint64_t p1 = static_cast<uint64_t>(kMulB) * c[2];
    const uint32_t next0 = static_cast<uint32_t>(p1 >> 32) ^ c[1] ^ k0;
    const uint32_t next2 = static_cast<uint32_t>(p0 >> 32) ^ c[3] ^ k1;
    c[1] = static_cast<uint32_t>(p1);
    c[3] = static_cast<uint32_t>(p0);
    c[0] = next0;
    c[2] = next2;
    k0 += kKeyA;
    k1 += kKeyB;
  }
  for (int i = 0; i < 4; ++i) x[i] = c[i];
}

// A uniform word -> float in [0, 1): its low 23 bits as the mantissa of [1, 2), minus 1.
TFPRIORS_HOST_DEVICE inline float UniformFloat(uint32_t x) {
  const uint32_t bits = (127u << 23) | (x & 0x7fffffu);
  float value;
#ifdef __CUDA_ARCH__
  value = __uint_as_float(bits);
#else
  std::memcpy(&value, &bits, sizeof(value));
#endif
  return value - 1.0f;
}

// The 4 normals of block `block` (scalar; the reference of the vector code).
TFPRIORS_HOST_DEVICE inline void Block(const Stream& s, uint64_t block, float out[4]) {
  uint32_t x[4];
  PhiloxWords(s, block, x);
  for (int i = 0; i < 4; i += 2) {
    float u = UniformFloat(x[i]);
    if (u < kMinUniform) u = kMinUniform;
    const float radius = sqrtf(-2.0f * logf(u));
    float sine, cosine;
#ifdef __CUDA_ARCH__
    sincospif(2.0f * UniformFloat(x[i + 1]), &sine, &cosine);
#else
    const double angle = 6.283185307179586 * UniformFloat(x[i + 1]);
    sine = static_cast<float>(std::sin(angle));
    cosine = static_cast<float>(std::cos(angle));
#endif
    out[i] = radius * sine;
    out[i + 1] = radius * cosine;
  }
}

#ifndef __CUDACC__

// ---- W blocks at a time: philox_normal_simd.inc, compiled once per instruction set ------

// Each copy sits in a `#pragma GCC target` region, so that every function in it (and the
// intrinsics it calls) is compiled for that instruction set; the library's other code
// stays baseline x86-64 and calls a copy only where CPUID says the CPU runs it.
#pragma GCC push_options
#pragma GCC target("avx512f")
namespace avx512 {
#define TFPRIORS_SIMD_WIDTH 16
#include "philox_normal_simd.inc"
#undef TFPRIORS_SIMD_WIDTH
}  // namespace avx512
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
#define TFPRIORS_SIMD_WIDTH 8
#include "philox_normal_simd.inc"
#undef TFPRIORS_SIMD_WIDTH
}  // namespace avx2
#pragma GCC pop_options

enum class Isa : int { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

// The widest vector code this CPU runs (CPUID).
inline Isa DetectIsa() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return Isa::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
  return Isa::kScalar;
}

inline bool IsaSupported(Isa isa) { return static_cast<int>(isa) <= static_cast<int>(DetectIsa()); }

// Elements per chunk: the noise of one chunk lives on the stack (L1) between its draw
// and its use, and a chunk is the unit of work of the thread pool.
constexpr int64_t kChunk = 2048;

enum class Combine : int { kSample = 0, kVarianceGrad = 1 };

// One chunk of the op: elements [global_first, global_first + n) of the stream (n at
// most kChunk). kSample: out = a + sqrt(variance + floor) * eps (a = the mean);
// kVarianceGrad: out = a * eps / (2 sqrt(variance + floor)) (a = the incoming gradient).
inline void Chunk(Isa isa, Combine combine, const Stream& s, uint64_t global_first, int64_t n,
                  const float* a, const float* variance, float floor, float* out) {
  alignas(64) float eps[kChunk + 8];
  const uint64_t first_block = global_first / 4;
  const int64_t lead = static_cast<int64_t>(global_first % 4);
  const int64_t blocks = (lead + n + 3) / 4;
  const float* noise = eps + lead;
  switch (isa) {
    case Isa::kAvx512:
      avx512::FillBlocks(s, first_block, blocks, eps);
      if (combine == Combine::kSample) {
        avx512::CombineSample(a, variance, noise, out, n, floor);
      } else {
        avx512::CombineVarianceGrad(a, variance, noise, out, n, floor);
      }
      return;
    case Isa::kAvx2:
      avx2::FillBlocks(s, first_block, blocks, eps);
      if (combine == Combine::kSample) {
        avx2::CombineSample(a, variance, noise, out, n, floor);
      } else {
        avx2::CombineVarianceGrad(a, variance, noise, out, n, floor);
      }
      return;
    default:
      for (int64_t b = 0; b < blocks; ++b) Block(s, first_block + b, eps + 4 * b);
      for (int64_t i = 0; i < n; ++i) {
        const float root = std::sqrt(variance[i] + floor);
        out[i] = combine == Combine::kSample ? a[i] + root * noise[i]
                                             : (0.5f * a[i] * noise[i]) / root;
      }
  }
}

#endif  // __CUDACC__

}  // namespace philox
}  // namespace tfpriors

#endif  // TFPRIORS_PHILOX_NORMAL_H_
