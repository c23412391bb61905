"""SGLD posterior sampling and distillation of Bayesian ensembles (Bayesian dark knowledge).

- :class:`SGLD`, :class:`SGHMC`: stochastic-gradient MCMC as Keras optimizers
  (loss convention: mean NLL + prior's negative log density / N).
- :class:`PosteriorSampler`: a callback keeping thinned samples (bounded
  memory, spill to disk) and building their :class:`PosteriorEnsemble`.
- :class:`Distiller`: offline distillation of any teacher into a student.
- :class:`BayesianDarkKnowledge`: online teacher (SGLD) / student alternation.

Example:
>>> from tfpriors import distill
>>> (x, y), (x_test, y_test) = tfpriors.datasets.load_digits()
>>> x, y = x[:256], y[:256]
>>> model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, activation="relu"),
...                           keras.layers.Dense(10)])
>>> opt = distill.SGLD(learning_rate=1e-4, dataset_size=len(x))
>>> sampler = distill.PosteriorSampler(burn_in_epochs=1, thin=2, max_samples=4, in_memory=4)
>>> model.compile(opt, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
>>> history = model.fit(x, y, epochs=2, batch_size=32, callbacks=[sampler], verbose=0)
>>> sampler.num_samples  # 8 steps after burn-in, one sample every 2
4
>>> student_model = keras.Sequential([keras.Input((64,)),
...                                   keras.layers.Dense(8, activation="relu"),
...                                   keras.layers.Dense(10)])
>>> student = distill.Distiller(student_model, sampler.ensemble(), temperature=4.0,
...                             teacher_output="log_probs")
>>> student.compile("adam")
>>> history = student.fit(x, epochs=1, batch_size=64, verbose=0)
>>> student_model.predict(x_test[:5], verbose=0).shape
(5, 10)
"""

from tfpriors.distill.distiller import BayesianDarkKnowledge, Distiller
from tfpriors.distill.losses import GaussianNLL
from tfpriors.distill.optimizers import SGHMC, SGLD, gaussian_prior
from tfpriors.distill.sampler import PosteriorEnsemble, PosteriorSampler

__all__ = [
    "SGLD",
    "SGHMC",
    "gaussian_prior",
    "GaussianNLL",
    "PosteriorSampler",
    "PosteriorEnsemble",
    "Distiller",
    "BayesianDarkKnowledge",
]
