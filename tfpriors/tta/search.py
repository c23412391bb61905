"""Greedy Policy Search (Lyzhov et al., 2020): build a TTA policy by greedy selection.

1. Sample a pool of random sub-policies (2-3 ops each, magnitude bound M).
2. Predict the search split once per sub-policy (one augmentation draw per
   image and member) and cache the log-probabilities.
3. Starting from an empty policy, add ``policy_length`` times the pool
   sub-policy whose addition gives the lowest calibrated NLL of the merged
   prediction (log of the mean probability over the chosen sub-policies),
   with replacement: a strong sub-policy may be chosen several times.

The cached predictions and the selection so far can be saved to a state
file after every step, so an interrupted search resumes where it stopped.

Example:
>>> search = tfpriors.tta.GreedyPolicySearch(pool_size=3, policy_length=2, seed=0)
>>> len(search.sample_pool())
3
"""

import os

import numpy as np
from scipy import special

from tfpriors import _probabilities, _validation, calibration
from tfpriors.io import atomic_path, check_archive
from tfpriors.tta import transforms
from tfpriors.tta.policy import Policy
from tfpriors.tta.predictor import TTAPredictor


class GreedyPolicySearch:
    """Finds a TTA policy by greedy selection on calibrated NLL.

    Args:
        pool_size: number of random sub-policies to choose from.
        policy_length: number of sub-policies in the result (with repeats).
        ops_per_subpolicy: ``(low, high)``: each sub-policy has between low
            and high ops (inclusive), drawn without repetition.
        magnitude_bound: the bound ``M`` (0..30) of every op.
        ops: op names to draw from (default: every transform but ``invert``).
        calibration_splits: random half splits of the calibrated NLL.
        seed: makes the pool, the augmentations and the splits reproducible.

    Attributes:
        history: after :meth:`fit`, the calibrated NLL after each selection step.

    Example:
    The paper's setting is ``pool_size=500, policy_length=10``; a small search
    on 8x8 digits:

    >>> (x, y), _ = tfpriors.datasets.load_digits(flat=False)
    >>> model = tfpriors.models.small_cnn((8, 8, 1), 10, width=4)
    >>> search = tfpriors.tta.GreedyPolicySearch(pool_size=4, policy_length=3,
    ...                                          ops_per_subpolicy=(2, 3), magnitude_bound=9)
    >>> policy = search.fit([model], x[:100], y[:100], verbose=0)
    >>> len(policy), len(search.history)
    (3, 3)
    >>> policy.to_json("policy.json")
    """

    def __init__(
        self,
        pool_size=500,
        policy_length=10,
        ops_per_subpolicy=(2, 3),
        magnitude_bound=9,
        ops=None,
        calibration_splits=5,
        seed=0,
    ):
        self.pool_size = _validation.positive_int(pool_size, "pool_size")
        self.policy_length = _validation.positive_int(policy_length, "policy_length")
        try:
            low, high = (int(v) for v in ops_per_subpolicy)
        except (TypeError, ValueError):
            raise ValueError(
                f"`ops_per_subpolicy` must be a pair (low, high); received {ops_per_subpolicy!r}."
            ) from None
        if not 1 <= low <= high:
            raise ValueError(
                f"`ops_per_subpolicy` must satisfy 1 <= low <= high; received "
                f"{ops_per_subpolicy!r}."
            )
        self.ops_per_subpolicy = (low, high)
        self.magnitude_bound = _validation.real_number(
            magnitude_bound, "magnitude_bound", minimum=0, maximum=transforms.MAX_MAGNITUDE
        )
        if ops is not None and (isinstance(ops, str) or not isinstance(ops, (list, tuple))):
            raise TypeError(f"`ops` must be None or a list of transform names; received {ops!r}.")
        self.ops = (
            list(ops)
            if ops is not None
            else [name for name in transforms.available() if name != "invert"]
        )
        unknown = [
            name
            for name in self.ops
            if not isinstance(name, str) or name not in transforms.available()
        ]
        if unknown:
            raise ValueError(
                f"`ops` names unknown transforms {unknown}; available: {transforms.available()}."
            )
        if high > len(self.ops):
            raise ValueError(
                f"`ops_per_subpolicy` asks for up to {high} different ops but "
                f"`ops` has {len(self.ops)}."
            )
        self.calibration_splits = _validation.positive_int(calibration_splits, "calibration_splits")
        self.seed = _validation.seed(seed)
        if self.seed is None:
            raise TypeError(
                "`seed` must be a non-negative integer (the search is reproducible); received None."
            )
        self.history = []

    def sample_pool(self):
        """The pool of random sub-policies (a list of lists of (op, magnitude)).

        The same ``seed`` gives the same pool.

        Example:
        >>> search = tfpriors.tta.GreedyPolicySearch(
        ...     pool_size=3, ops_per_subpolicy=(2, 2), ops=["flip", "rotate"])
        >>> [sorted(name for name, _ in sub) for sub in search.sample_pool()]
        [['flip', 'rotate'], ['flip', 'rotate'], ['flip', 'rotate']]
        """
        rng = np.random.default_rng(self.seed)
        low, high = self.ops_per_subpolicy
        pool = []
        for _ in range(self.pool_size):
            count = int(rng.integers(low, high + 1))
            names = rng.choice(self.ops, size=count, replace=False)
            pool.append([(str(name), self.magnitude_bound) for name in names])
        return pool

    def _predict_pool(self, models, pool, x, batch_size, verbose, from_logits):
        from tqdm.auto import tqdm

        cached = []
        for index, subpolicy in enumerate(
            tqdm(pool, desc="GPS: predicting the pool", unit="sub-policy", disable=not verbose)
        ):
            predictor = TTAPredictor(
                models,
                Policy([subpolicy]),
                num_samples=1,
                from_logits=from_logits,
                seed=self.seed + index,
            )
            cached.append(predictor.predict_log(x, batch_size=batch_size).astype("float32"))
        return np.stack(cached)

    def _score(self, log_probs, y):
        return calibration.calibrated_nll(
            log_probs, y, from_logits=True, splits=self.calibration_splits, seed=self.seed
        )

    def fit(self, models, x, y, batch_size=256, state_path=None, verbose=1, from_logits="auto"):
        """Runs the search on ``(x, y)`` and returns the :class:`Policy` found.

        Args:
            models: a model or a list of ensemble members (outputs: logits or
                probabilities, see ``from_logits``).
            x: the images of the search split, held out from training and from
                the final test set.
            y: their integer labels.
            batch_size: images per model call.
            state_path: optional ``.npz`` file: loaded if it exists (resume),
                written after every selection step.
            verbose: show progress bars.
            from_logits: whether the models output logits (``True``),
                probabilities (``False``), or ``"auto"`` (default): told per
                member as :class:`TTAPredictor` does.

        Returns:
            The :class:`Policy` of the ``policy_length`` chosen sub-policies
            (``choice="cycle"``); ``history`` holds the score of every step.

        Raises:
            ValueError: when ``state_path`` holds another search's state, or
                ``y`` does not match the cached predictions.

        Example:
        >>> (x, y), _ = tfpriors.datasets.load_digits(flat=False)
        >>> model = tfpriors.models.small_cnn((8, 8, 1), 10, width=4)
        >>> search = tfpriors.tta.GreedyPolicySearch(pool_size=3, policy_length=2)
        >>> policy = search.fit(model, x[:100], y[:100], state_path="gps.npz", verbose=0)
        >>> resumed = search.fit(model, x[:100], y[:100], state_path="gps.npz", verbose=0)
        >>> resumed == policy, len(policy)
        (True, 2)
        """
        from_logits = _probabilities.check_from_logits(from_logits)
        y = np.asarray(y)
        pool = self.sample_pool()
        state = _load_state(state_path, pool) if state_path else None
        if state is not None:
            cached, chosen = state
        else:
            cached = self._predict_pool(models, pool, x, batch_size, verbose, from_logits)
            chosen = []
            if state_path:
                _save_state(state_path, pool, cached, chosen)
        if cached.shape[1] != len(y):
            raise ValueError(
                f"`y` has {len(y)} labels but the cached predictions cover "
                f"{cached.shape[1]} images."
            )

        from tqdm.auto import tqdm

        steps = tqdm(
            range(len(chosen), self.policy_length),
            desc="GPS: greedy selection",
            unit="step",
            disable=not verbose,
            initial=len(chosen),
            total=self.policy_length,
        )
        self.history = []
        for _ in steps:
            # Sum of probabilities of the sub-policies chosen so far (in log space).
            base = special.logsumexp(cached[chosen], axis=0) if chosen else None
            count = len(chosen) + 1
            scores = []
            for candidate in range(len(pool)):
                merged = (
                    cached[candidate] if base is None else np.logaddexp(base, cached[candidate])
                )
                scores.append(self._score(merged - np.log(count), y))
            best = int(np.argmin(scores))
            chosen.append(best)
            self.history.append(float(scores[best]))
            steps.set_postfix(calibrated_nll=f"{scores[best]:.4f}")
            if state_path:
                _save_state(state_path, pool, cached, chosen)
        return Policy([pool[index] for index in chosen])


def _save_state(path, pool, cached, chosen):

    with atomic_path(path) as temporary:
        with open(temporary, "wb") as f:
            np.savez(
                f, cached=cached, chosen=np.array(chosen, dtype="int64"), pool=np.array(repr(pool))
            )


def _load_state(path, pool):
    if not os.path.exists(path):
        return None
    check_archive(path, "a GreedyPolicySearch state", "state_path")
    try:
        with np.load(path, allow_pickle=False) as state:
            saved_pool, cached, chosen = str(state["pool"]), state["cached"], state["chosen"]
    except Exception as error:
        raise ValueError(
            f"`state_path` '{path}' is not a readable search state (truncated?): {error}"
        ) from None
    if saved_pool != repr(pool):
        raise ValueError(
            f"`state_path` '{path}' belongs to a search with another pool "
            "(different seed, pool size or ops); remove it or use another path."
        )
    return cached, [int(i) for i in chosen]
