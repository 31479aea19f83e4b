"""Stream images through a backbone and write the feature CSV the trainers read.

CSV layout (as ``regnet_x_400mf_mnist_train_first256.csv``): no header; column 0 the label as
a float (``5.0``); then the features, each written as the shortest text that reads back to the
same float32. Batches are written as they are computed, so memory stays at one batch.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from hetrain.features.images import ImageSet
from hetrain.features.preprocess import INPUT_SIZE, to_model_input


@dataclass
class ExtractStats:
    """What one extraction run did."""

    n_images: int
    dim: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.n_images / self.seconds if self.seconds > 0 else float("inf")


def iter_features(
    images: ImageSet,
    backbone: Callable,
    batch_size: int = 64,
    limit: int | None = None,
    size: int = INPUT_SIZE,
    progress: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (labels, features) per batch; features are float32 (B, D)."""
    from tqdm import tqdm  # a core dependency, imported here to keep `import hetrain` light

    total = len(images) if limit is None else min(len(images), limit)
    with tqdm(total=total, unit="img", desc="features", disable=not progress) as bar:
        for pixels, labels in images.batches(batch_size, limit):
            feats = backbone(to_model_input(pixels, size))
            bar.update(len(labels))
            yield labels, feats


def format_rows(labels: np.ndarray, feats: np.ndarray) -> str:
    """CSV text for one batch: ``label.0,f1,...,fD`` per line."""
    feats = np.asarray(feats, dtype=np.float32)
    # str(np.float32) is the shortest round-trip form, e.g. 4.153106 / 0.0 / 6.062206e-05
    return "".join(f"{float(y)}," + ",".join(map(str, row)) + "\n" for y, row in zip(labels, feats))


def extract_to_csv(
    images: ImageSet,
    backbone: Callable,
    out: str | Path,
    batch_size: int = 64,
    limit: int | None = None,
    size: int = INPUT_SIZE,
    progress: bool = True,
) -> ExtractStats:
    """Write the feature CSV to `out` (atomically, so a failed run leaves no half file; if `out`
    refuses the bytes, e.g. a full disk, the rows go on to a fallback file and OutputError says where)."""
    from hetrain.outputs import open_output

    n, dim, t0 = 0, 0, time.perf_counter()
    with open_output(out, "feature CSV") as fh:
        for labels, feats in iter_features(images, backbone, batch_size, limit, size, progress):
            fh.write(format_rows(labels, feats))
            n, dim = n + len(labels), feats.shape[1]
    return ExtractStats(n, dim, time.perf_counter() - t0)
