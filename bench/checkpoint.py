"""Checkpoint cost on seed-MLR: the whole state rewritten every iteration (before) against only what
changed appended (after: protocol/checkpoint.StateCheckpoint), interleaved in one run.

    python bench/checkpoint.py                             # seed-MLR, 3 iterations, n16384-deep, 3 repeats
    python bench/checkpoint.py --iterations 6 --repeats 3 --preset n16384-deep --out /tmp/hetrain-ckpt

Seed-MLR: RegNet rows 0-127, 10 classes, real CKKS (SEAL), the job bundle built once by
bench/scaling.py's ``build_mlr_job``. For each repeat, the server's training (MLRTrainer.server_train
in this process, serial executor: what the server runs with --workers 1) runs once with each
checkpoint hook in turn (alternating which goes first). mlr's state after iteration t is every
gradient H_0..H_t, so the "before" hook writes 1 + 2 + ... + T gradients over a run and the
"after" hook T. Printed: medians of training seconds, of seconds inside ``save`` (serialise,
write, fsync, rename), their share of training, bytes written, and the ciphertexts serialised;
the two runs' decrypted outputs must agree exactly (the same arithmetic), which is checked.

"Before" is the checkpoint as it was (a copy kept here: one container of every state ciphertext,
written to a temporary sibling, fsynced and renamed each iteration).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
sys.path.insert(0, os.path.dirname(__file__))
from hetrain._atomic import atomic_write  # noqa: E402
from hetrain.ckks.container import pack  # noqa: E402
from hetrain.ckks.executor import SerialExecutor  # noqa: E402
from hetrain.models.base import get_trainer  # noqa: E402
from hetrain.protocol import files  # noqa: E402
from hetrain.protocol.checkpoint import StateCheckpoint  # noqa: E402


class RewriteCheckpoint:
    """The checkpoint before: every ciphertext of the state packed and written whole, every save."""

    def __init__(self, path, engine) -> None:
        self.path, self.engine, self.bytes_written, self.records = pathlib.Path(path), engine, 0, 0

    def save(self, state: dict, meta: dict) -> None:
        flat = [ct for v in state.values() for ct in v]
        header = {"kind": "hetrain_checkpoint", "key_id": self.engine.key_id, "n": len(flat),
                  "meta": json.dumps({**meta, "_names": {k: len(v) for k, v in state.items()}})}
        blob = pack(header, {str(i): self.engine.serialize(ct) for i, ct in enumerate(flat)})
        atomic_write(self.path, blob, durable=True)
        self.bytes_written += len(blob)
        self.records += 1

    def load(self):
        return None


class Timed:
    """A checkpoint hook that times its ``save`` calls and counts the ciphertexts they serialise."""

    def __init__(self, inner, engine) -> None:
        self.inner, self.engine, self.seconds, self.saves = inner, engine, 0.0, 0

    def load(self):
        return self.inner.load()

    def save(self, state, meta) -> None:
        before = self.engine.counters.snapshot()
        t0 = time.perf_counter()
        self.inner.save(state, meta)
        self.seconds += time.perf_counter() - t0
        self.saves += self.engine.counters.diff(before).get("serialize", 0)


def run(jobdir: pathlib.Path, kind: str, scratch: pathlib.Path) -> dict:
    engine, inputs = files.load_job_public(jobdir)
    job = json.loads((jobdir / files.JOB).read_text())
    trainer = get_trainer(job["model"]).from_job(job)
    path = scratch / f"{kind}.ckpt"
    path.unlink(missing_ok=True)
    inner = RewriteCheckpoint(path, engine) if kind == "before" else StateCheckpoint(path, engine, "bench")
    hook = Timed(inner, engine)
    t0 = time.perf_counter()
    out = trainer.server_train(engine, inputs, job, checkpoint=hook, executor=SerialExecutor(engine))
    train_s = time.perf_counter() - t0
    outputs = {k: [engine.serialize(ct) for ct in v] for k, v in out.items()}
    return {"train_s": train_s, "save_s": hook.seconds, "bytes": inner.bytes_written, "records": inner.records,
            "serialised": hook.saves, "file_bytes": path.stat().st_size, "outputs": outputs}


def main() -> None:
    from scaling import build_mlr_job

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="n16384-deep")
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=None, help="scratch directory (default: a temporary one)")
    args = p.parse_args()
    scratch = pathlib.Path(args.out or tempfile.mkdtemp(prefix="hetrain-ckpt-"))
    scratch.mkdir(parents=True, exist_ok=True)
    jobdir = scratch / "job"
    info = build_mlr_job(jobdir, args.preset, args.iterations)
    print(f"seed-MLR: {info['rows']} rows, {args.iterations} iterations, {args.preset}, "
          f"{info['n_inputs']} input ciphertexts; load average {os.getloadavg()[0]:.2f}")
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    for r in range(args.repeats):
        order = ("before", "after") if r % 2 == 0 else ("after", "before")
        for kind in order:
            runs[kind].append(run(jobdir, kind, scratch))
            got = runs[kind][-1]
            print(f"  repeat {r + 1} {kind:6s}: training {got['train_s']:.2f} s, in save {got['save_s']:.2f} s, "
                  f"{got['bytes'] / 1e6:.1f} MB written", flush=True)
    same = all(a["outputs"] == b["outputs"] for a, b in zip(runs["before"], runs["after"]))
    print(f"\nmedians of {args.repeats} (interleaved), serial training with a checkpoint after every iteration:")
    print(f"{'':8s} {'train s':>8s} {'save s':>7s} {'save %':>7s} {'MB written':>10s} {'cts saved':>9s} "
          f"{'file MB':>8s}")
    for kind, rs in runs.items():
        med = {k: statistics.median(x[k] for x in rs) for k in ("train_s", "save_s", "bytes", "file_bytes")}
        print(f"{kind:8s} {med['train_s']:8.2f} {med['save_s']:7.2f} {100 * med['save_s'] / med['train_s']:6.1f}% "
              f"{med['bytes'] / 1e6:10.1f} {rs[0]['serialised']:9d} {med['file_bytes'] / 1e6:8.1f}")
    ratio = statistics.median(x["save_s"] for x in runs["before"]) / statistics.median(x["save_s"] for x in runs["after"])
    print(f"checkpoint time before / after: {ratio:.2f}x; outputs identical (bit for bit): {same}")


if __name__ == "__main__":
    main()
