"""Training past the depth limit: the client's answers on the refresh channel.

Refresh modes (``--refresh``):
* ``none``: the job must fit in one modulus chain (a clear DepthPlanError otherwise);
* ``client``: the server process (``python -m hetrain.protocol.server_main``, public material only)
  sends its state over the refresh channel (refresh_channel.py) when the next iteration would not
  fit; this process (the client, with the secret key) decrypts every ciphertext, lets the trainer
  check the values (optional hook), re-encrypts them at the top level and sends them back;
* ``bootstrap``: the server calls ``engine.bootstrap`` itself (desilo, openfhe backends), no interaction.

Why no rounding or noise flooding here (protocol/client.py applies them to *released* decryptions): the
decrypted values never leave the client. The server receives fresh encryptions, which are
semantically secure whatever they encrypt, so it learns nothing new from a refresh. The only thing
derived from decryptions that the server sees is the continue/stop bit of early stopping.

``ClientRefresher`` is trainer-agnostic (all three trainers use it). The mini-batch MLR job
(client_jobs.MiniBatchJob) adds client-side validation (``MLRValidation``): at every epoch end the
server sends the state for evaluation (the ``monitor`` hook), the client measures accuracy and loss
on its own held-out rows, keeps the best model and answers continue/stop; when a refresh is due at
the same time, one round trip does both. Its state is kept in the job's private record
(KEYS/jobs/<id>/), so a data owner who detaches and comes back (``hetrain refresh``) continues it,
and ``hetrain decrypt`` releases the best epoch.
"""
from __future__ import annotations

import dataclasses
import io
import json
import pathlib
import time
from typing import Callable

import numpy as np

from hetrain.ckks import CKKSError
from hetrain.models.early_stopping import EarlyStopping, validation_metrics

STATE_JSON = "validation.json"
STATE_NPZ = "validation.npz"

# hook signatures on decrypted vectors: name -> list of slot vectors
Check = Callable[[dict, int], None]
Evaluate = Callable[[dict, int, int], bool]


class ClientRefresher:
    """The client's answers on the refresh channel: decrypt everything, check, re-encrypt at the top.

    ``check(vectors, step)``: optional trainer hook that may raise (e.g. the next sigmoid inputs
    would leave the polynomial's interval); ``evaluate(vectors, step, epoch) -> stop``: optional
    epoch-end hook (validation, early stopping). Without an evaluator, epochs never stop early.
    """

    def __init__(self, engine, check: Check | None = None, evaluate: Evaluate | None = None) -> None:
        if not engine.has_secret_key:
            raise CKKSError("the refresh client needs the engine with the secret key")
        self.engine, self.check, self.evaluator = engine, check, evaluate

    def _decrypt(self, state: dict) -> dict:
        return {k: [self.engine.decrypt(ct) for ct in (v if isinstance(v, list) else [v])] for k, v in state.items()}

    def _encrypt(self, state: dict, vectors: dict) -> dict:
        # a fresh encryption at max_level of exactly what was decrypted (unused slots included):
        # to the trainer it is the same state with its levels restored
        fresh = {k: [self.engine.encrypt(v) for v in vs] for k, vs in vectors.items()}
        return {k: (fresh[k] if isinstance(v, list) else fresh[k][0]) for k, v in state.items()}

    def __call__(self, state: dict, step: int | None = None) -> dict:
        """The ``refresh`` hook's signature (as the server's channel): ``refresh``."""
        return self.refresh(state, step)

    def refresh(self, state: dict, step: int | None) -> dict:
        """Decrypt ``state`` (name -> ciphertext or list), run ``check(vectors, step)`` (which may raise to stop the
        run, or return altered vectors) and return the vectors freshly encrypted at the top level, same layout.
        """
        vectors = self._decrypt(state)
        if self.check is not None:
            vectors = self.check(vectors, step) or vectors
        return self._encrypt(state, vectors)

    def evaluate(self, state: dict, step: int, epoch: int, refresh: bool = False) -> tuple[dict | None, bool]:
        """Decrypt ``state`` and ask the evaluator whether to stop after ``epoch``. Returns ``(fresh state or None,
        stop)``: the state is re-encrypted (after ``check``) only when ``refresh`` is asked and not stopping.
        """
        vectors = self._decrypt(state)
        stop = bool(self.evaluator(vectors, step, epoch)) if self.evaluator is not None else False
        if not refresh or stop:
            return None, stop
        if self.check is not None:
            vectors = self.check(vectors, step) or vectors
        return self._encrypt(state, vectors), stop


class MLRValidation:
    """Mini-batch MLR on the client: the checks at each refresh, validation per epoch, the best
    model so far, early stopping (models/early_stopping.py) and the wall-time budget.

    At each refresh (``check``) the client *retracts* the weights when the next step's sigmoid
    inputs would come within 10% of the interval's end (MiniBatchMLR.retraction: each class's W
    and D scaled so that max |x·w_c| = 0.9·bound over the training rows): the run adapts instead
    of dying, says so in ``log`` and the history, and the twin replays the same retraction. The
    server only ever receives fresh encryptions: no decrypted-derived number crosses to it, and
    the continue/stop bit of ``evaluate`` is the only answer it reads.
    """

    def __init__(self, trainer, X_val, y_val, n_features: int, n_classes: int, slots: int, X_train=None, *,
                 retract: bool = True, time_limit: float | None = None, log=None,
                 state_dir: pathlib.Path | None = None, twin_at: Callable[[int], np.ndarray] | None = None,
                 twin_bound: float | None = None, on_epoch: Callable[[dict], None] | None = None) -> None:
        self.trainer, self.d, self.c, self.slots = trainer, n_features, n_classes, slots
        self.X_val = None if X_val is None else np.asarray(X_val, dtype=np.float64)
        self.y_val = None if y_val is None else np.asarray(y_val)
        self.X_train = None if X_train is None else np.asarray(X_train, dtype=np.float64)
        self.retract, self.time_limit, self.log = retract, time_limit, log or (lambda msg: None)
        self.history: list[dict] = []  # one entry per decryption: step, kind, epoch, val accuracy/loss
        self.best: tuple[float, np.ndarray] | None = None
        self.best_step: int | None = None  # the step count of ``best`` (its twin: twin_long(..., best_step))
        self.stopper = EarlyStopping(trainer.config["patience"])
        self.started = time.time()  # wall clock: a data owner who comes back keeps the job's time limit
        self.stop_reason: str | None = None  # why training ended before its planned epochs
        self.state_dir = None if state_dir is None else pathlib.Path(state_dir)
        self.twin_at = twin_at  # step -> the plaintext twin's W after that many steps
        self.twin_bound = twin_bound  # the job's bound on |decrypted − twin| (twin_bound.py)
        # called with each epoch's history entry (plus "best", "elapsed_s") as it is evaluated, in place of
        # the log line: a progress display shows it live (protocol/progress.py)
        self.on_epoch = on_epoch
        self._load()

    def verify(self, W: np.ndarray, step: int) -> None:
        """Every state the client decrypts is compared with the twin after the same steps: a server that
        returns other values than the computation asked for is stopped at once (TwinMismatch; the
        server hears the fixed code client_refused, never a number)."""
        if self.twin_at is not None:
            from .client import check_twin

            twin = self.twin_at(step)
            check_twin(float(np.max(np.abs(W - twin))), twin, what=f"the state after step {step}",
                       bound=self.twin_bound)

    # -------------------------------------------------------------- kept in the job's private record
    def _load(self) -> None:
        if self.state_dir is None or not (self.state_dir / STATE_JSON).is_file():
            return
        st = json.loads((self.state_dir / STATE_JSON).read_bytes())
        self.history, self.best_step, self.started = st["history"], st["best_step"], st["started"]
        self.stop_reason = st["stop_reason"]
        self.stopper = EarlyStopping(**st["stopper"])
        if st.get("best_accuracy") is not None:
            with np.load(self.state_dir / STATE_NPZ) as f:
                self.best = (st["best_accuracy"], f["W"])

    def _save(self) -> None:
        if self.state_dir is None:
            return
        from .files import atomic_write

        if self.best is not None:
            buf = io.BytesIO()
            np.savez(buf, W=self.best[1])
            atomic_write(self.state_dir / STATE_NPZ, buf.getvalue(), mode=0o600)
        st = {"history": self.history, "best_step": self.best_step, "started": self.started,
              "stop_reason": self.stop_reason, "stopper": _json_floats(dataclasses.asdict(self.stopper)),
              "best_accuracy": None if self.best is None else float(self.best[0])}
        atomic_write(self.state_dir / STATE_JSON, json.dumps(st), mode=0o600)

    def weights(self, vectors: dict) -> np.ndarray:
        """The weight matrix W (c × d) unpacked from the decrypted state's "W" slot vectors."""
        return self.trainer.unpack(vectors["W"], self.d, self.c, self.slots)

    def _record(self, W: np.ndarray, step: int, kind: str) -> dict:
        entry = {"step": step, "kind": kind}
        if self.X_val is not None:
            entry.update(validation_metrics(W, self.X_val, self.y_val))
        self.history.append(entry)
        return entry

    def check(self, vectors: dict, step: int) -> dict:
        """The refresh hook: record, retract if the next step would come near the interval's end
        (or refuse when retraction is off), return the vectors to re-encrypt."""
        W = self.weights(vectors)
        self.verify(W, step)
        if not self.history or self.history[-1]["step"] != step:
            self._record(W, step, "refresh")
        if self.X_train is None:
            return vectors
        if self.retract:
            s = self.trainer.retraction(W, self.X_train)
            if np.any(s < 1.0):
                pk = self.trainer.packing(self.d, self.c, self.slots)
                factors = pk.pack_weights(np.repeat(s[:, None], self.d + 1, axis=1))
                vectors = {k: [v * f for v, f in zip(vs, factors)] for k, vs in vectors.items()}
                W = self.weights(vectors)
                self.history.append({"step": step, "kind": "retract", "classes": int(np.sum(s < 1.0)),
                                     "min_factor": round(float(s.min()), 4)})
                self.log(f"step {step}: weights of {int(np.sum(s < 1.0))} class(es) scaled by down to "
                         f"{float(s.min()):.3f} to keep the next sigmoid inputs inside the interval")
        # garbage (unseen by anyone) if the next sigmoid inputs leave the interval
        self.trainer.check_weights(W, self.X_train)
        self._save()
        return vectors

    def evaluate(self, vectors: dict, step: int, epoch: int) -> bool:
        """The epoch-end hook: record validation measures, keep the best model, answer stop. The same
        (step, epoch) asked again (a request resent after the data owner reattached) gets the recorded
        answer: early stopping counts each epoch once."""
        for e in self.history:
            if e.get("kind") == "epoch" and e.get("step") == step and e.get("epoch") == epoch:
                return bool(e.get("stop", False))
        W = self.weights(vectors)
        self.verify(W, step)
        entry = self._record(W, step, "epoch")
        entry["epoch"] = epoch
        best, stop = self.stopper.update(entry.get("val_accuracy", 0.0), entry.get("val_loss", 0.0), epoch)
        if best or self.best is None:
            self.best = (entry.get("val_accuracy", 0.0), W)
            self.best_step = step
        if self.on_epoch is not None:
            self.on_epoch({**entry, "best": bool(best), "elapsed_s": time.time() - self.started})
        else:
            self.log(f"epoch {epoch}: validation accuracy {entry.get('val_accuracy', float('nan')):.4f}, loss "
                     f"{entry.get('val_loss', float('nan')):.4f}{' (best so far)' if best else ''}; "
                     f"{time.time() - self.started:.0f} s")
        if stop:
            self.stop_reason = "early stopping"
        elif self.time_limit is not None and time.time() - self.started > self.time_limit:
            self.stop_reason = f"time limit of {self.time_limit:g} s reached"
            stop = True
        entry["stop"] = bool(stop)
        self._save()
        return stop

    def final_weights(self, W_last: np.ndarray) -> np.ndarray:
        """The released model: the best validation epoch (the last state if there is no validation)."""
        if self.best is not None and self.X_val is not None:
            return self.best[1]
        return W_last


def twin_long(trainer, X: np.ndarray, Y: np.ndarray, steps: int, steps_per_refresh: int | None = None) -> np.ndarray:
    """The plaintext twin: the same steps over the same batches, in the same order (and the
    client's retraction every ``steps_per_refresh`` steps, as under client refresh)."""
    return trainer.twin(X, Y, steps, steps_per_refresh)["W"]


def _json_floats(d: dict) -> dict:
    """inf/-inf as JSON-able floats (json writes Infinity, which json reads back)."""
    return {k: float(v) if isinstance(v, (float, np.floating)) else v for k, v in d.items()}
