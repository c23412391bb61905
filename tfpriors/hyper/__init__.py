"""Lambda-hypernetworks: one training run, a variational model for every complexity level.

Example:

>>> model = tfpriors.hyper.LambdaHyperModel(
...     layers=[tfpriors.layers.HyperVariationalDense(100, activation="relu", kind="lowrank"),
...             tfpriors.layers.HyperVariationalDense(10, kind="lowrank")],
...     lambda_range=(1e-3, 10.0), lambda_draws=5, prior_variance=0.1)
>>> tfpriors.set_dataset_size(model, len(x))
>>> model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
>>> model.fit(x, y, epochs=50)
>>> pruned = model.at(0.5, prune_fraction=0.8)
>>> tfpriors.hyper.tradeoff_curve(model, (x_test, y_test), [0.01, 0.1, 1, 10], "tradeoff.png")
"""

from tfpriors.hyper.model import LambdaHyperModel, density_masks
from tfpriors.hyper.tradeoff import TradeoffCurve, plot_tradeoff, tradeoff_curve

__all__ = ["LambdaHyperModel", "TradeoffCurve", "density_masks", "plot_tradeoff", "tradeoff_curve"]
