"""The client's planning before any key is made: the trainer (with the planner's defaults), the
CKKS parameters, the depth plan, the plaintext checks, and refusals with checked advice.

    trainer, params = prepare("mlp", {}, X, Y, preset="auto", refresh="client")

Used by ``client_jobs.TrainerJob.prepare`` (``hetrain fit``/``encrypt``) and by models/advice.py's
re-checks. Nothing here touches keys or ciphertexts. The preset search itself is
``hetrain.models.base.choose_preset`` (re-exported here): the one search every caller uses.
"""
from __future__ import annotations

import numpy as np

from hetrain._format import plain
from hetrain.ckks import CKKSParams
from hetrain.errors import HetrainUserError
from hetrain.models.base import (DepthPlanError, choose_preset, get_trainer, presets_by_size, resolve_model,
                                 server_hooks)


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


def check_job(model: str, config: dict | None, X, Y, *, preset="auto", refresh: str = "none",
              report: dict | None = None):
    """Every check the client makes before keygen, on preprocessed X and one-hot Y: the trainer (mlp
    defaults chosen on the data), the preset ("auto": the smallest that fits), the depth plan and the
    trainer's plaintext checks (``client_check``: the twin's interval check). Returns (trainer, params);
    raises DepthPlanError / IntervalError / HetrainUserError, without advice (see ``prepare``)."""
    from hetrain import ckks

    refreshing = refresh != "none"
    n, d = X.shape
    c = Y.shape[1]
    trainer = make_trainer(model, config, d, data=(X, Y), refresh=refreshing, preset=preset, report=report)
    if refreshing and "refresh" not in server_hooks(trainer):
        raise DepthPlanError(f"model {trainer.name} cannot refresh its state between iterations (--refresh {refresh})")
    if preset == "auto":
        params = choose_preset(trainer, n, d, c, refresh=refreshing)
    else:
        params = preset if isinstance(preset, ckks.CKKSParams) else _params(preset)
    trainer.plan(n, d, c, params).check(params, refresh=refresh)  # "bootstrap": also inside iterations
    trainer.client_check(X, Y)
    return trainer, params


def prepare(model: str, config: dict | None, X, Y, *, preset="auto", refresh: str = "none", scale: float = 1.0,
            report: dict | None = None, advise_presets: bool = True):
    """``check_job``, and when it refuses for depth or for a polynomial interval, the same error with the
    options that WOULD fit appended (models/advice.py: each one re-checked with ``check_job``).
    ``advise_presets``: False where the parameters are fixed (a key directory's): no preset advice."""
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
        presets = [p.name for p in presets_by_size()
                   if advise_presets and levels is not None and p.levels > levels]
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
                                   refresh_build=refresh_build, preset_fixed=not advise_presets)
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
    trainer = get_trainer("mlp-diagonal")()
    for p in presets_by_size():
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
            "momentum", "batch_size", "label_smoothing", "input_clip", "components")
    shown = ", ".join(f"{k.replace('_', ' ')} {plain(cfg[k])}" for k in keys if cfg.get(k) is not None)
    per = plan.levels_per_later_iteration
    fit_per_chain = max(plan.iterations_that_fit, 1)
    refreshes = max(0, -(-plan.iterations // fit_per_chain) - 1)
    lines = [f"plan: {trainer.name} on {getattr(params, 'name', params)}: {shown}",
             f"plan: {per} levels per iteration, {plan.iterations_that_fit} iteration(s) per modulus chain, "
             f"{plan.iterations} iteration(s): about {refreshes} refresh(es)"]
    boots = getattr(plan, "bootstraps", None)
    if boots:  # models/inner_boot.py: an iteration deeper than a bootstrap restores (refresh bootstrap)
        lines.append(f"plan: with --refresh bootstrap the server also bootstraps inside iterations: "
                     f"{sum(boots['in_iteration'])} intermediate ciphertext(s) and {sum(boots['state'])} of the state "
                     f"in all (a bootstrap restores {boots['level']} levels; traced)")
    if defaults and defaults.get("validation_accuracy") is not None:
        lines.append("plan: options not given were chosen by rehearsing candidates on the plaintext twin "
                     f"(validation accuracy {float(defaults['validation_accuracy']):.4f})")
    elif defaults:
        lines.append("plan: options not given keep the trainer's own defaults (no planned candidate kept its "
                     "margin; the twin checks the run stays inside every interval)")
    return lines


def twin_max_abs_diff(weights: dict[str, np.ndarray], twin: dict[str, np.ndarray]) -> float:
    """Max |decrypted - twin| over the arrays both name (a twin may return extras, e.g. diagnostics).
    Raises ValueError when the two share no array name.
    """
    common = sorted(set(weights) & set(twin))
    if not common:
        raise ValueError(f"decrypted weights {sorted(weights)} and twin {sorted(twin)} share no array")
    return max(float(np.max(np.abs(weights[k] - np.reshape(twin[k], np.shape(weights[k]))))) for k in common)


def _params(preset) -> CKKSParams:
    from hetrain import ckks

    try:
        return ckks.get_params(preset)
    except ValueError as exc:
        raise ckks.CKKSError(str(exc)) from None
