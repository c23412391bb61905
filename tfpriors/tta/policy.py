"""TTA policies: lists of sub-policies of 2-3 transforms with magnitudes, saved as JSON.

A :class:`Policy` holds sub-policies; a sub-policy is a short sequence of
``(op name, magnitude bound)`` pairs applied one after the other. Draw ``k``
of a test-time augmentation uses one sub-policy for the whole batch (the
``k``-th one in turn with ``choice="cycle"``, as Greedy Policy Search
evaluates its policies; a random one with ``choice="random"``), and every
image draws its own magnitudes inside it.

Example:

>>> policy = tta.Policy([[("rotate", 9), ("contrast", 5)], [("flip", 0), ("crop", 15)]])
>>> policy.to_json("policy.json")
>>> tta.Policy.from_json("policy.json") == policy
True
"""

import itertools
import json
import numbers

import keras
import numpy as np

from tfpriors.io import atomic_path
from tfpriors.tta import transforms

FORMAT = "tfpriors.tta.Policy"
VERSION = 1
CHOICES = ("cycle", "random")


def _checked_subpolicy(subpolicy, where):
    if isinstance(subpolicy, (str, bytes)) or not hasattr(subpolicy, "__iter__"):
        raise ValueError(
            f"{where} must be a list of (op, magnitude) pairs; received {subpolicy!r}."
        )
    checked = []
    for position, step in enumerate(subpolicy):
        field = f"{where}[{position}]"
        if isinstance(step, dict):
            if set(step) != {"op", "magnitude"}:
                raise ValueError(
                    f"{field} must have exactly the keys 'op' and 'magnitude'; "
                    f"received {sorted(step)}."
                )
            name, magnitude = step["op"], step["magnitude"]
        else:
            try:
                name, magnitude = step
            except (TypeError, ValueError):
                raise ValueError(
                    f"{field} must be an (op, magnitude) pair; received {step!r}."
                ) from None
        if name not in transforms.available():
            raise ValueError(
                f"{field}.op: unknown op {name!r}; available: {transforms.available()}."
            )
        if (
            isinstance(magnitude, bool)
            or not isinstance(magnitude, numbers.Real)
            or not 0 <= magnitude <= transforms.MAX_MAGNITUDE
        ):
            raise ValueError(
                f"{field}.magnitude must be a number in [0, "
                f"{transforms.MAX_MAGNITUDE}]; received {magnitude!r}."
            )
        checked.append((str(name), float(magnitude)))
    return tuple(checked)


class Policy:
    """A list of sub-policies for test-time augmentation.

    Args:
        subpolicies: a list of sub-policies, each a list of ``(op name,
            magnitude)`` pairs (an empty sub-policy is the identity).
        choice: ``"cycle"`` (draw ``k`` uses sub-policy ``k mod len``) or
            ``"random"`` (each draw picks one at random).
    """

    def __init__(self, subpolicies, choice="cycle"):
        if isinstance(subpolicies, (str, bytes)) or not hasattr(subpolicies, "__iter__"):
            raise ValueError(
                f"subpolicies must be a list of sub-policies; received {subpolicies!r}."
            )
        self.subpolicies = tuple(
            _checked_subpolicy(sub, f"subpolicies[{i}]") for i, sub in enumerate(subpolicies)
        )
        if not self.subpolicies:
            raise ValueError("subpolicies must hold at least one sub-policy.")
        if choice not in CHOICES:
            raise ValueError(f"choice must be one of {list(CHOICES)}; received {choice!r}.")
        self.choice = choice

    # -- built-in policies -------------------------------------------------------

    @classmethod
    def identity(cls):
        """No augmentation: every draw is the original image."""
        return cls([[]])

    @classmethod
    def flip(cls):
        """Random horizontal flips."""
        return cls([[("flip", 0)]])

    @classmethod
    def flip_crop(cls, magnitude=15):
        """Random flips and random reflect-padded crops (the classic TTA)."""
        return cls([[("flip", 0), ("crop", magnitude)]])

    @classmethod
    def randaugment(cls, n=2, m=9):
        """RandAugment: ``n`` random ops of magnitude bound ``m`` per draw.

        Every ordered choice of ``n`` different ops is a sub-policy, and each
        draw picks one at random (for the whole batch; magnitudes per image).
        """
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 1 <= n <= 3:
            raise ValueError(f"n must be 1, 2 or 3; received {n!r}.")
        names = [name for name in transforms.available() if name != "invert"]
        return cls(
            [[(name, m) for name in combo] for combo in itertools.permutations(names, n)],
            choice="random",
        )

    # -- applying --------------------------------------------------------------------

    def __len__(self):
        return len(self.subpolicies)

    def subpolicy_for_draw(self, draw, rng=None):
        """The sub-policy used for draw number ``draw``."""
        if self.choice == "cycle":
            return self.subpolicies[draw % len(self.subpolicies)]
        rng = rng if rng is not None else np.random.default_rng(draw)
        return self.subpolicies[int(rng.integers(len(self.subpolicies)))]

    def augment(self, images, draw=0, seed=None, rng=None):
        """Applies the sub-policy of draw ``draw`` to a batch; magnitudes per image."""
        if isinstance(seed, int):
            seed = keras.random.SeedGenerator(seed)
        for name, magnitude in self.subpolicy_for_draw(draw, rng):
            images = transforms.apply(name, images, magnitude, seed=seed)
        return images

    # -- serialization -----------------------------------------------------------------

    def to_dict(self):
        return {
            "format": FORMAT,
            "version": VERSION,
            "choice": self.choice,
            "subpolicies": [
                [{"op": name, "magnitude": magnitude} for name, magnitude in sub]
                for sub in self.subpolicies
            ],
        }

    @classmethod
    def from_dict(cls, data):
        if not isinstance(data, dict):
            raise ValueError(f"A policy must be a JSON object; received {type(data).__name__}.")
        if data.get("format") != FORMAT:
            raise ValueError(f"format must be {FORMAT!r}; received {data.get('format')!r}.")
        if data.get("version") != VERSION:
            raise ValueError(f"version must be {VERSION}; received {data.get('version')!r}.")
        unknown = set(data) - {"format", "version", "choice", "subpolicies"}
        if unknown:
            raise ValueError(f"unknown policy fields: {sorted(unknown)}.")
        if "subpolicies" not in data:
            raise ValueError("subpolicies is missing.")
        return cls(data["subpolicies"], choice=data.get("choice", "cycle"))

    def to_json(self, path):
        """Writes the policy to ``path`` atomically."""
        with atomic_path(path) as temporary:
            with open(temporary, "w") as f:
                json.dump(self.to_dict(), f, indent=2)

    @classmethod
    def from_json(cls, path):
        """Reads a policy written by :meth:`to_json`; a malformed file is a ValueError."""
        try:
            with open(path) as f:
                data = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"'{path}' is not valid JSON ({error.msg} at line "
                f"{error.lineno}); truncated or not a policy file?"
            ) from None
        return cls.from_dict(data)

    def __eq__(self, other):
        return (
            isinstance(other, Policy)
            and self.subpolicies == other.subpolicies
            and self.choice == other.choice
        )

    def __repr__(self):
        shown = "; ".join(
            " -> ".join(f"{name}({magnitude:g})" for name, magnitude in sub) or "identity"
            for sub in self.subpolicies[:4]
        )
        more = f"; ... ({len(self)} in all)" if len(self) > 4 else ""
        return f"Policy([{shown}{more}], choice={self.choice!r})"
