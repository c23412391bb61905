"""Lambda-hypernetworks: one training run, a variational model for every complexity level.

A :class:`LambdaHyperModel` learns the variational posterior as a function of
the KL weight lambda; ``model.at(lambda, prune_fraction=...)`` then gives an
ordinary Keras model for any lambda and pruning level, and
:func:`tradeoff_curve` measures accuracy against the fraction of weights
removed.

Example:
>>> (x, y), (x_test, y_test) = tfpriors.datasets.load_digits()
>>> model = tfpriors.hyper.LambdaHyperModel(
...     layers=[tfpriors.layers.HyperVariationalDense(10, kind="lowrank")],  # a linear classifier
...     lambda_range=(1e-3, 10.0), lambda_draws=4, prior_variance=0.1)
>>> tfpriors.set_dataset_size(model, len(x))
1
>>> model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
>>> history = model.fit(x[:256], y[:256], epochs=1, batch_size=64, verbose=0)
>>> pruned = model.at(0.5, prune_fraction=0.8)  # a plain keras.Sequential
>>> round(float(np.mean(pruned.layers[0].kernel.numpy() == 0)), 2)
0.8
>>> curve = tfpriors.hyper.tradeoff_curve(model, (x_test, y_test), [0.01, 1.0],
...                                       "tradeoff.png", fractions=[0.0, 0.9])
>>> len(curve.accuracy), len(curve.accuracy[0]), curve.path
(2, 2, 'tradeoff.png')
"""

from tfpriors.hyper.model import LambdaHyperModel, density_masks
from tfpriors.hyper.tradeoff import TradeoffCurve, plot_tradeoff, tradeoff_curve

__all__ = ["LambdaHyperModel", "TradeoffCurve", "density_masks", "plot_tradeoff", "tradeoff_curve"]
