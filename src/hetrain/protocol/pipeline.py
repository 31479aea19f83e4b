"""A whole encrypted fit on one machine: the client here, the server in a separate process.

    result = fit(X, y, model="mlr", config={"iterations": 2}, preset="n16384", backend="seal")
    result.model.save("model.json")

The server is ``python -m hetrain.protocol.server_main JOBDIR`` in a subprocess that receives only
the job bundle (public context, ciphertexts, job json): no secret key ever crosses. Progress
bars (tqdm) follow encryption, the server's training iterations and decryption.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
from tqdm import tqdm

from hetrain._format import plain
from hetrain.ckks import CKKSParams
from hetrain.errors import HetrainUserError
from hetrain.models.base import DepthPlanError, Plan, get_trainer, refresh_available, resolve_model, server_hooks

from . import files
from .client import DEFAULT_RELEASE_DECIMALS, Client, check_twin, release
from .errors import ServerError
from .model import TrainedModel, model_info
from .monitor import PeakRSS
from .refresh import ClientRefresher
from .preprocess import Preprocessor
from .refresh_channel import ChannelError, ClientEndpoint
from .server import PROGRESS_PREFIX, REFRESH_MODES, server_argv
from .transport import LocalTransport, make_transport


@dataclasses.dataclass
class FitResult:
    model: TrainedModel
    twin: dict[str, np.ndarray]
    twin_max_abs_diff: float
    plan: Plan
    stats: dict


def make_trainer(model: str, config: dict | None, n_features: int, data=None, refresh: bool = False,
                 preset=None, report: dict | None = None):
    """The trainer for ``--model`` (``mlp`` resolves through its ``layout`` to mlp-dvr/mlp-diagonal).

    ``data`` (preprocessed X, one-hot Y): for ``--model mlp``, the options the user did not give are
    chosen on this plaintext data by the trainer's module ``plan_defaults`` (before any key is made);
    what it found goes into ``report`` under "defaults"."""
    config = dict(config or {})
    if model == "mlp":
        layout = config.pop("layout", "auto")
        name = resolve_model(model, layout, n_features)
        if layout == "auto" and name == "mlp-diagonal" and data is not None and not _diagonal_holds(*data):
            name = "mlp-dvr"  # the diagonal packing holds one sample per slot block: too many rows for it
        if data is not None:
            import importlib
            module = importlib.import_module(get_trainer(name).__module__)
            params = None if preset in (None, "auto") else preset
            config, found = module.plan_defaults(*data, config, refresh=refresh, params=params)
            if report is not None:
                report["defaults"] = found
    else:
        name = model
    return get_trainer(name)(**config)


def fit(X, y, model: str = "mlr", config: dict | None = None, *, preset: str | CKKSParams = "n16384",
        backend: str = "seal", scale: float = 1.0, seed: int | None = None, progress: bool = True,
        workdir: str | os.PathLike | None = None, release_decimals: int = DEFAULT_RELEASE_DECIMALS,
        noise_std: float = 0.0, force_insecure: bool = False, log=None, server=None,
        refresh: str = "none") -> FitResult:
    """Preprocess, plan, keygen, encrypt, train in a server process, decrypt, release, compare with the twin.

    ``workdir``: where the job bundle goes (kept); default a temporary directory removed afterwards.
    ``log``: callable for status lines (e.g. the INSECURE warning); default silent.
    ``server``: None (a server subprocess here), the URL of a `hetrain serve` service, or a Transport.
    ``refresh``: "none" (one modulus chain), "client" (the server process asks this process to
    re-encrypt its state over the refresh channel whenever the next iteration would not fit) or
    "bootstrap" (the server bootstraps); the trainer must accept server_train(refresh=...).
    """
    say = log or (lambda msg: None)
    if refresh not in REFRESH_MODES:
        raise DepthPlanError(f"refresh must be one of {', '.join(REFRESH_MODES)}, got {refresh!r}")
    transport = make_transport(server)
    if refresh == "client" and not isinstance(transport, LocalTransport):
        raise ServerError("--refresh client needs the local server process (its refresh channel is a local "
                          "socket); it cannot be combined with --server yet")
    transport.preflight()  # a wrong --server URL fails now, not after keygen and encryption
    pre = Preprocessor.fit(X, y, scale=scale)
    Xp, Y = pre.transform(X), pre.one_hot(y)
    refreshing = refresh != "none"
    chosen: dict = {}
    # every refusal of the plaintext checks comes before any key is made, with checked advice
    trainer, params = prepare(model, config, Xp, Y, preset=preset, refresh=refresh, scale=scale, report=chosen)
    client = Client(trainer, backend, params, force_insecure=force_insecure, seed=seed)
    with refresh_available(refreshing):
        plan = client.plan(*Xp.shape, Y.shape[1])
    for line in plan_lines(trainer, plan, params, chosen.get("defaults")):  # before any key is made
        say(line)
    if backend == "sim":
        say("WARNING: backend 'sim' is an INSECURE simulation: nothing is encrypted (tests/planning only)")

    tmp = None if workdir is not None else tempfile.mkdtemp(prefix="hetrain-job-")
    jobdir = pathlib.Path(workdir if workdir is not None else tmp)
    try:
        with PeakRSS() as mem:
            engine = client.keygen(plan)
            if refresh == "bootstrap" and not engine.can_bootstrap:
                raise DepthPlanError(f"backend {engine.backend_name} cannot bootstrap: use --refresh client")
            with tqdm(total=plan.n_input_ciphertexts or None, desc="encrypt", unit="ct", disable=not progress) as bar, \
                    refresh_available(refreshing):
                inputs, job = client.encrypt(Xp, Y, on_ciphertext=lambda: bar.update(1))
            job["refresh"] = refresh
            client_ops = engine.counters.as_dict()
            t0 = time.perf_counter()
            sizes = files.write_job(jobdir, engine, inputs, job)
            write_s = time.perf_counter() - t0
            del inputs
            t0 = time.perf_counter()
            if refresh == "client":
                handler = ClientRefresher(engine)
                sstats = run_server(jobdir, trainer, progress, mem, refresh_handler=handler, client_engine=engine)
            else:
                sstats = transport.run(jobdir, trainer, progress, mem)
            server_wall_s = time.perf_counter() - t0
            outputs = client.read_outputs(jobdir)
            n_out = sum(len(v) for v in outputs.values())
            with tqdm(total=n_out, desc="decrypt", unit="ct", disable=not progress) as bar:
                raw = client.decrypt(outputs, job, on_ciphertext=lambda: bar.update(1))
        weights = release(raw, release_decimals, noise_std, np.random.default_rng(seed))
        t0 = time.perf_counter()
        twin = {k: np.asarray(v, dtype=np.float64) for k, v in trainer.twin(Xp, Y).items()}
        twin_s = time.perf_counter() - t0
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    # the headline measures encryption fidelity (raw decryption); release rounding adds <= 0.5e-{decimals}
    diff = twin_max_abs_diff(raw, twin)
    check_twin(diff, twin)  # before anything is released
    stats = {
        "backend": backend, "params": client.params.name, "model": trainer.name,
        "keygen_s": client.timings["keygen_s"], "encrypt_s": client.timings["encrypt_s"], "write_job_s": write_s,
        "server_wall_s": server_wall_s, "server_train_s": sstats["server_train_s"],
        "server_load_s": sstats["server_load_s"], "decrypt_s": client.timings["decrypt_s"], "twin_s": twin_s,
        "client_peak_rss_bytes": mem.peaks["client"],
        "server_peak_rss_bytes": max(mem.peaks.get("server", 0), sstats["server_peak_rss_bytes"]),
        "upload_key_bytes": sizes[files.PUBLIC_CONTEXT], "upload_key_parts": sizes["key_parts"],
        "upload_data_bytes": sizes[files.INPUTS] + sizes[files.JOB], "download_bytes": sstats["download_bytes"],
        "rotation_steps": sorted(plan.rotation_steps), "levels_needed": plan.levels_needed,
        "levels_available": plan.levels_available, "levels_per_iteration": plan.levels_per_iteration,
        "server_operations": sstats["operations"], "client_operations": client_ops,
        "twin_max_abs_diff": diff, "released_max_abs_diff": twin_max_abs_diff(weights, twin),
        "refresh": refresh_summary(sstats),
        "defaults": chosen.get("defaults"),
    }
    info = model_info(backend, client.params, release={"decimals": release_decimals, "noise_std": noise_std},
                      refresh=refresh, n_train=int(Xp.shape[0]), twin_max_abs_diff=diff)
    trained = TrainedModel(trainer.name, dict(trainer.config), weights, pre, engine.key_id, info)
    return FitResult(trained, twin, diff, plan, stats)


def check_job(model: str, config: dict | None, X, Y, *, preset="auto", refresh: str = "none",
              report: dict | None = None):
    """Every check the client makes before keygen, on preprocessed X and one-hot Y: the trainer (mlp
    defaults chosen on the data), the preset ("auto": the smallest that fits), the depth plan and the
    trainer's plaintext checks (``client_check``: the twin's interval check). Returns (trainer, params);
    raises DepthPlanError / IntervalError / HetrainUserError, without advice (see ``prepare``)."""
    from hetrain import ckks

    from .client import _params, choose_preset

    refreshing = refresh != "none"
    n, d = X.shape
    c = Y.shape[1]
    trainer = make_trainer(model, config, d, data=(X, Y), refresh=refreshing, preset=preset, report=report)
    if refreshing and "refresh" not in server_hooks(trainer):
        raise DepthPlanError(f"model {trainer.name} cannot refresh its state between iterations (--refresh {refresh})")
    if preset == "auto":
        params = preset_for_refresh(trainer, n, d, c) if refreshing else choose_preset(trainer, n, d, c)
    else:
        params = preset if isinstance(preset, ckks.CKKSParams) else _params(preset)
    trainer.plan(n, d, c, params).check(params, refresh=refreshing)
    trainer.client_check(X, Y)
    return trainer, params


def prepare(model: str, config: dict | None, X, Y, *, preset="auto", refresh: str = "none", scale: float = 1.0,
            report: dict | None = None):
    """``check_job``, and when it refuses for depth or for a polynomial interval, the same error with the
    options that WOULD fit appended (models/advice.py: each one re-checked with ``check_job``)."""
    from hetrain import ckks
    from hetrain.circuits.approx import IntervalError
    from hetrain.models import advice

    config = dict(config or {})
    preset_name = preset.name if isinstance(preset, CKKSParams) else preset

    def build(cfg, Xc, p, refresh_mode=refresh):
        return check_job(model, cfg, Xc, Y, preset=p, refresh=refresh_mode)

    try:
        return check_job(model, config, X, Y, preset=preset, refresh=refresh, report=report)
    except IntervalError as exc:
        used = _used_config(model, config, X, Y, refresh, preset)
        text = advice.interval_advice(build, X, config, preset=preset_name, learning_rate=used.get("learning_rate"),
                                      iterations=used.get("iterations"), scale=scale,
                                      scale_invariant=(model == "mlr"))
        raise advice.refusal_with_advice(exc, text) from None
    except DepthPlanError as exc:
        used = _used_config(model, config, X, Y, refresh, preset)
        # with "auto" every preset was tried already; else only those with more levels than the refused one
        levels = None if preset_name == "auto" else ckks.get_params(preset).levels
        presets = [p.name for p in sorted(ckks.PRESETS.values(), key=lambda p: (p.poly_modulus_degree, p.levels))
                   if levels is not None and p.levels > levels]
        refresh_build = None
        if refresh == "none" and model != "mlr":  # mlr --refresh client is the mini-batch trainer (cli/fit.py)
            try:
                can = "refresh" in server_hooks(get_trainer(resolve_model(model, config.get("layout", "auto"),
                                                                          X.shape[1])))
            except HetrainUserError:
                can = False
            if can:
                refresh_build = lambda cfg, Xc, p: build(cfg, Xc, p, "client")  # noqa: E731
        text = advice.depth_advice(build, X, config, preset=preset_name, iterations=used.get("iterations"),
                                   iterations_that_fit=used.get("iterations_that_fit"), presets=presets,
                                   refresh_build=refresh_build)
        raise advice.refusal_with_advice(exc, text) from None


def _used_config(model, config, X, Y, refresh, preset) -> dict:
    """learning_rate, iterations (and iterations_that_fit) of the refused job, as far as they can be known."""
    out = {k: config[k] for k in ("learning_rate", "iterations") if k in config}
    try:
        t = make_trainer(model, config, X.shape[1], data=(X, Y), refresh=refresh != "none", preset=preset)
    except HetrainUserError:
        return out
    cfg = t.config
    for k in ("learning_rate", "iterations"):
        if cfg.get(k) is not None:
            out.setdefault(k, cfg[k])
    try:
        from hetrain import ckks

        p = ckks.get_params(preset if preset != "auto" else "n32768")
        out["iterations_that_fit"] = t.plan(X.shape[0], X.shape[1], Y.shape[1], p).iterations_that_fit
    except (HetrainUserError, ValueError):
        pass
    return out


def _diagonal_holds(X, Y) -> bool:
    """Whether the mlp-diagonal packing (one sample per slot block) holds these rows in some preset."""
    from hetrain import ckks

    trainer = get_trainer("mlp-diagonal")()
    for p in ckks.PRESETS.values():
        try:
            trainer.plan(X.shape[0], X.shape[1], Y.shape[1], p)
            return True
        except HetrainUserError:
            continue
    return False


def plan_lines(trainer, plan, params, defaults: dict | None) -> list[str]:
    """What `fit` prints before keygen: the trainer's options and approximations, the levels per
    iteration, the iterations per chain and the refreshes the run will need, and whether the
    planner chose the options that were not given."""
    cfg = trainer.config
    keys = ("hidden", "iterations", "learning_rate", "hidden_learning_rate", "sigmoid", "output_sigmoid",
            "momentum", "batch_size", "label_smoothing", "input_clip")
    shown = ", ".join(f"{k.replace('_', ' ')} {plain(cfg[k])}" for k in keys if cfg.get(k) is not None)
    per = sum(plan.levels_per_iteration.values())
    fit_per_chain = max(plan.iterations_that_fit, 1)
    refreshes = max(0, -(-plan.iterations // fit_per_chain) - 1)
    lines = [f"plan: {trainer.name} on {getattr(params, 'name', params)}: {shown}",
             f"plan: {per} levels per iteration, {plan.iterations_that_fit} iteration(s) per modulus chain, "
             f"{plan.iterations} iteration(s): about {refreshes} refresh(es)"]
    if defaults and defaults.get("validation_accuracy") is not None:
        lines.append("plan: options not given were chosen by rehearsing candidates on the plaintext twin "
                     f"(validation accuracy {float(defaults['validation_accuracy']):.4f})")
    elif defaults:
        lines.append("plan: options not given keep the trainer's own defaults (no planned candidate kept its "
                     "margin; the twin checks the run stays inside every interval)")
    return lines


def twin_max_abs_diff(weights: dict[str, np.ndarray], twin: dict[str, np.ndarray]) -> float:
    """Max |decrypted - twin| over the arrays both name (a twin may return extras, e.g. diagnostics)."""
    common = sorted(set(weights) & set(twin))
    if not common:
        raise ValueError(f"decrypted weights {sorted(weights)} and twin {sorted(twin)} share no array")
    return max(float(np.max(np.abs(weights[k] - np.reshape(twin[k], np.shape(weights[k]))))) for k in common)


def preset_for_refresh(trainer, n: int, d: int, c: int) -> CKKSParams:
    """Smallest preset (ring degree, then levels) that holds one iteration between refreshes."""
    from hetrain import ckks

    for p in sorted(ckks.PRESETS.values(), key=lambda p: (p.poly_modulus_degree, p.levels)):
        try:
            if trainer.plan(n, d, c, p).fits_with_refresh():
                return p
        except HetrainUserError:
            continue
    raise DepthPlanError(f"not even one {trainer.name} iteration fits in any preset")


def refresh_summary(sstats: dict) -> dict:
    """Round trips, bytes both ways and the client's share, from the server's and client's counts."""
    r = dict(sstats.get("refresh") or {"mode": "none"})
    client = sstats.get("client_channel")
    if client:  # the client timed its own share; the server only saw the wait
        r["client_seconds"] = client["client_seconds"]
    return r


def server_command(jobdir, trainer, channel_path=None) -> list[str]:
    module = type(trainer).__module__
    extra = [] if module.startswith("hetrain.models.") else [module]  # a trainer outside the catalog (tests, plugins)
    return server_argv(jobdir, trainer_modules=extra, channel=channel_path)


def run_server(jobdir: pathlib.Path, trainer, progress: bool, mem: PeakRSS | None = None, *,
               refresh_handler=None, client_engine=None, on_progress=None, env: dict | None = None) -> dict:
    """Run the server process on ``jobdir``; returns its stats or raises ServerError with its message.

    ``refresh_handler`` (with ``client_engine``, the secret-key engine): this process answers the
    server's refresh channel (refresh_channel.py) while it trains; the returned stats then carry
    the client's view of the channel under "client_channel". ``on_progress(done, total)``: called
    on each progress line. ``env``: extra environment variables for the server process.
    """
    jobdir = pathlib.Path(jobdir)
    child_env = dict(os.environ)
    # the child imports what this process can (editable installs, test modules), nothing more
    child_env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
    child_env.update(env or {})
    endpoint = None
    if refresh_handler is not None:
        endpoint = ClientEndpoint(jobdir, client_engine, refresh_handler)
    log_path = jobdir / "server.log"
    channel_error = None
    try:
        with open(log_path, "wb") as log_file, tqdm(desc="server train", unit="it", disable=not progress) as bar:
            proc = subprocess.Popen(server_command(jobdir, trainer, endpoint and endpoint.path), stdout=subprocess.PIPE,
                                    stderr=log_file, stdin=subprocess.DEVNULL, env=child_env, text=True, bufsize=1)
            if mem is not None:
                mem.watch("server", proc.pid)
            reader = threading.Thread(target=_follow_progress, args=(proc.stdout, bar, on_progress), daemon=True)
            reader.start()
            try:
                if endpoint is not None:
                    endpoint.serve(proc)
            except ChannelError as exc:  # the server died or closed the channel: its own error says why
                channel_error = exc
            except BaseException:  # our side failed (e.g. a client check refused the state): stop the server
                _stop(proc)
                raise
            rc = proc.wait()
            reader.join()
    finally:
        if endpoint is not None:
            endpoint.close()
    if rc != 0:
        err_path = jobdir / files.SERVER_ERROR
        if err_path.exists():
            err = json.loads(err_path.read_text())
            detail = err["message"] if err.get("user_error") else f"{err['type']}: {err['message']}\n{err.get('traceback') or ''}"
            raise ServerError(f"server failed: {detail}")
        tail = log_path.read_text(errors="replace")[-2000:]
        during = f" during training (refresh channel: {channel_error})" if channel_error else ""
        raise ServerError(f"server process exited with status {rc}{during}:\n{tail}")
    if channel_error is not None:
        raise ServerError(f"the refresh channel failed although the server exited cleanly: {channel_error}")
    stats = json.loads((jobdir / files.SERVER_STATS).read_text())
    if endpoint is not None:
        stats["client_channel"] = endpoint.stats.as_dict()
    return stats


def _follow_progress(stream, bar, on_progress) -> None:
    """Read the server's progress lines to the end. The bar draws on our stderr; if that is a pipe
    whose reader is gone, stop drawing but keep reading: a server blocked on a full stdout pipe
    would never exit."""
    draw = True
    for line in stream:
        if line.startswith(PROGRESS_PREFIX):
            done, total, *msg = line[len(PROGRESS_PREFIX):].split(" ", 2)
            bar.total = int(total)
            bar.n = int(done)
            if msg:
                bar.set_postfix_str(msg[0].strip(), refresh=False)
            if draw:
                try:
                    bar.refresh()
                except OSError:  # BrokenPipeError and the like: our own output is gone
                    draw = False
            if on_progress is not None:
                on_progress(int(done), int(total))


def _stop(proc) -> None:
    """End the server process we started (by its handle), politely first."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
