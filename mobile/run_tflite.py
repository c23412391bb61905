#!/usr/bin/env python3
"""Run and time a .tflite file on .npy input with numpy and a TFLite runtime only.

    python mobile/run_tflite.py model.tflite --input x.npy --threads 1 --repeats 50

Prints one JSON object: the runtime used, input and output shapes, a summary
of the outputs (per-example argmax and the first rows) and the median latency
of one invoke. Errors print one line and exit with status 1.
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tfpriors_mobile import (
    ModelFileError,
    load_interpreter,  # noqa: E402
    median_latency_ms,
    op_names,
    run_batch,
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="path of the .tflite file")
    parser.add_argument("--input", required=True, help=".npy file with a batch of inputs")
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads (1)")
    parser.add_argument("--repeats", type=int, default=50, help="timed invokes (50)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed invokes first (5)")
    parser.add_argument("--show", type=int, default=3, help="output rows to print (3)")
    args = parser.parse_args(argv)
    for name in ("threads", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    try:
        if not os.path.isfile(args.input):
            raise ValueError(f"No input file at '{args.input}'.")
        try:
            x = np.load(args.input, allow_pickle=False)
        except Exception as error:
            raise ValueError(f"'{args.input}' is not a readable .npy file: {error}") from None
        interpreter, runtime = load_interpreter(model_path=args.model, num_threads=args.threads)
        outputs = run_batch(interpreter, x)
        latency = median_latency_ms(interpreter, x[:1], repeats=args.repeats, warmup=args.warmup)
    except (ModelFileError, ValueError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    report = {
        "runtime": runtime,
        "threads": args.threads,
        "ops": sorted(op_names(model_path=args.model)),
        "input_shape": list(x.shape),
        "output_shape": list(outputs.shape),
        "argmax": outputs.reshape(len(outputs), -1).argmax(axis=1).tolist(),
        "first_outputs": outputs[: args.show].round(6).tolist(),
        "latency_ms_median": round(latency, 4),
        "repeats": args.repeats,
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
