"""How much of a model Sparse VD removed: a per-layer table and the total.

With ``StructuredBayesianPruning`` gates, the table also lists the units and
filters kept per layer and the multiply-adds (FLOPs) left.
"""

import dataclasses

import keras
import numpy as np

from tfpriors.graph import walk
from tfpriors.layers.geometry import Conv2DGeometry, DenseGeometry
from tfpriors.layers.sparse_vd import SparseVDLayer
from tfpriors.layers.structured import StructuredBayesianPruning

# Plain layers whose kernels count as fully kept, so that the total
# compression is over all weights of the network (as in the papers).
_DENSE_KERNEL_LAYERS = (
    keras.layers.Dense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.DepthwiseConv2D,
    keras.layers.EinsumDense,
)


@dataclasses.dataclass(frozen=True)
class LayerCompression:
    """One row of a :class:`CompressionReport`.

    Attributes:
        name: the layer's name.
        kind: the layer's class name.
        weights: its number of kernel weights.
        nonzero: how many of them are kept.
        units: output units (Dense) or filters (Conv2D); None for other rows.
        units_kept: how many of them a ``StructuredBayesianPruning`` gate keeps.
        flops: multiply-adds of one example through the layer.
        flops_kept: those left once pruned units and their inputs are removed.

    Example:
    >>> row = tfpriors.compression.LayerCompression("fc1", "SparseVDDense", 2048, 512)
    >>> row.sparsity, row.compression
    (0.75, 4.0)
    """

    name: str
    kind: str
    weights: int
    nonzero: int
    units: int = None
    units_kept: int = None
    flops: int = None
    flops_kept: int = None

    @property
    def sparsity(self):
        """The fraction of the kernel weights removed (0 for a layer without weights)."""
        return 1.0 - self.nonzero / self.weights if self.weights else 0.0

    @property
    def compression(self):
        """Kernel weights over kept ones."""
        return self.weights / max(self.nonzero, 1)


@dataclasses.dataclass(frozen=True)
class CompressionReport:
    """Per-layer kept weights of a model and the total compression ratio.

    ``total_compression`` is all kernel weights over the kept ones (biases are
    not counted, as in the Sparse VD paper). :func:`compression_report` builds
    it; ``print(report)`` shows it as a table.

    Attributes:
        layers: a tuple of :class:`LayerCompression` rows, in model order.

    Example:
    >>> rows = (
    ...     tfpriors.compression.LayerCompression("fc1", "SparseVDDense", 2048, 512),
    ...     tfpriors.compression.LayerCompression("fc2", "Dense", 320, 320),
    ... )
    >>> report = tfpriors.CompressionReport(rows)
    >>> report.total_weights, report.total_nonzero, round(report.total_compression, 2)
    (2368, 832, 2.85)
    >>> report.to_dict()["layers"][0]["sparsity"]
    0.75
    """

    layers: tuple

    @property
    def total_weights(self):
        """All kernel weights of the rows."""
        return sum(row.weights for row in self.layers)

    @property
    def total_nonzero(self):
        """The kept kernel weights of the rows."""
        return sum(row.nonzero for row in self.layers)

    @property
    def total_sparsity(self):
        """The fraction of all kernel weights removed."""
        return 1.0 - self.total_nonzero / self.total_weights if self.total_weights else 0.0

    @property
    def total_compression(self):
        """All kernel weights over the kept ones (a float)."""
        return float(self.total_weights / max(self.total_nonzero, 1))

    @property
    def total_flops(self):
        """Multiply-adds of one example through the rows' layers."""
        return sum(row.flops or 0 for row in self.layers)

    @property
    def total_flops_kept(self):
        """Multiply-adds left once pruned units are removed."""
        return sum(row.flops_kept or 0 for row in self.layers)

    def to_dict(self):
        """A JSON-friendly dict of the rows and totals."""
        return {
            "total_flops": self.total_flops,
            "total_flops_kept": self.total_flops_kept,
            "layers": [
                dict(dataclasses.asdict(row), sparsity=row.sparsity, compression=row.compression)
                for row in self.layers
            ],
            "total_weights": self.total_weights,
            "total_nonzero": self.total_nonzero,
            "total_sparsity": self.total_sparsity,
            "total_compression": self.total_compression,
        }

    def __str__(self):
        width = max([len(row.name) for row in self.layers] + [5])
        lines = [
            f"{'layer':<{width}}  {'kind':<15} {'weights':>10} {'kept':>10} "
            f"{'sparsity':>9} {'compression':>12}"
        ]
        for row in self.layers:
            lines.append(
                f"{row.name:<{width}}  {row.kind:<15} {row.weights:>10,d} "
                f"{row.nonzero:>10,d} {row.sparsity:>9.2%} "
                f"{row.compression:>11.1f}x"
            )
        lines.append(
            f"{'total':<{width}}  {'':<15} {self.total_weights:>10,d} "
            f"{self.total_nonzero:>10,d} {self.total_sparsity:>9.2%} "
            f"{self.total_compression:>11.1f}x"
        )
        if any(row.units_kept is not None for row in self.layers):
            lines.append("")
            lines.append(f"{'layer':<{width}}  {'units kept':>14} {'FLOPs':>14} {'FLOPs kept':>14}")
            for row in self.layers:
                if row.units is None:
                    continue
                lines.append(
                    f"{row.name:<{width}}  {f'{row.units_kept:,} of {row.units:,}':>14} "
                    f"{row.flops:>14,d} {row.flops_kept:>14,d}"
                )
            lines.append(
                f"{'total':<{width}}  {'':>14} {self.total_flops:>14,d} "
                f"{self.total_flops_kept:>14,d} "
                f"({self.total_flops / max(self.total_flops_kept, 1):.1f}x fewer)"
            )
        return "\n".join(lines)


def compression_report(model):
    """Counts kept kernel weights per layer of ``model``.

    Sparse VD layers count the weights kept at evaluation (``log_alpha <
    threshold``); plain Dense / Conv layers count their nonzero kernel entries.

    Args:
        model: a built Keras model (nested models are walked).

    Returns:
        A :class:`CompressionReport`, one row per layer with a kernel.

    Example:
    >>> model = keras.Sequential([
    ...     keras.Input((64,)),
    ...     keras.layers.Dense(32, activation="relu", name="fc1"),
    ...     keras.layers.Dense(10, name="fc2"),
    ... ])
    >>> kernel = model.get_layer("fc1").kernel
    >>> _ = kernel.assign(np.where(np.arange(64)[:, None] < 16, kernel.numpy(), 0.0))
    >>> report = tfpriors.compression_report(model)
    >>> print(report)  # a table, one row per layer
    layer  kind     weights   kept  sparsity  compression
    fc1    Dense      2,048    512    75.00%         4.0x
    fc2    Dense        320    320     0.00%         1.0x
    total             2,368    832    64.86%         2.8x
    >>> round(report.total_compression, 2)
    2.85
    """
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(f"`model` must be a Keras model; received {type(model).__name__}.")
    if not model.built:
        raise ValueError(
            "`model` must be built (call it on data or give it an Input) "
            "before a compression report can count its weights."
        )
    layers = list(walk(model))
    gates = [layer for layer in layers if isinstance(layer, StructuredBayesianPruning)]
    gate_of = {}
    for gate in gates:
        producer = _upstream(gate, lambda layer: hasattr(layer, "kernel"))
        if producer is not None:
            gate_of[id(producer)] = gate
    rows = []
    for layer in layers:
        if isinstance(layer, SparseVDLayer):
            kept = layer.kept_mask()
            row = LayerCompression(
                layer.name, type(layer).__name__, int(kept.size), int(kept.sum())
            )
        elif isinstance(layer, _DENSE_KERNEL_LAYERS) and layer.built:
            kernel = keras.ops.convert_to_numpy(layer.kernel)
            row = LayerCompression(
                layer.name,
                type(layer).__name__,
                int(kernel.size),
                int(np.count_nonzero(kernel)),
            )
        else:
            continue
        if gates:
            row = _with_units(row, layer, gate_of)
        rows.append(row)
    return CompressionReport(tuple(rows))


def _upstream(layer, stops):
    """The layer feeding ``layer`` through single-input layers for which ``stops`` is false."""
    current = layer
    for _ in range(64):
        nodes = getattr(current, "_inbound_nodes", [])
        if len(nodes) != 1 or len(nodes[0].input_tensors) != 1:
            return None
        current = nodes[0].input_tensors[0]._keras_history.operation
        if current is None or isinstance(current, keras.layers.InputLayer):
            return None
        if stops(current):
            return current
    return None


def _with_units(row, layer, gate_of):
    """``row`` with the units kept by the layer's gate and the FLOPs kept."""
    if not isinstance(
        layer, (keras.layers.Dense, keras.layers.Conv2D, DenseGeometry, Conv2DGeometry)
    ):
        return row
    units = int(layer.kernel.shape[-1])
    gate = gate_of.get(id(layer))
    units_kept = units if gate is None else gate.kept_units()
    # The inputs left: the kept fraction of the gate (if any) before this layer.
    before = _upstream(
        layer,
        lambda other: isinstance(other, StructuredBayesianPruning) or hasattr(other, "kernel"),
    )
    inputs_kept = 1.0
    if isinstance(before, StructuredBayesianPruning):
        inputs_kept = before.kept_units() / before.units
    positions = int(np.prod(layer.output.shape[1:-1])) if len(layer.output.shape) > 2 else 1
    flops = int(np.prod(layer.kernel.shape)) * positions
    flops_kept = int(round(flops * inputs_kept * units_kept / units))
    return dataclasses.replace(
        row, units=units, units_kept=units_kept, flops=flops, flops_kept=flops_kept
    )
