"""`hetrain features`: images -> frozen CNN -> feature CSV (client side, plaintext).

torch is imported only inside ``run``, so the rest of the CLI works without the extra.
"""
from __future__ import annotations

import argparse
import sys

from hetrain.errors import HetrainUserError

BACKBONE_CHOICES = ("regnet_x_400mf", "torchscript", "onnx")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", required=True, metavar="PATH",
                        help="folder of class sub-folders with PNG/JPEG files, an .npz with 'images' and "
                        "'labels', or an MNIST idx3-ubyte file (optionally .gz)")
    parser.add_argument("--labels", metavar="PATH", help="idx1-ubyte labels file (only with idx images; default: "
                                                         "none)")
    parser.add_argument("--backbone", default="regnet_x_400mf", choices=BACKBONE_CHOICES,
                        help="regnet_x_400mf (torchvision state dict), or any TorchScript / ONNX model file")
    parser.add_argument("--weights", metavar="FILE",
                        help="local weights: state dict .pth (regnet_x_400mf), .pt (torchscript), .onnx (onnx) "
                             "(default: the backbone's own file)")
    parser.add_argument("--random-weights", action="store_true",
                        help="regnet_x_400mf with random weights (for smoke tests only: the features are meaningless)")
    parser.add_argument("--out", required=True, metavar="FEATURES.csv", help="output CSV (label, then features)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
    parser.add_argument("--limit", type=int, help="use only the first N images (default: all)")
    parser.add_argument("--size", type=int, default=224, help="model input side in pixels (default 224)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from hetrain.features.errors import FeatureError, require

    require("torch", "hetrain features")
    import torch

    from hetrain.features.backbones import load_backbone, torch_backbone
    from hetrain.features.extract import extract_to_csv
    from hetrain.features.images import open_images
    from hetrain.features.regnet import regnet_x_400mf
    from hetrain.outputs import check_writable

    if args.limit is not None and args.limit < 1:
        raise FeatureError("--limit must be at least 1")
    check_writable(args.out, "feature CSV")  # before any work; extract_to_csv falls back if it fails later
    if args.threads:
        torch.set_num_threads(args.threads)
    _check_device(torch, args.device)
    images = open_images(args.images, args.labels)
    if images.label_names:
        mapping = ", ".join(f"{name}->{label}" for name, label in sorted(images.label_names.items(), key=lambda kv: kv[1]))
        print(f"labels from sub-folders: {mapping}", file=sys.stderr)

    if args.random_weights:
        if args.backbone != "regnet_x_400mf" or args.weights:
            raise FeatureError("--random-weights is only for --backbone regnet_x_400mf without --weights")
        print("WARNING: random weights, the features are meaningless (smoke test only)", file=sys.stderr)
        backbone = torch_backbone("regnet_x_400mf", regnet_x_400mf(), args.device)
    else:
        backbone = load_backbone(args.backbone, args.weights, args.device)

    try:
        stats = extract_to_csv(images, backbone, args.out, args.batch_size, args.limit, args.size, not args.quiet)
    except HetrainUserError:
        raise
    except RuntimeError as exc:  # e.g. a TorchScript/ONNX model that wants another input shape
        raise FeatureError(f"the {args.backbone} backbone failed on a batch of shape "
                           f"(B, 3, {args.size}, {args.size}): {exc}") from exc
    print(f"wrote {stats.n_images} rows x (1 label + {stats.dim} features) to {args.out} "
          f"in {stats.seconds:.1f} s ({stats.images_per_second:.1f} images/s)")
    return 0


def _check_device(torch, device: str) -> None:
    """Refuse a device this torch build cannot use before any work starts."""
    from hetrain.features.errors import FeatureError

    try:
        kind = torch.device(device).type
    except RuntimeError as exc:
        raise FeatureError(f"unknown --device {device!r}: {exc}") from exc
    if kind == "cuda" and not torch.cuda.is_available():
        raise FeatureError(f"--device {device}: this torch build has no usable CUDA GPU; use --device cpu")
