"""Data the package ships, reachable by name wherever ``--data`` is taken: a first run needs no
download and no data of one's own.

``cifar10-sample``: 3,500 CIFAR-10 images (Krizhevsky 2009, https://www.cs.toronto.edu/~kriz/cifar.html),
300 training and 50 test images per class, the first ones of each class in the shared JPEG copy of
the data set (32×32 JPEGs), stored as a JPEG store (:mod:`alexnet.data.jpeg`) holding those JPEG
files' bytes unchanged; its mean image and RGB PCA are those of its 3,000 training images.
src/alexnet/sample/README.md says where it comes from, its licence terms and how it was made.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

SAMPLES = {"cifar10-sample": "sample/cifar10"}
SAMPLE_SIZE = 32  # the samples' stored side, pixels


def sample_store_path(name: str) -> Path:
    """The folder of a shipped sample store (inside the installed package)."""
    return Path(str(resources.files("alexnet").joinpath(SAMPLES[name])))
