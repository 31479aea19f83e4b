"""Image sources for feature extraction: a class-per-folder tree, an .npz, or MNIST idx files.

Each loader returns an :class:`ImageSet` that knows its labels up front but reads pixels only
batch by batch, so a large set never sits in memory at model resolution. Pixels come back as
uint8 arrays (or float32 in [0, 1] from an .npz that holds floats), (H, W) for greyscale or
(H, W, 3) for colour; see ``preprocess`` for the rest.
"""
from __future__ import annotations

import gzip
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from hetrain.features.errors import ImageInputError, require

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

# A batch of pixels: one array of equally sized images, or a list of arrays of any size.
Pixels = np.ndarray | list[np.ndarray]


@dataclass
class ImageSet:
    """Labelled images read lazily: ``read(start, stop)`` returns the pixels of that slice."""

    description: str
    labels: np.ndarray  # int64, shape (N,)
    read: Callable[[int, int], Pixels]
    label_names: dict[str, int] = field(default_factory=dict)  # folder name -> label (folders only)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batches(self, batch_size: int, limit: int | None = None) -> Iterator[tuple[Pixels, np.ndarray]]:
        """Yield (pixels, labels) for consecutive slices of at most `batch_size` images."""
        if batch_size < 1:
            raise ImageInputError(f"batch size must be at least 1, got {batch_size}")
        n = len(self) if limit is None else min(len(self), limit)
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            yield self.read(start, stop), self.labels[start:stop]


def open_images(path: str | Path, labels_path: str | Path | None = None) -> ImageSet:
    """Open `path` as a folder tree, an .npz file or an idx3 image file (with `labels_path`)."""
    path = Path(path)
    if not path.exists():
        raise ImageInputError(f"images not found: {path}")
    if path.is_dir():
        if labels_path is not None:
            raise ImageInputError("--labels is only for idx files; a folder's labels are its sub-folder names")
        return load_folder(path)
    if path.suffix.lower() == ".npz":
        if labels_path is not None:
            raise ImageInputError("--labels is only for idx files; an .npz carries its own 'labels' array")
        return load_npz(path)
    if _looks_like_idx(path):
        if labels_path is None:
            raise ImageInputError(f"{path} is an idx image file: give its labels with --labels LABELS-idx1-ubyte")
        return load_idx(path, labels_path)
    raise ImageInputError(
        f"cannot read images from {path}: expected a folder of class sub-folders with PNG/JPEG files, "
        "an .npz with 'images' and 'labels', or an MNIST idx3-ubyte file (optionally .gz)"
    )


# ---------------------------------------------------------------- folder of class sub-folders


def folder_label_map(names: Sequence[str]) -> dict[str, int]:
    """Integer folder names are their own labels ('0'..'9' for digits); otherwise sorted index.

    Integer means ASCII digits with an optional minus sign: int() alone would also read '1_0' as 10,
    ' 2' as 2 and non-ASCII digits, labels the user never wrote.
    """
    if not all(re.fullmatch(r"-?[0-9]+", name) for name in names):
        return {name: i for i, name in enumerate(sorted(names))}
    as_int = {name: int(name) for name in names}
    if len(set(as_int.values())) != len(as_int):  # '1' and '01' would collide
        return {name: i for i, name in enumerate(sorted(names))}
    return as_int


def load_folder(root: Path) -> ImageSet:
    """Images under ``root/<class>/`` (any depth below the class folder), labelled by class."""
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files: list[Path] = []
    names: list[str] = []
    for d in class_dirs:
        found = sorted(p for p in d.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        files += found
        names += [d.name] * len(found)
    if not files:
        loose = [p.name for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES][:3]
        hint = f" (found {', '.join(loose)} directly in it: move images into one sub-folder per class)" if loose else ""
        raise ImageInputError(
            f"no PNG/JPEG images in class sub-folders of {root}{hint}; expected {root}/<label>/<image>.png"
        )
    mapping = folder_label_map(sorted(set(names)))
    labels = np.array([mapping[n] for n in names], dtype=np.int64)
    return ImageSet(f"folder {root} ({len(files)} images)", labels, lambda a, b: [_read_image(f) for f in files[a:b]], mapping)


def _read_image(path: Path) -> np.ndarray:
    """Decode one file to uint8 (H, W) greyscale or (H, W, 3) RGB."""
    pil = require("PIL.Image", "reading PNG/JPEG images")
    try:
        with pil.open(path) as img:
            img.load()
            grey = img.mode in ("1", "L", "LA", "I", "I;16", "F")
            return np.asarray(img.convert("L" if grey else "RGB"), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as exc:  # PIL reports corrupt files with these
        raise ImageInputError(f"cannot decode image {path}: {exc}") from exc


# ---------------------------------------------------------------- .npz


def load_npz(path: Path) -> ImageSet:
    """An .npz with `images` (N,H,W) or (N,H,W,C), uint8 or float in [0,1], and `labels` (N,)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("images", "labels") if k not in data.files]
            if missing:
                raise ImageInputError(
                    f"{path} has no {' or '.join(repr(k) for k in missing)} array (it holds {data.files}); "
                    "expected 'images' (N,H,W[,C]) and 'labels' (N,)"
                )
            images, labels = data["images"], data["labels"]
    except ImageInputError:
        raise
    except (OSError, ValueError) as exc:
        raise ImageInputError(f"cannot read {path} as an .npz file: {exc}") from exc
    images = _checked_images(images, str(path))
    return ImageSet(f"npz {path} ({len(images)} images)", _as_labels(labels, len(images), str(path)), lambda a, b: images[a:b])


def _checked_images(images: np.ndarray, where: str) -> np.ndarray:
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if not (images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3)):
        raise ImageInputError(f"{where}: 'images' must have shape (N,H,W) or (N,H,W,3), got {images.shape}")
    if len(images) == 0:
        raise ImageInputError(f"{where}: 'images' is empty")
    if images.dtype == np.uint8:
        return images
    if np.issubdtype(images.dtype, np.floating):
        if not np.isfinite(images).all() or images.min() < 0 or images.max() > 1:
            raise ImageInputError(f"{where}: float 'images' must be finite and within [0, 1]")
        return images.astype(np.float32, copy=False)  # kept as is: no 8-bit rounding
    raise ImageInputError(f"{where}: 'images' must be uint8 (0-255) or float in [0, 1], got {images.dtype}")


def _as_labels(labels: np.ndarray, n: int, where: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:  # a column vector is fine too
        labels = labels[:, 0]
    if labels.shape != (n,):
        raise ImageInputError(f"{where}: expected {n} labels (one per image), got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.issubdtype(labels.dtype, np.floating) or not np.all(np.mod(labels, 1) == 0):
            raise ImageInputError(f"{where}: labels must be integers, got {labels.dtype}")
    return labels.astype(np.int64)


# ---------------------------------------------------------------- MNIST idx


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _open_maybe_gzip(path: Path):
    with open(path, "rb") as fh:
        magic = fh.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def _looks_like_idx(path: Path) -> bool:
    try:
        with _open_maybe_gzip(path) as fh:
            head = fh.read(4)
    except OSError:
        return False
    return len(head) == 4 and head[0] == 0 and head[1] == 0 and head[2] in _IDX_DTYPES and 1 <= head[3] <= 4


def read_idx(path: str | Path) -> np.ndarray:
    """Read an idx file (the MNIST format: big-endian header, then raw values), gzip or not."""
    path = Path(path)
    try:
        with _open_maybe_gzip(path) as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise ImageInputError(f"cannot read idx file {path}: {exc}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or not 1 <= raw[3] <= 4:
        raise ImageInputError(f"{path} is not an idx file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ImageInputError(f"{path}: truncated idx header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ImageInputError(f"{path}: header says shape {shape} ({expected} bytes) but {len(raw) - header} bytes follow")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def load_idx(images_path: str | Path, labels_path: str | Path) -> ImageSet:
    """MNIST-style idx3-ubyte images with idx1-ubyte labels (either may be gzipped)."""
    if not Path(labels_path).exists():
        raise ImageInputError(f"labels file not found: {labels_path}")
    images = _checked_images(read_idx(images_path), str(images_path))
    labels = read_idx(labels_path)
    if labels.ndim != 1:
        raise ImageInputError(f"{labels_path}: labels idx file must be 1-D, got shape {labels.shape}")
    labels = _as_labels(labels, len(images), str(labels_path))
    return ImageSet(f"idx {images_path} ({len(images)} images)", labels, lambda a, b: images[a:b])
