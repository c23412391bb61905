"""Priors over weights: one ``Prior.kl`` interface for every variational layer."""

from tfpriors.priors.base import Prior
from tfpriors.priors.log_uniform import LogUniform, log_alpha
from tfpriors.priors.normal import Normal

__all__ = ["Prior", "LogUniform", "Normal", "log_alpha"]
