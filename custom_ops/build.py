"""Builds the fused perforated convolution with TensorFlow's own compile and link flags.

python custom_ops/build.py             # tfpriors/ops/_perforated_conv.so (g++, -O3)
python custom_ops/build.py --asan      # tfpriors/ops/_perforated_conv_asan.so
python custom_ops/build.py --cuda      # nvcc compile check of perforated_conv_gpu.cu.cc
"""

import argparse
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OPS_DIR = os.path.join(ROOT, "tfpriors", "ops")


def tf_flags():
    import tensorflow as tf

    return tf.sysconfig.get_compile_flags(), tf.sysconfig.get_link_flags()


def run(command):
    print(" ".join(command), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True)
    print(f"  done in {time.perf_counter() - start:.0f} s", flush=True)


def build_cpu(asan):
    compile_flags, link_flags = tf_flags()
    cxx = os.environ.get("CXX", "g++")
    name = "_perforated_conv_asan.so" if asan else "_perforated_conv.so"
    target = os.path.join(OPS_DIR, name)
    temporary = target + ".tmp"
    optimise = (["-O1", "-g", "-fsanitize=address", "-fno-omit-frame-pointer"] if asan
                else ["-O3", "-march=native"])
    run([cxx, "-shared", "-fPIC", *optimise, "-w", *compile_flags,
         os.path.join(HERE, "perforated_conv.cc"), "-o", temporary, *link_flags])
    os.replace(temporary, target)
    print(f"built {target}")


def check_cuda():
    nvcc = os.environ.get("NVCC") or shutil.which("nvcc")
    if nvcc is None:
        sys.exit("nvcc not found: the CUDA kernel cannot be compiled here.")
    target = os.path.join(ROOT, "build", "perforated_conv_gpu.cu.o")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    run([nvcc, "-c", "-O3", "-std=c++17", "--compiler-options", "-fPIC", "-x", "cu",
         os.path.join(HERE, "perforated_conv_gpu.cu.cc"), "-o", target])
    print(f"compiled {target} (CUDA kernels only; linking the GPU op into TensorFlow needs "
          "a CUDA build of TensorFlow's headers)")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--asan", action="store_true", help="AddressSanitizer build")
    parser.add_argument("--cuda", action="store_true", help="nvcc compile check")
    args = parser.parse_args()
    if args.cuda:
        check_cuda()
    else:
        build_cpu(args.asan)


if __name__ == "__main__":
    main()
