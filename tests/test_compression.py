import keras
import numpy as np
import pytest

import tfpriors


def test_report_counts_kept_weights_per_layer():
    model = keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            tfpriors.layers.SparseVDConv2D(2, 3, name="conv"),
            keras.layers.Flatten(),
            tfpriors.layers.SparseVDDense(4, name="fc"),
            keras.layers.Dense(3, name="head"),
        ]
    )
    conv, fc, head = model.get_layer("conv"), model.get_layer("fc"), model.get_layer("head")
    conv.kernel.assign(np.ones(conv.kernel.shape))
    log_sigma2 = np.full(conv.kernel.shape, -10.0, "float32")
    log_sigma2.reshape(-1)[:9] = 5.0  # log_alpha = 5 >= 3: pruned
    conv.log_sigma2.assign(log_sigma2)
    fc.kernel.assign(np.ones(fc.kernel.shape))
    head_kernel = head.kernel.numpy()
    head_kernel[0] = 0.0
    head.kernel.assign(head_kernel)

    report = tfpriors.compression_report(model)
    rows = {row.name: row for row in report.layers}
    assert (rows["conv"].weights, rows["conv"].nonzero) == (18, 9)
    assert (rows["fc"].weights, rows["fc"].nonzero) == (128, 128)
    assert (rows["head"].weights, rows["head"].nonzero) == (12, 9)
    assert rows["conv"].sparsity == pytest.approx(0.5)
    assert report.total_compression == pytest.approx(158 / 146)
    assert isinstance(report.total_compression, float)
    text = str(report)
    assert "conv" in text and "total" in text and "1.1x" in text
    assert report.to_dict()["total_nonzero"] == 146


def test_report_needs_a_built_model():
    model = keras.Sequential([tfpriors.layers.SparseVDDense(3)])
    with pytest.raises(ValueError, match="built"):
        tfpriors.compression_report(model)
    with pytest.raises(TypeError, match="model"):
        tfpriors.compression_report(None)
