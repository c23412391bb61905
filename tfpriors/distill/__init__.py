"""SGLD posterior sampling and distillation of Bayesian ensembles (Bayesian dark knowledge).

- :class:`SGLD`, :class:`SGHMC`: stochastic-gradient MCMC as Keras optimizers
  (loss convention: mean NLL + prior's negative log density / N).
- :class:`PosteriorSampler`: a callback keeping thinned samples (bounded
  memory, spill to disk) and building their :class:`PosteriorEnsemble`.
- :class:`Distiller`: offline distillation of any teacher into a student.
- :class:`BayesianDarkKnowledge`: online teacher (SGLD) / student alternation.

Example:

>>> from tfpriors import distill
>>> opt = distill.SGLD(learning_rate=1e-4, dataset_size=len(x))
>>> sampler = distill.PosteriorSampler(burn_in_epochs=20, thin=50, max_samples=100)
>>> model.compile(opt, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
>>> model.fit(x, y, epochs=100, callbacks=[sampler])
>>> student = distill.Distiller(student_model, sampler.ensemble(), temperature=4.0)
>>> student.compile("adam"); student.fit(x, epochs=50)
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
