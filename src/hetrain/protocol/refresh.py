"""Training past the depth limit: refresh the server's encrypted state, by the client or by bootstrapping.

    client = RefreshClient(engine, trainer, X_val, y_val, n_features, n_classes)   # holds the secret key
    channel = ClientChannel(server_engine, client)                                 # counts trips and bytes
    result = train(server_engine, trainer, batches, W0, refresh=ClientRefresh(channel),
                   monitor=channel, checkpoint_path=jobdir / "state.ckpt")

Refresh modes (``--refresh``):
* ``none``: the job must fit in one modulus chain (a clear DepthPlanError otherwise);
* ``client``: when the state's level is too low for the next step, the server sends the state
  ciphertexts to the client, which decrypts them, checks the next sigmoid inputs stay inside the
  approximation's interval, re-encrypts at the top level and sends them back. The server learns
  nothing new (fresh encryptions of values it never sees); the client sees only its own model,
  which it owns anyway. One round trip per refresh; the channel counts trips and bytes.
* ``bootstrap``: ``engine.bootstrap`` on each state ciphertext, no interaction (desilo backend).

At every epoch end the server sends the state to the client for evaluation (``monitor``): the
client decrypts the weights, measures accuracy and loss on its own validation rows, keeps the best
model and answers continue/stop (early stopping: the one bit the server learns). With client
refresh the epoch-end evaluation reuses the refresh round trip when they coincide.

The channel passes bytes (``engine.serialize``) between two engine objects, as a network would;
here both live in one process (the bench and tests), so "bytes" are measured, not sent.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable

import numpy as np

from hetrain.ckks import CKKSError
from hetrain.models.base import DepthPlanError

from . import checkpoint as ckpt

REFRESH_MODES = ("none", "client", "bootstrap")


@dataclasses.dataclass
class ChannelStats:
    round_trips: int = 0
    bytes_to_client: int = 0
    bytes_to_server: int = 0
    refreshes: int = 0
    evaluations: int = 0
    bootstraps: int = 0
    client_seconds: float = 0.0


class RefreshClient:
    """The client's side: holds the secret key, the validation rows and the best model so far."""

    def __init__(self, engine, trainer, X_val, y_val, n_features: int, n_classes: int, X_train=None) -> None:
        if not engine.has_secret_key:
            raise CKKSError("the refresh client needs the engine with the secret key")
        self.engine, self.trainer = engine, trainer
        self.X_val = None if X_val is None else np.asarray(X_val, dtype=np.float64)
        self.y_val = None if y_val is None else np.asarray(y_val)
        self.X_train = None if X_train is None else np.asarray(X_train, dtype=np.float64)
        self.d, self.c = n_features, n_classes
        self.history: list[dict] = []  # one entry per decryption: step, epoch, val accuracy/loss
        self.best: tuple[float, np.ndarray] | None = None
        self.epochs_without_improvement = 0

    def _weights(self, blobs: list[bytes]) -> np.ndarray:
        vecs = [self.engine.decrypt(self.engine.deserialize(b)) for b in blobs]
        return self.trainer.unpack(vecs, self.d, self.c, self.engine.slots)

    def _record(self, W: np.ndarray, step: int, kind: str) -> dict:
        entry = {"step": step, "kind": kind}
        if self.X_val is not None:
            entry.update(validation_metrics(self.trainer, W, self.X_val, self.y_val))
        self.history.append(entry)
        return entry

    def refresh(self, blobs: list[bytes], step: int) -> list[bytes]:
        """Decrypt, check, re-encrypt at the top level."""
        W = self._weights(blobs)
        if not self.history or self.history[-1]["step"] != step:
            self._record(W, step, "refresh")
        if self.X_train is not None:
            self.trainer.check_weights(W, self.X_train)
        vecs = self.trainer.packing(self.d, self.c, self.engine.slots).pack_weights(W)
        return [self.engine.serialize(self.engine.encrypt(v)) for v in vecs]

    def evaluate(self, blobs: list[bytes], step: int, epoch: int) -> bool:
        """Epoch end: validation metrics, keep the best model; True means stop (early stopping)."""
        W = self._weights(blobs)
        entry = self._record(W, step, "epoch")
        entry["epoch"] = epoch
        score = entry.get("val_accuracy", 0.0)
        if self.best is None or score > self.best[0]:
            self.best, self.epochs_without_improvement = (score, W), 0
        else:
            self.epochs_without_improvement += 1
        patience = self.trainer.config["patience"]
        return patience > 0 and self.epochs_without_improvement >= patience

    def final_weights(self, blobs: list[bytes]) -> np.ndarray:
        """The released model: the best validation epoch (the last state if there is no validation)."""
        W = self._weights(blobs)
        if self.best is not None and self.X_val is not None:
            return self.best[1]
        return W


def validation_metrics(trainer, W: np.ndarray, X: np.ndarray, y: np.ndarray) -> dict:
    """Accuracy and mean binary cross-entropy (true sigmoid) of W on labelled rows."""
    scores = np.concatenate([np.ones((X.shape[0], 1)), X], axis=1) @ W.T
    acc = float(np.mean(np.argmax(scores, axis=1) == y))
    p = np.clip(1.0 / (1.0 + np.exp(-scores)), 1e-12, 1 - 1e-12)
    Y = np.eye(W.shape[0])[y]
    loss = float(-np.mean(np.sum(Y * np.log(p) + (1 - Y) * np.log(1 - p), axis=1)))
    return {"val_accuracy": acc, "val_loss": loss}


class ClientChannel:
    """The server's handle on the client: ciphertexts go out and come back as bytes (counted)."""

    def __init__(self, server_engine, client: RefreshClient) -> None:
        self.engine, self.client = server_engine, client
        self.stats = ChannelStats()

    def _send(self, state: list) -> list[bytes]:
        blobs = [self.engine.serialize(ct) for ct in state]
        self.stats.bytes_to_client += sum(len(b) for b in blobs)
        self.stats.round_trips += 1
        return blobs

    def refresh(self, state: list, step: int) -> list:
        blobs = self._send(state)
        t0 = time.perf_counter()
        back = self.client.refresh(blobs, step)
        self.stats.client_seconds += time.perf_counter() - t0
        self.stats.bytes_to_server += sum(len(b) for b in back)
        self.stats.refreshes += 1
        return [self.engine.deserialize(b) for b in back]

    def refresh_and_evaluate(self, state: list, step: int, epoch: int) -> tuple[list, bool]:
        blobs = self._send(state)
        t0 = time.perf_counter()
        stop = self.client.evaluate(blobs, step, epoch)
        back = [] if stop else self.client.refresh(blobs, step)
        self.stats.client_seconds += time.perf_counter() - t0
        self.stats.bytes_to_server += 1 + sum(len(b) for b in back)
        self.stats.evaluations += 1
        self.stats.refreshes += 0 if stop else 1
        return ([self.engine.deserialize(b) for b in back] or state), stop

    def evaluate(self, state: list, step: int, epoch: int) -> bool:
        blobs = self._send(state)
        t0 = time.perf_counter()
        stop = self.client.evaluate(blobs, step, epoch)
        self.stats.client_seconds += time.perf_counter() - t0
        self.stats.bytes_to_server += 1  # the continue/stop bit (one byte on a wire)
        self.stats.evaluations += 1
        return stop


class ClientRefresh:
    def __init__(self, channel: ClientChannel) -> None:
        self.channel = channel

    def __call__(self, engine, state: list, step: int) -> list:
        return self.channel.refresh(state, step)


class BootstrapRefresh:
    def __init__(self, stats: ChannelStats | None = None) -> None:
        self.stats = stats or ChannelStats()

    def __call__(self, engine, state: list, step: int) -> list:
        self.stats.bootstraps += len(state)
        return [engine.bootstrap(ct) for ct in state]


def make_refresh(mode: str, engine, channel: ClientChannel | None):
    """The refresh callable for ``--refresh MODE`` (None for "none"), checked against the engine."""
    if mode not in REFRESH_MODES:
        raise DepthPlanError(f"--refresh must be one of {', '.join(REFRESH_MODES)}, got {mode!r}")
    if mode == "none":
        return None
    if mode == "client":
        if channel is None:
            raise DepthPlanError("--refresh client needs a channel to the client")
        return ClientRefresh(channel)
    if not engine.can_bootstrap:
        raise DepthPlanError(f"backend {engine.backend_name} cannot bootstrap: use --refresh client "
                             "(or the desilo backend)")
    return BootstrapRefresh(channel.stats if channel is not None else None)


@dataclasses.dataclass
class TrainResult:
    state: list
    steps_done: int
    stopped_early: bool
    resumed_from: int
    step_seconds: list[float]
    refresh_seconds: list[float]
    refresh_before_step: list[float]  # per step: seconds spent refreshing right before it (0: none)


def train(engine, trainer, packing, batches: list, state: list, *, refresh: Callable | None, monitor: ClientChannel | None,
          epochs: int, checkpoint_path=None, on_step: Callable[[int, int], None] | None = None) -> TrainResult:
    """The server loop: steps over mini-batches and epochs, refreshing and checkpointing the state.

    ``state`` is the initial encrypted W (ignored when a checkpoint exists: the job resumes after
    the last completed step). Raises DepthPlanError before any work if a refresh would be needed
    and ``refresh`` is None.
    """
    nb = len(batches)
    total = epochs * nb
    per = trainer.levels_per_step
    if engine.max_level < per:
        raise DepthPlanError(f"one step needs {per} levels, parameters {engine.params.name} have {engine.max_level}")
    if refresh is None and total > engine.max_level // per:
        raise DepthPlanError(f"{total} steps need {total * per} levels without refresh; {engine.params.name} "
                             f"fits {engine.max_level // per}: use --refresh client or --refresh bootstrap")
    start = 0
    if checkpoint_path is not None:
        saved = ckpt.load(checkpoint_path, engine)
        if saved is not None:
            state, meta = saved
            start = int(meta["step"])
    step_s, refresh_s, before = [], [], []
    stopped = False
    pending = 0.0  # a refresh merged into the epoch-end evaluation precedes the next step
    for step in range(start, total):
        epoch, b = divmod(step, nb)
        if state[0].level < per:
            t0 = time.perf_counter()
            state = refresh(engine, state, step)
            refresh_s.append(time.perf_counter() - t0)
            pending += refresh_s[-1]
        before.append(pending)
        pending = 0.0
        t0 = time.perf_counter()
        state = trainer.step(engine, packing, state, batches[b])
        step_s.append(time.perf_counter() - t0)
        if checkpoint_path is not None:
            ckpt.save(checkpoint_path, engine, state, {"step": step + 1})
        if on_step is not None:
            on_step(step + 1, total)
        if b == nb - 1 and monitor is not None:
            if step + 1 == total:  # the last epoch is evaluated by the client on download
                break
            if isinstance(refresh, ClientRefresh) and state[0].level < per:
                # the next step needs a refresh anyway: one round trip does both
                t0 = time.perf_counter()
                state, stop = refresh.channel.refresh_and_evaluate(state, step + 1, epoch + 1)
                refresh_s.append(time.perf_counter() - t0)
                pending = refresh_s[-1]
            else:
                stop = monitor.evaluate(state, step + 1, epoch + 1)
            if stop:
                stopped = True
                break
    done = start if start >= total else step + 1
    return TrainResult(state, done, stopped, start, step_s, refresh_s, before)


@dataclasses.dataclass
class LongFitResult:
    weights: np.ndarray            # released model (best validation epoch), classes × (1 + features)
    last_weights: np.ndarray       # decrypted final state
    twin_weights: np.ndarray       # the plaintext twin after the same number of steps
    history: list[dict]            # the client's validation metrics per decryption
    stats: dict
    preprocessor: object


def fit_long(X, y, X_val=None, y_val=None, config: dict | None = None, *, backend: str = "seal",
             preset="n16384", refresh_mode: str = "client", checkpoint_path=None, engine_options: dict | None = None,
             on_step=None) -> LongFitResult:
    """Client and server in one process (separate engines, bytes between them): preprocess, encrypt,
    train with refresh, decrypt, and run the plaintext twin for comparison."""
    from hetrain import ckks
    from hetrain.models.minibatch import MiniBatchMLR

    from .preprocess import Preprocessor

    trainer = MiniBatchMLR(**(config or {}))
    pre = Preprocessor.fit(X, y)
    Xp, Y = pre.transform(X), pre.one_hot(y)
    Xv = None if X_val is None else pre.transform(X_val)
    yv = None if y_val is None else pre.label_index(y_val)
    n, d = Xp.shape
    c = Y.shape[1]
    params = preset if backend == "desilo" else ckks.get_params(preset)
    slots_probe = ckks.get_params(preset).slots if backend != "desilo" else None
    t0 = time.perf_counter()
    rotations = trainer.packing(d, c, slots_probe).rotation_steps() if slots_probe else None
    if rotations is None:  # desilo picks its ring: build once to learn the slot count
        probe = ckks.create_engine(backend, params, (), **(engine_options or {}))
        rotations = trainer.packing(d, c, probe.slots).rotation_steps()
        del probe
    client_engine = ckks.create_engine(backend, params, rotations, **(engine_options or {}))
    keygen_s = time.perf_counter() - t0
    plan = trainer.plan(n, d, c, client_engine.params)
    if refresh_mode == "none":
        plan.check(client_engine.params)
        if plan.iterations > plan.iterations_that_fit:
            raise DepthPlanError(f"{plan.iterations} steps need {plan.iterations * trainer.levels_per_step} levels "
                                 f"without refresh; {client_engine.params.name} fits {plan.iterations_that_fit}: "
                                 "use --refresh client or --refresh bootstrap")
    make_refresh(refresh_mode, client_engine, None if refresh_mode != "client" else object())  # refuse early
    if refresh_mode != "client":
        # nobody sees the weights before the end: the client runs the twin first, which raises
        # DataError if a sigmoid input would leave the approximation's interval (garbage, unseen)
        twin_long(trainer, Xp, Y, plan.iterations)
    public = client_engine.public_bytes()
    server_engine = ckks.load_engine(public)
    t0 = time.perf_counter()
    batches_ct = trainer.encrypt_batches(client_engine, Xp, Y)
    W0 = [client_engine.encrypt(v) for v in trainer.initial_weights(d, c, client_engine.slots)]
    encrypt_s = time.perf_counter() - t0
    # what crosses to the server: public context + batches + W0, as bytes
    upload = len(public)
    from hetrain.models.minibatch import Batch
    server_batches = []
    for b in batches_ct:
        parts = {}
        for name in ("X", "Xt", "Ym"):
            blobs = [client_engine.serialize(ct) for ct in getattr(b, name)]
            upload += sum(len(x) for x in blobs)
            parts[name] = [server_engine.deserialize(x) for x in blobs]
        server_batches.append(Batch(**parts))
    W0_blobs = [client_engine.serialize(ct) for ct in W0]
    upload += sum(len(x) for x in W0_blobs)
    state = [server_engine.deserialize(x) for x in W0_blobs]
    del batches_ct, W0

    client = RefreshClient(client_engine, trainer, Xv, yv, d, c, X_train=Xp)
    channel = ClientChannel(server_engine, client)
    refresh = make_refresh(refresh_mode, server_engine, channel)
    pk = trainer.packing(d, c, server_engine.slots)
    server_engine.counters.reset()
    t0 = time.perf_counter()
    res = train(server_engine, trainer, pk, server_batches, state, refresh=refresh,
                monitor=channel if Xv is not None else None, epochs=trainer.config["epochs"],
                checkpoint_path=checkpoint_path, on_step=on_step)
    train_s = time.perf_counter() - t0
    out_blobs = [server_engine.serialize(ct) for ct in res.state]
    last = client._weights(out_blobs)
    if Xv is not None and not res.stopped_early:  # the final epoch's evaluation, on download
        client.evaluate(out_blobs, res.steps_done, -(-res.steps_done // len(server_batches)))
    weights = client.final_weights(out_blobs)
    tw = twin_long(trainer, Xp, Y, res.steps_done)
    st = channel.stats
    stats = {"backend": backend, "params": client_engine.params.name, "refresh": refresh_mode, "key_id": client_engine.key_id,
             "steps": res.steps_done, "resumed_from": res.resumed_from, "stopped_early": res.stopped_early,
             "keygen_s": keygen_s, "encrypt_s": encrypt_s, "train_s": train_s,
             "step_s": res.step_seconds, "refresh_s": res.refresh_seconds,
             "refresh_before_step_s": res.refresh_before_step,
             "round_trips": st.round_trips, "refreshes": st.refreshes, "evaluations": st.evaluations,
             "bootstraps": st.bootstraps, "bytes_to_client": st.bytes_to_client, "bytes_to_server": st.bytes_to_server,
             "client_refresh_s": st.client_seconds, "upload_bytes": upload,
             "download_bytes": sum(len(b) for b in out_blobs),
             "server_operations": server_engine.counters.as_dict(),
             "twin_max_abs_diff": float(np.max(np.abs(last - tw))), "levels_per_step": trainer.levels_per_step}
    return LongFitResult(weights, last, tw, client.history, stats, pre)


def twin_long(trainer, X: np.ndarray, Y: np.ndarray, steps: int) -> np.ndarray:
    """The plaintext twin: the same steps over the same batches, in the same order."""
    W = np.zeros((Y.shape[1], X.shape[1] + 1))
    batches = trainer.batches_of(X.shape[0])
    for step in range(steps):
        W = trainer.twin_step(W, X, Y, batches[step % len(batches)])
    return W


def fit_long_model(X, y, refresh_mode: str, config: dict, *, backend: str = "seal", preset: str = "auto",
                   validation_fraction: float = 0.2, seed: int | None = None, checkpoint_path=None,
                   release_decimals: int | None = None, on_step=None):
    """`hetrain fit --refresh client|bootstrap`: hold out validation rows (client side), train the
    mini-batch trainer with refresh, release the best epoch's model as a TrainedModel ("mlr" weights)."""
    from hetrain.errors import DataError

    from .client import DEFAULT_RELEASE_DECIMALS, release
    from .model import TrainedModel

    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    if not 0.0 <= validation_fraction < 1.0:
        raise DataError(f"validation fraction must be in [0, 1), got {validation_fraction}")
    idx = np.random.default_rng(seed).permutation(len(y))
    n_val = int(round(validation_fraction * len(y)))
    tr, va = idx[n_val:], idx[:n_val]
    if preset == "auto":
        preset = "desilo-boot" if refresh_mode == "bootstrap" and backend == "desilo" else "n16384"
    r = fit_long(X[tr], y[tr], X[va] if n_val else None, y[va] if n_val else None, config, backend=backend,
                 preset=preset, refresh_mode=refresh_mode, checkpoint_path=checkpoint_path, on_step=on_step)
    decimals = DEFAULT_RELEASE_DECIMALS if release_decimals is None else release_decimals
    weights = release({"W": r.weights}, decimals, 0.0, np.random.default_rng(seed))
    info = {"backend": backend, "params": r.stats["params"], "refresh": refresh_mode,
            "training": {"trainer": "mlr-minibatch", **config}, "history": r.history,
            "n_train": int(len(tr)), "n_validation": int(n_val), "twin_max_abs_diff": r.stats["twin_max_abs_diff"]}
    # the released weights are a plain logistic-regression model: "mlr" predicts with them
    return TrainedModel("mlr", {}, weights, r.preprocessor, r.stats["key_id"], info), r.stats
