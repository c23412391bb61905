# Every target creates .venv at the repo root when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install demo test test-slow bench clean ops ops-if-compiler ops-asan ops-cuda fuzz wheel \
	format

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

# The demo (Sparse VD on digits) uses no compiled op: it compiles nothing.
demo: $(STAMP)
	$(VENV)/bin/tfpriors demo

# Lint and format check first (seconds), then the tests.
test: $(STAMP) ops-if-compiler
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -n 2 -q

test-slow: $(STAMP) ops-if-compiler
	$(PY) -m pytest -n 2 -q -m slow

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[test,bench]"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) ops-if-compiler
	$(PY) bench/run_all.py

# Fused perforated convolution (custom_ops/) -> tfpriors/ops/*.so, with tf.sysconfig flags
# and no CPU-specific flag: the library loads on every x86-64 machine.
OPS_LIB := tfpriors/ops/_perforated_conv.so
CXX ?= g++

ops: $(OPS_LIB)

$(OPS_LIB): custom_ops/perforated_conv.cc custom_ops/packed_gemm.h custom_ops/lrt_sample.cc \
		custom_ops/philox_normal.h custom_ops/philox_normal_simd.inc custom_ops/build.py | $(STAMP)
	$(PY) custom_ops/build.py

# Builds the op whenever a C++ compiler exists, and then a failure stops `make test` with
# the compiler's first error (the op tests also fail when the op does not load). Without
# a compiler the Python falls back to pure TF and the op tests are skipped.
ops-if-compiler: $(STAMP)
	@if command -v $(CXX) >/dev/null 2>&1; then $(MAKE) --no-print-directory ops; \
	else echo "no C++ compiler ($(CXX)): skipping the fused op (pure-TF path)"; fi

# A wheel with the compiled op inside (python -m build; the op is compiled against the
# TensorFlow of the isolated build environment).
wheel: $(STAMP)
	$(PY) -m pip install --quiet "build>=1.2,<2"
	$(PY) -m build --wheel --outdir dist

ops-asan: $(STAMP)
	$(PY) custom_ops/build.py --asan

# Fuzzing of the ops (fuzz/) under ASan + UBSan for FUZZ_SECONDS, split between the
# targets of FUZZ_TARGET (perforated_conv, lrt_sample or all); summary in
# bench/results/fuzz.json, reproducers in fuzz/artifacts/<target>/.
FUZZ_SECONDS ?= 600
FUZZ_TARGET ?= all
FUZZ_STAMP := $(VENV)/.installed-fuzz
FUZZ_LIB := tfpriors/ops/_perforated_conv_fuzz.so
FUZZ_COVERAGE := build/fuzz_coverage.so

$(FUZZ_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[test,fuzz]"
	touch $(FUZZ_STAMP)

# One build.py --fuzz makes both: the instrumented op and the coverage bridge it needs.
$(FUZZ_LIB) $(FUZZ_COVERAGE) &: custom_ops/perforated_conv.cc custom_ops/packed_gemm.h custom_ops/fuzz_coverage.c \
		custom_ops/lrt_sample.cc custom_ops/philox_normal.h custom_ops/philox_normal_simd.inc \
		custom_ops/build.py | $(STAMP)
	$(PY) custom_ops/build.py --fuzz

fuzz: $(FUZZ_STAMP) $(FUZZ_LIB) $(FUZZ_COVERAGE)
	$(PY) fuzz/run_fuzz.py --seconds $(FUZZ_SECONDS) --target $(FUZZ_TARGET)

# The library with the CUDA kernel registered as the GPU kernel of PerforatedConv2D
# (tfpriors/ops/_perforated_conv_gpu.so, loaded instead of the CPU one when TensorFlow
# sees a GPU). The CUDA 13 toolkit comes from PyPI (extra `cuda`); no GPU is needed to
# build it. custom_ops/device_check.sh tests and times the kernel on a GPU.
CUDA_STAMP := $(VENV)/.installed-cuda

$(CUDA_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[test,cuda]"
	touch $(CUDA_STAMP)

ops-cuda: $(CUDA_STAMP)
	$(PY) custom_ops/build.py --cuda

# Rewrites the code in the project's format and fixes what the linter can.
format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean:
	rm -rf $(VENV) build dist *.egg-info
