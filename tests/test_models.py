import keras
import numpy as np
import pytest

import tfpriors
from tfpriors.layers import SparseVDConv2D, SparseVDDense


@pytest.mark.parametrize(
    "kind,dense_cls", [("dense", keras.layers.Dense), ("sparse_vd", SparseVDDense)]
)
def test_lenet_300_100(kind, dense_cls):
    model = tfpriors.models.lenet_300_100((28, 28, 1), 10, kind=kind)
    layers = [layer for layer in model.layers if isinstance(layer, dense_cls)]
    assert [layer.units for layer in layers] == [300, 100, 10]
    assert model(np.zeros((2, 28, 28, 1), "float32")).shape == (2, 10)


@pytest.mark.parametrize("shape,flatten", [((28, 28, 1), 4 * 4 * 50), ((8, 8, 1), 2 * 2 * 50)])
def test_lenet5_caffe_shapes(shape, flatten):
    model = tfpriors.models.lenet5(shape, 10, kind="sparse_vd")
    assert model.get_layer("flatten").output.shape[-1] == flatten
    assert isinstance(model.get_layer("conv1"), SparseVDConv2D)
    assert model.get_layer("conv1").kernel.shape == (5, 5, shape[-1], 20)
    assert model.get_layer("fc1").units == 500
    dense = tfpriors.models.lenet5(shape, 10)
    # Sparse VD adds a log_sigma2 per weight and one kl_weight per layer.
    variational = [layer for layer in model.layers if hasattr(layer, "log_sigma2")]
    assert len(variational) == 4
    assert dense.count_params() == model.count_params() - len(variational) - sum(
        int(np.prod(layer.log_sigma2.shape)) for layer in variational
    )


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"kind": "pruned"}, "kind"),
        ({"num_classes": 0}, "num_classes"),
        ({"input_shape": "64"}, "input_shape"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        tfpriors.models.lenet_300_100(**kwargs)


def test_lenet5_needs_image_shape():
    with pytest.raises(ValueError, match="input_shape"):
        tfpriors.models.lenet5((64,), 10)


def test_small_cnn_has_a_features_layer():
    model = tfpriors.models.small_cnn((8, 8, 1), 7)
    assert model.get_layer("features").units == 64
    assert model(np.zeros((2, 8, 8, 1), "float32")).shape == (2, 7)
    with pytest.raises(ValueError, match="input_shape"):
        tfpriors.models.small_cnn((64,), 10)
