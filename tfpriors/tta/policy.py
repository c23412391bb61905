"""TTA policies: lists of sub-policies of 2-3 transforms with magnitudes, saved as JSON.

A :class:`Policy` holds sub-policies; a sub-policy is a short sequence of
``(op name, magnitude bound)`` pairs applied one after the other. Draw ``k``
of a test-time augmentation uses one sub-policy for the whole batch (the
``k``-th one in turn with ``choice="cycle"``, as Greedy Policy Search
evaluates its policies; a random one with ``choice="random"``), and every
image draws its own magnitudes inside it.

Example:
>>> policy = tfpriors.tta.Policy([[("rotate", 9), ("contrast", 5)], [("flip", 0), ("crop", 15)]])
>>> policy.to_json("policy.json")
>>> tfpriors.tta.Policy.from_json("policy.json") == policy
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


def _checked_subpolicy(subpolicy, index):
    """Sub-policy ``index`` of ``subpolicies``, checked, as a tuple of (op, magnitude)."""
    if isinstance(subpolicy, (str, bytes)) or not hasattr(subpolicy, "__iter__"):
        raise ValueError(
            f"`subpolicies`[{index}] must be a list of (op, magnitude) pairs; "
            f"received {subpolicy!r}."
        )
    checked = []
    for position, step in enumerate(subpolicy):
        field = f"`subpolicies`[{index}][{position}]"
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

    Raises:
        ValueError: for an unknown op, a magnitude outside [0, 30], no
            sub-policy or an unknown ``choice``.

    Example:
    >>> policy = tfpriors.tta.Policy([[("rotate", 9), ("contrast", 5)], [("flip", 0)]])
    >>> policy
    Policy([rotate(9) -> contrast(5); flip(0)], choice='cycle')
    >>> len(policy)
    2
    >>> (images, _), _ = tfpriors.datasets.load_digits(flat=False)
    >>> policy.augment(images[:16], draw=0, seed=0).shape
    TensorShape([16, 8, 8, 1])
    """

    def __init__(self, subpolicies, choice="cycle"):
        if isinstance(subpolicies, (str, bytes)) or not hasattr(subpolicies, "__iter__"):
            raise ValueError(
                f"`subpolicies` must be a list of sub-policies; received {subpolicies!r}."
            )
        self.subpolicies = tuple(_checked_subpolicy(sub, i) for i, sub in enumerate(subpolicies))
        if not self.subpolicies:
            raise ValueError("`subpolicies` must hold at least one sub-policy.")
        if choice not in CHOICES:
            raise ValueError(f"`choice` must be one of {list(CHOICES)}; received {choice!r}.")
        self.choice = choice

    # -- built-in policies -------------------------------------------------------

    @classmethod
    def identity(cls):
        """No augmentation: every draw is the original image.

        Example:
        >>> tfpriors.tta.Policy.identity()
        Policy([identity], choice='cycle')
        """
        return cls([[]])

    @classmethod
    def flip(cls):
        """Random horizontal flips.

        Example:
        >>> tfpriors.tta.Policy.flip()
        Policy([flip(0)], choice='cycle')
        """
        return cls([[("flip", 0)]])

    @classmethod
    def flip_crop(cls, magnitude=15):
        """Random flips and random reflect-padded crops (the classic TTA).

        Args:
            magnitude: the crop's magnitude bound in [0, 30]; 15 shifts by up
                to 12.5% of the size each way.

        Example:
        >>> tfpriors.tta.Policy.flip_crop()
        Policy([flip(0) -> crop(15)], choice='cycle')
        """
        return cls([[("flip", 0), ("crop", magnitude)]])

    @classmethod
    def randaugment(cls, n=2, m=9):
        """RandAugment: ``n`` random ops of magnitude bound ``m`` per draw.

        Every ordered choice of ``n`` different ops is a sub-policy, and each
        draw picks one at random (for the whole batch; magnitudes per image).
        ``invert`` is left out.

        Args:
            n: ops per draw, 1, 2 or 3.
            m: the magnitude bound of every op, in [0, 30].

        Returns:
            A :class:`Policy` with ``choice="random"``.

        Example:
        >>> policy = tfpriors.tta.Policy.randaugment(n=2, m=9)
        >>> len(policy), policy.choice
        (210, 'random')
        """
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 1 <= n <= 3:
            raise ValueError(f"`n` must be 1, 2 or 3; received {n!r}.")
        names = [name for name in transforms.available() if name != "invert"]
        return cls(
            [[(name, m) for name in combo] for combo in itertools.permutations(names, n)],
            choice="random",
        )

    # -- applying --------------------------------------------------------------------

    def __len__(self):
        return len(self.subpolicies)

    def subpolicy_for_draw(self, draw, rng=None):
        """The sub-policy used for draw number ``draw``.

        Args:
            draw: the draw's number, an integer >= 0.
            rng: a ``numpy.random.Generator`` for ``choice="random"``
                (default: one seeded with ``draw``).

        Returns:
            A tuple of ``(op name, magnitude)`` pairs.

        Example:
        >>> policy = tfpriors.tta.Policy([[("flip", 0)], [("rotate", 9)]])
        >>> policy.subpolicy_for_draw(3)
        (('rotate', 9.0),)
        """
        if self.choice == "cycle":
            return self.subpolicies[draw % len(self.subpolicies)]
        rng = rng if rng is not None else np.random.default_rng(draw)
        return self.subpolicies[int(rng.integers(len(self.subpolicies)))]

    def augment(self, images, draw=0, seed=None, rng=None):
        """Applies the sub-policy of draw ``draw`` to a batch; magnitudes per image.

        Args:
            images: float ``(batch, height, width, 1 or 3)`` in [0, 1].
            draw: the draw's number (see :meth:`subpolicy_for_draw`).
            seed: an int or a ``keras.random.SeedGenerator`` for reproducible draws.
            rng: a ``numpy.random.Generator`` picking sub-policies with
                ``choice="random"``.

        Returns:
            The augmented images, float32, same shape.

        Example:
        >>> (images, _), _ = tfpriors.datasets.load_digits(flat=False)
        >>> policy = tfpriors.tta.Policy.flip_crop()
        >>> augmented = policy.augment(images[:16], draw=0, seed=0)
        >>> augmented.shape
        TensorShape([16, 8, 8, 1])
        >>> same = tfpriors.tta.Policy.identity().augment(images[:16])
        >>> bool(np.array_equal(same, images[:16]))
        True
        """
        if isinstance(seed, int):
            seed = keras.random.SeedGenerator(seed)
        for name, magnitude in self.subpolicy_for_draw(draw, rng):
            images = transforms.apply(name, images, magnitude, seed=seed)
        return images

    # -- serialization -----------------------------------------------------------------

    def to_dict(self):
        """The policy as a JSON-compatible dict (what :meth:`to_json` writes).

        Example:
        >>> tfpriors.tta.Policy.flip().to_dict()
        {'format': 'tfpriors.tta.Policy', 'version': 1, 'choice': 'cycle',
         'subpolicies': [[{'op': 'flip', 'magnitude': 0.0}]]}
        """
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
        """The policy that :meth:`to_dict` gave ``data`` for.

        Args:
            data: a dict with ``format``, ``version``, ``subpolicies`` and
                optionally ``choice``.

        Raises:
            ValueError: when ``data`` is not such a dict.

        Example:
        >>> policy = tfpriors.tta.Policy.flip_crop()
        >>> tfpriors.tta.Policy.from_dict(policy.to_dict()) == policy
        True
        """
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
        """Writes the policy to ``path`` atomically, as JSON.

        Args:
            path: the file to write.

        Example:
        >>> tfpriors.tta.Policy.flip_crop().to_json("policy.json")
        >>> tfpriors.tta.Policy.from_json("policy.json")
        Policy([flip(0) -> crop(15)], choice='cycle')
        """
        with atomic_path(path) as temporary:
            with open(temporary, "w") as f:
                json.dump(self.to_dict(), f, indent=2)

    @classmethod
    def from_json(cls, path):
        """Reads a policy written by :meth:`to_json`; a malformed file is a ValueError.

        Args:
            path: the JSON file.

        Returns:
            The :class:`Policy`.

        Raises:
            ValueError: when the file is not valid JSON or not a policy.

        Example:
        >>> policy = tfpriors.tta.Policy([[("rotate", 9), ("contrast", 5)]])
        >>> policy.to_json("policy.json")
        >>> tfpriors.tta.Policy.from_json("policy.json") == policy
        True
        """
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
