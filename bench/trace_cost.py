"""What a traced plan costs (models/trace.py): Trainer.plan with an empty trace cache (every iteration
it needs traced on zeros) and with a warm one (the same plan again), medians of interleaved repeats.

    PYTHONPATH=src python bench/trace_cost.py [--repeats 5]

Shapes: the seed workload (RegNet features: 128 rows, 400 features, 10 classes), mlp 400-32-16-10 and
400-16-10, Iris for mlp-diagonal (120 rows, 4 features, 3 classes), and the small shapes of
tests/test_trace_plan.py.
"""
from __future__ import annotations

import argparse
import statistics
import time

from hetrain.models import trace
from hetrain.models.mlr_minibatch import MiniBatchMLR
from hetrain.models.mlp_dvr import MLPTrainer
from hetrain.models.mlp_diagonal import DiagonalMLPTrainer
from hetrain.models.mlr import MLRTrainer

CASES = [
    ("seed", "mlr (3 iterations)", lambda: MLRTrainer(iterations=3), (128, 400, 10), "n16384-deep"),
    ("seed", "mlr (3 iterations)", lambda: MLRTrainer(iterations=3), (128, 400, 10), "n32768"),
    ("seed", "mlr-minibatch", lambda: MiniBatchMLR(), (128, 400, 10), "n16384"),
    ("seed", "mlp-dvr 400-32-16-10 (2 it.)", lambda: MLPTrainer(hidden=[32, 16], iterations=2), (128, 400, 10),
     "n32768"),
    ("seed", "mlp-dvr 400-16-10 (3 it.)", lambda: MLPTrainer(hidden=[16], iterations=3, momentum="none"),
     (128, 400, 10), "n16384-deep"),
    ("seed", "mlp-diagonal iris", lambda: DiagonalMLPTrainer(), (120, 4, 3), "n32768"),
    ("test", "mlr (2 iterations)", lambda: MLRTrainer(iterations=2), (20, 5, 3), "n4096-test"),
    ("test", "mlr-minibatch", lambda: MiniBatchMLR(epochs=1, batch_size=32), (20, 5, 3), "n4096-test"),
    ("test", "mlp-dvr 8-4-3", lambda: MLPTrainer(hidden=[4], momentum="none"), (20, 8, 3), "n16384-deep"),
    ("test", "mlp-diagonal", lambda: DiagonalMLPTrainer(sigmoid="deg3:8", iterations=2), (20, 4, 3), "n16384-deep"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(f"{'shapes':6} {'trainer':32} {'preset':12} {'cold s':>8} {'warm s':>8}  traced steps")
    for kind, label, make, shape, preset in CASES:
        cold, warm = [], []
        for _ in range(args.repeats):  # cold and warm interleaved
            trace.clear_cache()
            t0 = time.perf_counter()
            make().plan(*shape, preset)
            cold.append(time.perf_counter() - t0)
            steps = len(trace._CACHE)
            t0 = time.perf_counter()
            make().plan(*shape, preset)
            warm.append(time.perf_counter() - t0)
        print(f"{kind:6} {label:32} {preset:12} {statistics.median(cold):8.3f} {statistics.median(warm):8.4f}  {steps}")


if __name__ == "__main__":
    main()
