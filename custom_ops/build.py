"""Builds the compiled ops with TensorFlow's own compile and link flags.

One library holds them all: the fused perforated convolution (perforated_conv.cc) and
the fused local-reparameterization noise (lrt_sample.cc).

python custom_ops/build.py             # tfpriors/ops/_perforated_conv.so (g++, -O3, any x86-64)
python custom_ops/build.py --asan      # tfpriors/ops/_perforated_conv_asan.so
python custom_ops/build.py --fuzz      # tfpriors/ops/_perforated_conv_fuzz.so (ASan + UBSan +
                                       # coverage) and build/fuzz_coverage.so (make fuzz)
python custom_ops/build.py --cuda      # tfpriors/ops/_perforated_conv_gpu.so: the same ops with
                                       # the CUDA kernel registered for the GPU
"""

import argparse
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# The C++ sources of the library, and the CUDA sources of its GPU kernels.
CPU_SOURCES = ("perforated_conv.cc", "lrt_sample.cc")
CUDA_SOURCES = ("perforated_conv_gpu.cu.cc", "lrt_sample_gpu.cu.cc")
ROOT = os.path.dirname(HERE)
OPS_DIR = os.path.join(ROOT, "tfpriors", "ops")


def tf_flags():
    """TensorFlow's compile and link flags, and its version (recorded in the library)."""
    import tensorflow as tf

    version = [f'-DTFPRIORS_TF_VERSION="{tf.__version__}"']
    return tf.sysconfig.get_compile_flags() + version, tf.sysconfig.get_link_flags()


class BuildError(RuntimeError):
    """A compiler failed; the message holds its first error."""


def first_error(output):
    """The compiler's first error line (and the line after it), else its last lines."""
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if "error" in line.lower():
            return "\n".join(lines[i : i + 2])
    return "\n".join(lines[-5:])


def run(command):
    print(" ".join(command), flush=True)
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise BuildError(
            f"{os.path.basename(command[0])} failed (exit {result.returncode}): "
            f"{first_error(result.stdout + result.stderr)}"
        )
    print(f"  done in {time.perf_counter() - start:.0f} s", flush=True)


# The fuzzing build (fuzz/run_fuzz.py) adds UBSan's arithmetic checks to ASan: a signed
# overflow in the shape function or the kernel aborts instead of passing silently. Not
# all of -fsanitize=undefined: with g++ 12 its pointer checks make absl's constexpr hash
# tables (included by op.h) fail to compile.
UNDEFINED_CHECKS = (
    "signed-integer-overflow,shift,integer-divide-by-zero,vla-bound,bounds,"
    "float-cast-overflow,bool,enum,return,unreachable"
)
# trace-pc / trace-cmp feed libFuzzer through build/fuzz_coverage.so (fuzz_coverage.c),
# without which the fuzzing build does not load. Its im2col chunks are a few rows, so that
# the small shapes the fuzzer makes still cross chunk boundaries.
SANITIZER_FLAGS = {
    "asan": ["-O1", "-g", "-fsanitize=address", "-fno-omit-frame-pointer"],
    "fuzz": [
        "-O1",
        "-g",
        f"-fsanitize=address,{UNDEFINED_CHECKS}",
        "-fno-sanitize-recover=all",
        "-fno-omit-frame-pointer",
        "-fsanitize-coverage=trace-pc,trace-cmp",
        "-DTFPRIORS_CHUNK_FLOATS=256",
        "-DTFPRIORS_MIN_CHUNK_ROWS=3",
    ],
}
FUZZ_COVERAGE = os.path.join(ROOT, "build", "fuzz_coverage.so")


# No -march: the library must load on every x86-64 CPU (and -march=native makes g++ 12
# define __AVX512FP16__ on such Xeons, where TensorFlow's bundled Eigen does not compile).
# The wide-SIMD work is OpenBLAS' sgemm, which picks its kernel for the CPU at run time;
# what is compiled here is index arithmetic and memcpy (glibc dispatches that too).
PORTABLE_FLAGS = ["-O3", "-mtune=generic"]


def build_cpu(variant=None, ops_dir=OPS_DIR):
    """Builds the CPU op: optimised (``variant=None``), ``"asan"`` or ``"fuzz"``.

    Returns the path of the library, written atomically into ``ops_dir``.
    """
    compile_flags, link_flags = tf_flags()
    cxx = os.environ.get("CXX", "g++")
    name = f"_perforated_conv_{variant}.so" if variant else "_perforated_conv.so"
    os.makedirs(ops_dir, exist_ok=True)
    target = os.path.join(ops_dir, name)
    temporary = target + ".tmp"
    optimise = SANITIZER_FLAGS[variant] if variant else PORTABLE_FLAGS
    run(
        [
            cxx,
            "-shared",
            "-fPIC",
            *optimise,
            "-w",
            *compile_flags,
            *(os.path.join(HERE, source) for source in CPU_SOURCES),
            "-o",
            temporary,
            *link_flags,
        ]
    )
    os.replace(temporary, target)
    print(f"built {target}")
    return target


def build_fuzz_coverage():
    """The LD_PRELOAD library that hands the fuzzing build's coverage to libFuzzer."""
    cc = os.environ.get("CC", "gcc")
    os.makedirs(os.path.dirname(FUZZ_COVERAGE), exist_ok=True)
    temporary = FUZZ_COVERAGE + ".tmp"
    run(
        [
            cc,
            "-shared",
            "-fPIC",
            "-O2",
            os.path.join(HERE, "fuzz_coverage.c"),
            "-o",
            temporary,
            "-ldl",
        ]
    )
    os.replace(temporary, FUZZ_COVERAGE)
    print(f"built {FUZZ_COVERAGE}")


# Compute capabilities of the CUDA kernel: machine code for Turing to Hopper, and PTX
# that newer GPUs compile when the library loads.
CUDA_ARCHS = ("75", "80", "86", "89", "90")


def cuda_root():
    """The CUDA toolkit: $CUDA_HOME, else the one `pip install .[cuda]` put in the venv,
    else the one whose nvcc is on the PATH."""
    if os.environ.get("CUDA_HOME"):
        return os.environ["CUDA_HOME"]
    import site

    for packages in site.getsitepackages():
        candidate = os.path.join(packages, "nvidia", "cu13")
        if os.path.exists(os.path.join(candidate, "bin", "nvcc")):
            return candidate
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        raise BuildError(
            "no CUDA toolkit: install it with `make ops-cuda` (pip extra `cuda`), or set CUDA_HOME"
        )
    return os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))


def build_cuda(ops_dir=OPS_DIR):
    """The CPU and GPU kernels in one library, the CUDA runtime linked statically (the
    process needs only the NVIDIA driver, 580 or newer for CUDA 13)."""
    root = cuda_root()
    nvcc = os.path.join(root, "bin", "nvcc")
    compile_flags, link_flags = tf_flags()
    build_dir = os.path.join(ROOT, "build")
    os.makedirs(build_dir, exist_ok=True)
    codes = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in CUDA_ARCHS]
    codes.append(f"-gencode=arch=compute_{CUDA_ARCHS[-1]},code=compute_{CUDA_ARCHS[-1]}")
    objects = []
    for source in CUDA_SOURCES:
        objects.append(os.path.join(build_dir, source.replace(".cu.cc", ".cu.o")))
        run(
            [
                nvcc,
                "-c",
                "-O3",
                "-std=c++17",
                "-Xcompiler",
                "-fPIC",
                "-x",
                "cu",
                *codes,
                os.path.join(HERE, source),
                "-o",
                objects[-1],
            ]
        )
    cxx = os.environ.get("CXX", "g++")
    for source in CPU_SOURCES:
        objects.append(os.path.join(build_dir, source.replace(".cc", "_host.o")))
        run(
            [
                cxx,
                "-c",
                "-fPIC",
                *PORTABLE_FLAGS,
                "-w",
                *compile_flags,
                "-DGOOGLE_CUDA=1",
                "-DEIGEN_USE_GPU",
                f"-I{os.path.join(root, 'include')}",
                os.path.join(HERE, source),
                "-o",
                objects[-1],
            ]
        )
    target = os.path.join(ops_dir, "_perforated_conv_gpu.so")
    temporary = target + ".tmp"
    cudart = os.path.join(root, "lib", "libcudart_static.a")
    if not os.path.exists(cudart):
        cudart = os.path.join(root, "lib64", "libcudart_static.a")
    run(
        [
            cxx,
            "-shared",
            *objects,
            "-o",
            temporary,
            *link_flags,
            cudart,
            "-ldl",
            "-lrt",
            "-lpthread",
        ]
    )
    os.replace(temporary, target)
    print(f"built {target} (CUDA from {root}; kernels for sm_{', sm_'.join(CUDA_ARCHS)})")
    return target


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--asan", action="store_true", help="AddressSanitizer build")
    parser.add_argument(
        "--fuzz",
        action="store_true",
        help="AddressSanitizer + UndefinedBehaviorSanitizer build for fuzzing",
    )
    parser.add_argument(
        "--cuda",
        action="store_true",
        help="the library with the GPU kernel (_perforated_conv_gpu.so)",
    )
    args = parser.parse_args()
    try:
        if args.cuda:
            build_cuda()
        elif args.fuzz:
            build_fuzz_coverage()
            build_cpu("fuzz")
        else:
            build_cpu("asan" if args.asan else None)
    except BuildError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
