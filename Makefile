# Every target creates .venv at the repo root when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install demo test test-slow bench clean ops ops-optional ops-asan ops-cuda fuzz

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP) ops-optional
	$(VENV)/bin/tfpriors demo

test: $(STAMP) ops-optional
	$(PY) -m pytest -n 2 -q

test-slow: $(STAMP) ops-optional
	$(PY) -m pytest -n 2 -q -m slow

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[test,bench]"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) ops-optional
	$(PY) bench/run_all.py

# Fused perforated convolution (custom_ops/) -> tfpriors/ops/*.so, with tf.sysconfig flags.
OPS_LIB := tfpriors/ops/_perforated_conv.so
CXX ?= g++

ops: $(OPS_LIB)

$(OPS_LIB): custom_ops/perforated_conv.cc custom_ops/build.py | $(STAMP)
	$(PY) custom_ops/build.py

# Builds the op when a C++ compiler exists; without one the Python falls back to pure TF.
ops-optional: $(STAMP)
	@if command -v $(CXX) >/dev/null 2>&1; then $(MAKE) --no-print-directory ops || \
	  echo "warning: building the fused op failed; the pure-TF path will be used"; \
	else echo "no C++ compiler ($(CXX)): skipping the fused op (pure-TF path)"; fi

ops-asan: $(STAMP)
	$(PY) custom_ops/build.py --asan

# Fuzzing of the op (fuzz/) under ASan + UBSan for FUZZ_SECONDS; summary in
# bench/results/fuzz.json, reproducers in fuzz/artifacts/.
FUZZ_SECONDS ?= 600
FUZZ_STAMP := $(VENV)/.installed-fuzz
FUZZ_LIB := tfpriors/ops/_perforated_conv_fuzz.so
FUZZ_COVERAGE := build/fuzz_coverage.so

$(FUZZ_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[test,fuzz]"
	touch $(FUZZ_STAMP)

# One build.py --fuzz makes both: the instrumented op and the coverage bridge it needs.
$(FUZZ_LIB) $(FUZZ_COVERAGE) &: custom_ops/perforated_conv.cc custom_ops/fuzz_coverage.c \
		custom_ops/build.py | $(STAMP)
	$(PY) custom_ops/build.py --fuzz

fuzz: $(FUZZ_STAMP) $(FUZZ_LIB) $(FUZZ_COVERAGE)
	$(PY) fuzz/run_fuzz.py --seconds $(FUZZ_SECONDS)

# Compile check of the CUDA kernels with nvcc (no GPU needed to compile).
ops-cuda: $(STAMP)
	$(PY) custom_ops/build.py --cuda

clean:
	rm -rf $(VENV) build *.egg-info
