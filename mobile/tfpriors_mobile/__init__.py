"""Device-side helpers: run and time .tflite files with numpy and a TFLite runtime only.

Nothing here imports TensorFlow, so the folder can be copied to a device
(a Raspberry Pi, an Android test harness with Python) as it is.
"""

from tfpriors_mobile.runtime import (
    ModelFileError,
    load_interpreter,
    median_latency_ms,
    op_names,
    run_batch,
)

__all__ = ["ModelFileError", "load_interpreter", "median_latency_ms", "op_names", "run_batch"]
