import os

import keras
import matplotlib.image
import numpy as np
import pytest

import tfpriors
from tfpriors.plotting import plot_sparsity, sparse_vd_layers

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _prune(layer, fraction, rng):
    """Drops about `fraction` of the layer's weights (log_alpha -> 8) and returns the mask."""
    log_sigma2 = layer.log_sigma2.numpy()
    log_sigma2[rng.random(log_sigma2.shape) < fraction] = 10.0
    layer.log_sigma2.assign(log_sigma2)
    return layer.kept_mask()


def _dense_model():
    return keras.Sequential(
        [
            keras.Input((64,)),
            tfpriors.layers.SparseVDDense(16, activation="relu", name="fc1"),
            keras.layers.Dense(12, activation="relu", name="plain"),
            tfpriors.layers.SparseVDDense(10, name="fc2"),
        ],
        name="small",
    )


def _heatmap_values(figure):
    """The array drawn in the last panel's image."""
    return np.asarray(figure.axes[2].images[0].get_array())


def test_dense_model_plot_shows_kept_weights_per_pixel(tmp_path):
    model = _dense_model()
    mask = _prune(model.get_layer("fc1"), 0.7, np.random.default_rng(0))
    path = tmp_path / "sparsity.png"
    figure = plot_sparsity(model, path, input_image_shape=(8, 8))

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[1] > image.shape[0] > 200
    assert os.listdir(tmp_path) == ["sparsity.png"]
    np.testing.assert_array_equal(_heatmap_values(figure), mask.sum(axis=1).reshape(8, 8))
    np.testing.assert_array_equal(
        np.asarray(figure.axes[1].images[0].get_array()), mask.astype(float)
    )
    # One bar per layer with a kernel (plain ones too, at 0%), in model order.
    bars_ax = figure.axes[0]
    assert [tick.get_text() for tick in bars_ax.get_yticklabels()] == ["fc1", "plain", "fc2"]
    report = tfpriors.compression_report(model)
    widths = [patch.get_width() for patch in bars_ax.patches[3:]]
    np.testing.assert_allclose(widths, [100 * row.sparsity for row in report.layers])
    assert f"{report.total_compression:.1f}x" in figure._suptitle.get_text()


def test_image_shape_is_taken_from_the_models_input(tmp_path):
    model = tfpriors.models.lenet_300_100((8, 8, 1), 10, kind="sparse_vd")
    mask = _prune(model.get_layer("fc1"), 0.9, np.random.default_rng(1))
    figure = plot_sparsity(model, tmp_path / "s.png")
    np.testing.assert_array_equal(_heatmap_values(figure), mask.sum(axis=1).reshape(8, 8))


def test_flat_inputs_without_image_shape_get_one_bar_per_input(tmp_path):
    model = _dense_model()
    mask = _prune(model.get_layer("fc1"), 0.5, np.random.default_rng(2))
    figure = plot_sparsity(model, tmp_path / "s.png")
    heights = [patch.get_height() for patch in figure.axes[2].patches]
    np.testing.assert_array_equal(heights, mask.sum(axis=1))


def test_conv_model_plot_shows_kept_fraction_per_kernel_position(tmp_path):
    model = tfpriors.models.lenet5((8, 8, 1), 10, kind="sparse_vd")
    mask = _prune(model.get_layer("conv1"), 0.6, np.random.default_rng(3))
    path = tmp_path / "conv.png"
    figure = plot_sparsity(model, path)
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    np.testing.assert_allclose(_heatmap_values(figure), mask.mean(axis=(2, 3)))
    mosaic = np.asarray(figure.axes[1].images[0].get_array())
    # 20 filters of 5x5 in a 4x5 grid with one blank line between tiles.
    assert mosaic.shape == (4 * 6 - 1, 5 * 6 - 1)
    np.testing.assert_allclose(mosaic[:5, :5], mask[..., 0, 0])


def test_other_formats_follow_the_suffix(tmp_path):
    path = tmp_path / "sparsity.svg"
    plot_sparsity(_dense_model(), path)
    assert path.read_text().lstrip().startswith("<?xml")


def test_model_without_sparse_vd_layers_is_refused(tmp_path):
    dense = tfpriors.models.lenet_300_100((64,), 10, kind="dense")
    with pytest.raises(ValueError, match="`model`"):
        plot_sparsity(dense, tmp_path / "s.png")
    assert os.listdir(tmp_path) == []


def test_not_a_model_is_refused(tmp_path):
    with pytest.raises(TypeError, match="`model`"):
        plot_sparsity("model.keras", tmp_path / "s.png")


@pytest.mark.parametrize("shape", [(7, 7), (8,), (8, 8, 0), "8x8"])
def test_bad_input_image_shape_is_refused(shape, tmp_path):
    with pytest.raises((ValueError, TypeError), match="input_image_shape"):
        plot_sparsity(_dense_model(), tmp_path / "s.png", input_image_shape=shape)
    assert os.listdir(tmp_path) == []


def test_input_image_shape_with_a_conv_first_layer_is_refused(tmp_path):
    model = tfpriors.models.lenet5((8, 8, 1), 10, kind="sparse_vd")
    with pytest.raises(ValueError, match="input_image_shape"):
        plot_sparsity(model, tmp_path / "s.png", input_image_shape=(8, 8))


def test_a_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "sparsity.png"
    path.write_bytes(b"previous")

    def broken_savefig(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        plot_sparsity(_dense_model(), path)
    assert path.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["sparsity.png"]


def test_sparse_vd_layers_finds_nested_layers():
    inner = _dense_model()
    outer = keras.Sequential(
        [keras.Input((64,)), inner, tfpriors.layers.SparseVDDense(3, name="head")]
    )
    assert [layer.name for layer in sparse_vd_layers(outer)] == ["fc1", "fc2", "head"]


def test_dead_units_are_left_out_of_the_mask_panel(tmp_path):
    model = _dense_model()
    layer = model.get_layer("fc1")
    log_sigma2 = layer.log_sigma2.numpy()
    log_sigma2[:, [0, 3, 4]] = 10.0  # three units lose every input weight
    layer.log_sigma2.assign(log_sigma2)
    figure = plot_sparsity(model, tmp_path / "s.png")
    shown = np.asarray(figure.axes[1].images[0].get_array())
    np.testing.assert_array_equal(shown, np.delete(layer.kept_mask(), [0, 3, 4], axis=1))
    assert "13 output units still alive (of 16" in figure.axes[1].get_xlabel()


def test_every_plot_returns_its_figure_and_writes_only_when_asked(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    monkeypatch.chdir(tmp_path)
    probs = np.random.default_rng(0).dirichlet(np.ones(3), size=40)
    labels = np.arange(40) % 3
    mask = tfpriors.perforation.grid_mask((6, 6), 0.5, seed=0)
    figures = [
        tfpriors.calibration.reliability_diagram(probs, labels),
        tfpriors.perforation.plot_mask(mask),
        plot_sparsity(_dense_model()),
    ]
    assert all(isinstance(figure, Figure) for figure in figures)
    assert os.listdir(tmp_path) == []  # nothing written without a path
    path = tmp_path / "mask.png"
    assert tfpriors.perforation.plot_mask(mask, str(path)) is not None and path.exists()


def test_save_figure_is_atomic(tmp_path):
    from matplotlib.figure import Figure

    from tfpriors.io import save_figure

    path = tmp_path / "figure.png"
    path.write_bytes(b"old")

    class Broken(Figure):
        def savefig(self, *args, **kwargs):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_figure(Broken(), path)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["figure.png"]
    save_figure(Figure(), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
