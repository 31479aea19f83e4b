"""Feature-extraction throughput: images per second through RegNet_X_400MF on MNIST test images.

    python bench/features.py [--weights regnet_x_400mf.pth] [--limit 1000] [--batch-size 64]

Without --weights the network has random weights: the speed is the same (same graph, same
shapes), the features are meaningless, and the output says so. Reports the split between
preprocessing (resize + normalise), the forward pass and CSV formatting, and the peak memory.
"""
from __future__ import annotations

import argparse
import platform
import resource
import sys
import time
from pathlib import Path

DEFAULT_NPZ = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist_test_10k.npz"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default=str(DEFAULT_NPZ), help="npz/folder/idx images (default: MNIST test 10k)")
    ap.add_argument("--weights", help="torchvision regnet_x_400mf state dict (default: random weights)")
    ap.add_argument("--limit", type=int, help="use only the first N images (default: all)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args(argv)

    import torch

    from hetrain.features.backbones import load_backbone, torch_backbone
    from hetrain.features.extract import format_rows
    from hetrain.features.images import open_images
    from hetrain.features.preprocess import to_model_input
    from hetrain.features.regnet import regnet_x_400mf

    if args.threads:
        torch.set_num_threads(args.threads)
    images = open_images(args.images)
    if args.weights:
        backbone, weights = load_backbone("regnet_x_400mf", args.weights), args.weights
    else:
        backbone, weights = torch_backbone("regnet_x_400mf", regnet_x_400mf()), "RANDOM (no --weights; speed only)"
    n = len(images) if args.limit is None else min(args.limit, len(images))

    backbone(to_model_input(next(images.batches(2))[0]))  # warm-up: first call allocates
    t_pre = t_fwd = t_csv = 0.0
    start = time.perf_counter()
    for pixels, labels in images.batches(args.batch_size, n):
        t0 = time.perf_counter()
        x = to_model_input(pixels)
        t1 = time.perf_counter()
        feats = backbone(x)
        t2 = time.perf_counter()
        format_rows(labels, feats)
        t3 = time.perf_counter()
        t_pre, t_fwd, t_csv = t_pre + t1 - t0, t_fwd + t2 - t1, t_csv + t3 - t2
    total = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB

    print(f"images       : {n} from {args.images}")
    print(f"weights      : {weights}")
    print(f"machine      : {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, batch {args.batch_size}")
    print(f"total        : {total:.1f} s -> {n / total:.1f} images/s")
    print(f"  preprocess : {t_pre:.1f} s   forward: {t_fwd:.1f} s   csv format: {t_csv:.1f} s")
    print(f"peak RSS     : {peak_mb:.0f} MB")
    return 0


if __name__ == "__main__":
    from hetrain.errors import HetrainUserError

    try:
        sys.exit(main())
    except HetrainUserError as exc:  # missing data or weights: say so without a traceback
        sys.exit(f"bench/features.py: error: {exc}")
