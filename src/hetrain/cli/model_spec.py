"""`hetrain model-spec`: the public description of a model for encrypted queries (no weights)."""
from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="the model owner's model file (stays with its owner)")
    p.add_argument("--out", required=True, metavar="SPEC", help="spec file to publish to query owners (JSON)")


def run(args) -> int:
    from hetrain import ckks
    from hetrain.outputs import check_writable, write_output
    from hetrain.protocol import TrainedModel
    from hetrain.protocol.model_spec import model_spec

    out = check_writable(args.out, "model spec")
    spec = model_spec(TrainedModel.load(args.model))
    write_output(out, json.dumps(spec, indent=1), "model spec")
    preset = ckks.smallest_preset_with_levels(spec["levels"])
    print(f"spec {spec['spec_id']}: {spec['model']}, {spec['n_features']} features, {spec['n_classes']} classes, "
          f"layers {spec['layer_sizes']}, needs {spec['levels']} level(s) and no Galois key; written to {out}")
    print(f"query owners: hetrain keygen --out KEYS --preset {preset}; hetrain encrypt-queries --keys KEYS "
          f"--data Q.csv --model-spec {out} --out QJOB")
    return 0
