"""Image sources (folder, npz, idx) and preprocessing for feature extraction; bad input errors."""
from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from hetrain.errors import DataError, HetrainUserError
from hetrain.features.errors import ImageInputError
from hetrain.features.images import folder_label_map, open_images, read_idx


def _digits(n=5, h=28, w=28, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, h, w), dtype=np.uint8), rng.integers(0, 10, size=n).astype(np.uint8)


def _write_idx(path, arr, gz=False):
    code = {np.uint8: 0x08}[arr.dtype.type]
    raw = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    (gzip.open if gz else open)(path, "wb").write(raw)
    return path


def _all(images, batch=2):
    pix, lab = [], []
    for p, y in images.batches(batch):
        pix += list(p)
        lab += list(y)
    return pix, np.array(lab)


# ---------------------------------------------------------------- npz


def test_npz_streams_batches_in_order(tmp_path):
    imgs, labels = _digits(5)
    np.savez(tmp_path / "d.npz", images=imgs, labels=labels)
    s = open_images(tmp_path / "d.npz")
    assert len(s) == 5 and s.labels.dtype == np.int64
    sizes = [len(p) for p, _ in s.batches(2)]
    assert sizes == [2, 2, 1]
    pix, lab = _all(s)
    np.testing.assert_array_equal(np.stack(pix), imgs)
    np.testing.assert_array_equal(lab, labels)
    assert [len(y) for _, y in s.batches(2, limit=3)] == [2, 1]


def test_npz_float_images_in_unit_range(tmp_path):
    imgs, labels = _digits(2)
    np.savez(tmp_path / "f.npz", images=imgs / 255.0, labels=labels)
    pix, _ = _all(open_images(tmp_path / "f.npz"))
    assert pix[0].dtype == np.float32  # no rounding to 8 bits
    np.testing.assert_allclose(np.stack(pix), imgs / 255.0, rtol=1e-6)


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"x": np.zeros((2, 4, 4))}, "no 'images' or 'labels' array"),
        ({"images": np.zeros((2, 4, 4), np.uint8)}, "no 'labels' array"),
        ({"images": np.zeros((2, 4, 4), np.uint8), "labels": np.zeros(3)}, "expected 2 labels"),
        ({"images": np.zeros((2, 4), np.uint8), "labels": np.zeros(2)}, "must have shape"),
        ({"images": np.full((2, 4, 4), 7.0), "labels": np.zeros(2)}, r"within \[0, 1\]"),
        ({"images": np.zeros((2, 4, 4), np.uint8), "labels": np.array([0.5, 1])}, "labels must be integers"),
    ],
)
def test_npz_errors(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ImageInputError, match=message) as exc:
        open_images(tmp_path / "bad.npz")
    assert isinstance(exc.value, HetrainUserError) and isinstance(exc.value, DataError)


def test_not_an_npz(tmp_path):
    (tmp_path / "x.npz").write_bytes(b"garbage")
    with pytest.raises(ImageInputError, match="cannot read"):
        open_images(tmp_path / "x.npz")


def test_real_mnist_npz_if_present():
    from pathlib import Path

    path = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist_test_10k.npz"
    if not path.exists():
        pytest.skip("shared MNIST sample not available")
    s = open_images(path)
    assert len(s) == 10000
    pix, lab = next(s.batches(4))
    assert pix.shape == (4, 28, 28) and pix.dtype == np.uint8 and list(lab) == [7, 2, 1, 0]


# ---------------------------------------------------------------- idx


@pytest.mark.parametrize("gz", [False, True])
def test_idx_images_and_labels(tmp_path, gz):
    imgs, labels = _digits(3)
    suffix = ".gz" if gz else ""
    ip = _write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", imgs, gz)
    lp = _write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", labels, gz)
    np.testing.assert_array_equal(read_idx(ip), imgs)
    pix, lab = _all(open_images(ip, lp))
    np.testing.assert_array_equal(np.stack(pix), imgs)
    np.testing.assert_array_equal(lab, labels)


def test_idx_errors(tmp_path):
    imgs, labels = _digits(3)
    ip = _write_idx(tmp_path / "images-idx3-ubyte", imgs)
    with pytest.raises(ImageInputError, match="--labels"):
        open_images(ip)
    with pytest.raises(ImageInputError, match="expected 3 labels"):
        open_images(ip, _write_idx(tmp_path / "l-idx1-ubyte", labels[:2]))
    with pytest.raises(ImageInputError, match="labels file not found"):
        open_images(ip, tmp_path / "nope")
    truncated = tmp_path / "short-idx3-ubyte"
    truncated.write_bytes(ip.read_bytes()[:-5])
    with pytest.raises(ImageInputError, match="bytes follow"):
        open_images(truncated, tmp_path / "l-idx1-ubyte")
    (tmp_path / "text").write_text("hello")
    with pytest.raises(ImageInputError, match="not an idx file"):
        read_idx(tmp_path / "text")


def test_unknown_file_type_and_missing_path(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ImageInputError, match="cannot read images"):
        open_images(tmp_path / "notes.txt")
    with pytest.raises(ImageInputError, match="not found"):
        open_images(tmp_path / "missing")


# ---------------------------------------------------------------- folders

def _png_tree(root, layout, size=(12, 10), mode="L"):
    pil = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(1)
    for cls, n in layout.items():
        (root / cls).mkdir(parents=True)
        for i in range(n):
            shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
            pil.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(root / cls / f"{i}.png")
    return root


def test_folder_integer_names_are_labels(tmp_path):
    root = _png_tree(tmp_path / "digits", {"3": 2, "7": 1, "10": 1})
    s = open_images(root)
    assert s.label_names == {"10": 10, "3": 3, "7": 7}
    pix, lab = _all(s)
    assert sorted(lab.tolist()) == [3, 3, 7, 10]
    assert all(p.shape == (10, 12) and p.dtype == np.uint8 for p in pix)


def test_folder_names_map_to_sorted_index(tmp_path):
    root = _png_tree(tmp_path / "pets", {"dog": 1, "cat": 2}, mode="RGB")
    s = open_images(root)
    assert s.label_names == {"cat": 0, "dog": 1}
    pix, lab = _all(s)
    assert lab.tolist() == [0, 0, 1] and pix[0].shape == (10, 12, 3)


def test_folder_label_map_rules():
    assert folder_label_map(["0", "1", "9"]) == {"0": 0, "1": 1, "9": 9}
    assert folder_label_map(["b", "a", "3"]) == {"3": 0, "a": 1, "b": 2}
    assert folder_label_map(["1", "01"]) == {"01": 0, "1": 1}  # integer collision -> sorted index
    # issue 10: only ASCII digit names are integers; int() would read '1_0' as 10, ' 2' as 2, '\u0663' as 3
    assert folder_label_map(["1_0", "2"]) == {"1_0": 0, "2": 1}
    assert folder_label_map([" 2", "3"]) == {" 2": 0, "3": 1}
    assert folder_label_map(["\u0663", "4"]) == {"4": 0, "\u0663": 1}
    assert folder_label_map(["-1", "1"]) == {"-1": -1, "1": 1}


def test_empty_folder_and_loose_images(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageInputError, match="no PNG/JPEG images"):
        open_images(tmp_path / "empty")
    root = _png_tree(tmp_path / "flat", {"x": 1})
    (root / "x" / "0.png").rename(root / "loose.png")
    with pytest.raises(ImageInputError, match="loose.png directly in it"):
        open_images(root)


def test_corrupt_image_names_the_file(tmp_path):
    root = _png_tree(tmp_path / "c", {"1": 1})
    (root / "1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    s = open_images(root)
    with pytest.raises(ImageInputError, match="broken.png"):
        _all(s)
