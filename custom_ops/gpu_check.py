"""Tests and times the CUDA kernels: PerforatedConv2D against cuDNN, LrtSample against NumPy.

Runs on a GPU machine without TensorFlow (the device tool's machines have PyTorch, not
TensorFlow): custom_ops/device_check.sh builds the kernel with a C entry point
(gpu_check_bridge.cu.cc) and calls this script, which draws uniform and lattice masks
(nearest-neighbour fill by SciPy's distance transform, as tfpriors.perforation does),
checks every output against cuDNN's full convolution gathered at the nearest kept
position, and times both with CUDA events (medians of repeats). The noise kernel
(LrtSample and its gradient) is checked against a NumPy Philox-4x32-10 + Box-Muller
stream (:func:`philox_normals`, TensorFlow's StatelessRandomNormalV2 numbers) and timed
against ``torch.randn`` followed by the square root and multiply-add.

    python3 custom_ops/gpu_check.py --library build/perforated_conv_gpu_check.so --out r.json
"""

import argparse
import ctypes
import json
import statistics

import numpy as np
import torch
from scipy import ndimage

SHAPES = {"56x56x128->128": (56, 128, 128), "28x28x256->256": (28, 256, 256)}
BATCHES = (1, 32)
RATES = (0.5, 0.75)


def mask(kind, size, rate, seed=0):
    """(kept, fill_index, nearest): the tables tfpriors.perforation builds."""
    if kind == "lattice":
        step = (2, 1) if rate == 0.5 else (2, 2)
        rows, cols = np.arange(0, size, step[0]), np.arange(0, size, step[1])
        kept = (rows[:, None] * size + cols[None, :]).reshape(-1)
    else:
        count = max(1, int(round((1 - rate) * size * size)))
        kept = np.random.default_rng(seed).choice(size * size, count, replace=False)
    kept = np.sort(kept).astype(np.int32)
    missing = np.ones(size * size, bool)
    missing[kept] = False
    _, (r, c) = ndimage.distance_transform_edt(missing.reshape(size, size), return_indices=True)
    nearest = (r * size + c).reshape(-1)
    return kept, np.searchsorted(kept, nearest).astype(np.int32), nearest


def median_ms(fn, repeats):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


PHILOX_MULTIPLIERS = (0xD2511F53, 0xCD9E8D57)
PHILOX_KEY_STEPS = (0x9E3779B9, 0xBB67AE85)


def philox_normals(key, counter, offset, n):
    """Elements [offset, offset + n) of the Philox normal stream of (key, counter), in NumPy."""
    first, last = offset // 4, (offset + n + 3) // 4
    blocks = np.arange(first, last, dtype=np.uint64)
    low = (np.uint64(counter[0]) + blocks).astype(np.uint64)
    carry = (low < blocks).astype(np.uint64)
    high = np.uint64(counter[1]) + carry
    mask = np.uint64(0xFFFFFFFF)
    c = [low & mask, low >> np.uint64(32), high & mask, high >> np.uint64(32)]
    k = [np.uint64(key & 0xFFFFFFFF), np.uint64(key >> 32)]
    for _ in range(10):
        p0 = np.uint64(PHILOX_MULTIPLIERS[0]) * c[0]
        p1 = np.uint64(PHILOX_MULTIPLIERS[1]) * c[2]
        c = [
            ((p1 >> np.uint64(32)) ^ c[1] ^ k[0]) & mask,
            p1 & mask,
            ((p0 >> np.uint64(32)) ^ c[3] ^ k[1]) & mask,
            p0 & mask,
        ]
        k = [
            (k[0] + np.uint64(PHILOX_KEY_STEPS[0])) & mask,
            (k[1] + np.uint64(PHILOX_KEY_STEPS[1])) & mask,
        ]

    def uniform(x):
        return (x & np.uint64(0x7FFFFF)).astype(np.float64) / 2.0**23

    out = np.empty((len(blocks), 4))
    for i in (0, 2):
        radius = np.sqrt(-2.0 * np.log(np.maximum(uniform(c[i]), 1e-7)))
        angle = 2.0 * np.pi * uniform(c[i + 1])
        out[:, i], out[:, i + 1] = radius * np.sin(angle), radius * np.cos(angle)
    return out.reshape(-1)[offset - 4 * first :][:n]


def check_noise(library, repeats, n=2**21):
    """Checks and times the LrtSample kernel; returns its rows."""
    launch = library.tfpriors_gpu_lrt
    launch.restype = ctypes.c_int
    launch.argtypes = (
        [ctypes.c_void_p, ctypes.c_int]
        + [ctypes.c_void_p] * 4
        + [
            ctypes.c_int64,
            ctypes.c_int64,
            ctypes.c_float,
            ctypes.c_void_p,
        ]
    )
    device = torch.device("cuda")
    generator = torch.Generator(device="cpu").manual_seed(0)
    mean = torch.randn(n, generator=generator).to(device)
    variance = torch.rand(n, generator=generator).to(device)
    key_value, counter_value = 0x0123456789ABCDEF, (2**32 - 7, 5)
    key = torch.tensor([key_value], dtype=torch.int64, device=device)
    counter = torch.tensor(counter_value, dtype=torch.int64, device=device)
    out = torch.empty_like(mean)
    stream = torch.cuda.current_stream().cuda_stream
    rows = []
    for gradient in (0, 1):
        for offset in (0, 3, 4097):

            def ours(offset=offset, gradient=gradient):
                status = launch(
                    stream,
                    gradient,
                    mean.data_ptr(),
                    variance.data_ptr(),
                    key.data_ptr(),
                    counter.data_ptr(),
                    offset,
                    n,
                    1e-8,
                    out.data_ptr(),
                )
                if status != 0:
                    raise RuntimeError("the CUDA launch failed")

            ours()
            torch.cuda.synchronize()
            eps = philox_normals(key_value, counter_value, offset, n)
            m, v = mean.cpu().double().numpy(), variance.cpu().double().numpy()
            root = np.sqrt(v + 1e-8)
            expected = 0.5 * m * eps / root if gradient else m + root * eps
            error = float(np.max(np.abs(out.cpu().double().numpy() - expected)))
            rows.append(
                {
                    "op": "LrtSampleVarianceGrad" if gradient else "LrtSample",
                    "offset": offset,
                    "max_abs_diff": error,
                    "kernel_ms": median_ms(ours, repeats),
                }
            )

    def torch_baseline():
        return mean + torch.sqrt(variance + 1e-8) * torch.randn_like(mean)

    baseline_ms = median_ms(torch_baseline, repeats)
    for row in rows:
        row["torch_randn_fma_ms"] = baseline_ms
        row["speedup"] = baseline_ms / row["kernel_ms"]
        print(
            f"{row['op']} offset {row['offset']}: max |diff| {row['max_abs_diff']:.2e}, "
            f"kernel {row['kernel_ms']:.3f} ms vs torch.randn + FMA {baseline_ms:.3f} ms",
            flush=True,
        )
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    library = ctypes.CDLL(args.library)
    launch = library.tfpriors_gpu_perforated_conv2d
    launch.restype = ctypes.c_int
    launch.argtypes = [ctypes.c_void_p] * 7 + [ctypes.c_int64] * 14
    device = torch.device("cuda")
    # float32 on both sides: cuDNN would otherwise run TF32 (10-bit mantissas).
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    rows = []
    for label, (size, cin, cout) in SHAPES.items():
        for batch in BATCHES:
            generator = torch.Generator(device="cpu").manual_seed(0)
            x = torch.randn(batch, size, size, cin, generator=generator).to(device)
            w = torch.randn(3, 3, cin, cout, generator=generator).to(device) * 0.05
            x_nchw = x.permute(0, 3, 1, 2).contiguous()
            w_oihw = w.permute(3, 2, 0, 1).contiguous()

            def cudnn():
                return torch.nn.functional.conv2d(x_nchw, w_oihw, padding=1)

            full = cudnn().permute(0, 2, 3, 1).reshape(batch, size * size, cout)
            dense_ms = median_ms(cudnn, args.repeats)
            for kind in ("uniform", "lattice"):
                for rate in RATES:
                    kept, fill, nearest = mask(kind, size, rate)
                    out = torch.empty(batch, size, size, cout, device=device)
                    tables = torch.empty(len(kept) + size * size, dtype=torch.int32, device=device)
                    stream = torch.cuda.current_stream().cuda_stream

                    def ours():
                        status = launch(
                            stream,
                            x.data_ptr(),
                            w.data_ptr(),
                            kept.ctypes.data,
                            fill.ctypes.data,
                            tables.data_ptr(),
                            out.data_ptr(),
                            batch,
                            size,
                            size,
                            cin,
                            3,
                            3,
                            cout,
                            1,
                            1,
                            1,
                            1,
                            size,
                            size,
                            len(kept),
                        )
                        if status != 0:
                            raise RuntimeError("the CUDA launch failed")

                    ours()
                    torch.cuda.synchronize()
                    expected = full[:, torch.as_tensor(nearest, device=device)]
                    error = float((out.reshape(batch, -1, cout) - expected).abs().max())
                    ms = median_ms(ours, args.repeats)
                    rows.append(
                        {
                            "layer": label,
                            "batch": batch,
                            "mask": kind,
                            "rate": rate,
                            "max_abs_diff": error,
                            "kernel_ms": ms,
                            "cudnn_ms": dense_ms,
                            "speedup": dense_ms / ms,
                        }
                    )
                    print(
                        f"{label} batch {batch} {kind}@{rate}: max |diff| {error:.2e}, "
                        f"kernel {ms:.3f} ms vs cuDNN dense {dense_ms:.3f} ms "
                        f"({dense_ms / ms:.2f}x)",
                        flush=True,
                    )
    noise_rows = check_noise(library, args.repeats)
    result = {
        "noise_rows": noise_rows,
        "noise_correct": all(r["max_abs_diff"] < 1e-4 for r in noise_rows),
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "repeats": args.repeats,
        "rows": rows,
        "all_correct": all(r["max_abs_diff"] < 1e-3 for r in rows),
    }
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=2)
    if not result["all_correct"]:
        raise SystemExit("the CUDA kernel disagrees with cuDNN")
    if not result["noise_correct"]:
        raise SystemExit("the CUDA noise kernel disagrees with the NumPy Philox stream")


if __name__ == "__main__":
    main()
