// Coverage bridge between a g++-instrumented op and the libFuzzer inside atheris.
//
// g++ has no -fsanitize=fuzzer: its -fsanitize-coverage=trace-pc calls
// __sanitizer_cov_trace_pc() in every basic block, which libFuzzer does not read. This
// library (LD_PRELOADed first by fuzz/run_fuzz.py) turns those calls into AFL-style
// edge counters (hash of the previous and the current block) registered with libFuzzer,
// and forwards the comparison hooks (trace-cmp) to libFuzzer, so it mutates towards the
// constants the op compares against.
//
// It also fixes a shadowing problem: the preloaded libasan defines no-op weak versions
// of the __sanitizer_cov_* hooks, which would otherwise win over atheris' own
// (its Python coverage). Every hook here forwards to the symbol in atheris' libFuzzer
// module, found through ATHERIS_LIBFUZZER (a path) once atheris has loaded it.

#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define EDGE_COUNTERS (1 << 16)

static uint8_t edge_counters[EDGE_COUNTERS];
static uintptr_t edge_pcs[2 * EDGE_COUNTERS];  // libFuzzer's PC table: (pc, flags) pairs
static int registered;
static __thread uintptr_t previous_block;

static void* libfuzzer_handle;

// atheris' libFuzzer module once it is loaded (NULL before: the hooks do nothing yet).
static void* libfuzzer(void) {
  if (libfuzzer_handle == NULL) {
    const char* path = getenv("ATHERIS_LIBFUZZER");
    if (path != NULL) libfuzzer_handle = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
  }
  return libfuzzer_handle;
}

static void* real(const char* name) {
  void* handle = libfuzzer();
  return handle == NULL ? NULL : dlsym(handle, name);
}

#define FORWARD(name, params, args)                            \
  void name params {                                           \
    static void (*target) params;                              \
    if (target == NULL) target = (void(*) params)real(#name);  \
    if (target != NULL) target args;                           \
  }

FORWARD(__sanitizer_cov_8bit_counters_init, (uint8_t* start, uint8_t* stop), (start, stop))
FORWARD(__sanitizer_cov_pcs_init, (const uintptr_t* start, const uintptr_t* stop),
        (start, stop))
FORWARD(__sanitizer_cov_trace_cmp1, (uint8_t a, uint8_t b), (a, b))
FORWARD(__sanitizer_cov_trace_cmp2, (uint16_t a, uint16_t b), (a, b))
FORWARD(__sanitizer_cov_trace_cmp4, (uint32_t a, uint32_t b), (a, b))
FORWARD(__sanitizer_cov_trace_cmp8, (uint64_t a, uint64_t b), (a, b))
FORWARD(__sanitizer_cov_trace_const_cmp1, (uint8_t a, uint8_t b), (a, b))
FORWARD(__sanitizer_cov_trace_const_cmp2, (uint16_t a, uint16_t b), (a, b))
FORWARD(__sanitizer_cov_trace_const_cmp4, (uint32_t a, uint32_t b), (a, b))
FORWARD(__sanitizer_cov_trace_const_cmp8, (uint64_t a, uint64_t b), (a, b))
FORWARD(__sanitizer_cov_trace_switch, (uint64_t value, uint64_t* cases), (value, cases))

// Floating-point comparisons (g++ emits them with trace-cmp; libFuzzer has no use for them).
void __sanitizer_cov_trace_cmpf(float a, float b) { (void)a; (void)b; }
void __sanitizer_cov_trace_cmpd(double a, double b) { (void)a; (void)b; }

void __sanitizer_cov_trace_pc(void) {
  const uintptr_t pc = (uintptr_t)__builtin_return_address(0);
  const uintptr_t block = (pc ^ (pc >> 16)) * 0x9E3779B1u;
  // Racy increments from TensorFlow's worker threads only lose counts, never memory.
  edge_counters[(block ^ previous_block) % EDGE_COUNTERS]++;
  previous_block = block >> 1;
}

// Called by the fuzz driver (ctypes) before atheris.Fuzz(). atheris loads its libFuzzer
// module only inside Fuzz(), so it is loaded here first (Fuzz() then gets the same one)
// and the edge counters are registered before libFuzzer starts.
// Returns 1 when the edge counters reached libFuzzer, 0 when its module was not found.
int tfpriors_register_native_coverage(void) {
  if (registered) return 1;
  const char* path = getenv("ATHERIS_LIBFUZZER");
  if (libfuzzer_handle == NULL && path != NULL) libfuzzer_handle = dlopen(path, RTLD_NOW);
  if (real("__sanitizer_cov_8bit_counters_init") == NULL) return 0;
  for (int i = 0; i < EDGE_COUNTERS; ++i) edge_pcs[2 * i] = (uintptr_t)&edge_counters[i];
  __sanitizer_cov_8bit_counters_init(edge_counters, edge_counters + EDGE_COUNTERS);
  __sanitizer_cov_pcs_init(edge_pcs, edge_pcs + 2 * EDGE_COUNTERS);
  registered = 1;
  return 1;
}
