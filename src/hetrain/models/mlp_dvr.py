"""Encrypted training of sigmoid networks with one or two (or more) hidden layers: model "mlp-dvr".

input (d) -> h1 -> [h2 ...] -> c outputs; polynomial sigmoids (configurable degree and interval,
per layer if wanted); binary cross-entropy on every output (one-vs-rest), so the output error is
σ(A_K) − Y with no division; full-batch or mini-batch gradient descent with optional Nesterov momentum;
forward pass, back-propagation and update all on ciphertexts, no interaction within an iteration.
The arithmetic is exactly that of the plaintext twin (models/mlp_dvr_twin.py, formulas there).

Layout ("dvr", circuits/dvr.py): S samples per ciphertext, each owning a P x P grid of slots;
the outer loop runs over the G = ceil(n / S) data ciphertexts (the "double" Volley Revolver).
Weight matrices are stored once, replicated over samples: W_l[v, u] at (u on the layer's input
axis, v on its output axis), axes alternating a -> b -> a per layer; the same ciphertext gives
W_l·z (sum over u) and W_lᵀ·δ (sum over v), so no transpose is ever built. W1 (h1 x d) is
T = ceil(d / P) ciphertexts of P input features each. Biases lie along the output axis.
Garbage left by rotate-and-sum is removed by masks folded into the activation polynomials
(no extra level), and the step size lr/n is folded into the output layer's polynomial, so the
whole backward pass is already scaled.

Mini-batches (``batch_size``): a batch is a run of whole data ciphertexts (batch_size a multiple of
S), so iteration t simply loops over the groups of batch t mod B instead of all G: same circuit,
same levels, cost proportional to the batch; its step lr / n_b is folded into that batch's output
masks (plaintexts, no level). The client permutes the rows (``seed``) before encrypting, so a
class-sorted file still gives mixed batches; the twin trains on the same permuted rows.
``label_smoothing`` s: the client encrypts targets s / 1 − s instead of 0 / 1 (no server change).

Levels per iteration (``plan`` traces them from ``_iteration`` itself, models/trace.py; the count
below is the explanation, not the planner) with sigmoid depth D (2 for degree 3), K weight layers:
forward K·(1 + D), output error 0, backward 2 per layer above the first (product + σ'),
gradient 1, update 0, momentum 1 (not in the first iteration, where μ_0 = 0). Two hidden layers
with degree 3: 14 (+1) levels, so one iteration fits n32768 (19 levels); one hidden layer: 9,
which fits n16384-deep. Past that, ``server_train(..., refresh=callable)`` hands the state to a
refresh step (client-aided re-encryption or bootstrapping) whenever the next iteration would not
fit; without one, the plan refuses the job beforehand (DepthPlanError).

Deeper than a bootstrap restores (refresh "bootstrap": OpenFHE's 128-bit openfhe-boot restores 6 levels,
an iteration needs 9-15): the server also bootstraps inside the iteration (models/inner_boot.py). Each
data group's pass checks, at the start of each segment, that the one ciphertext carrying it has the
levels the segment consumes (traced once from the segment's own functions, ``_level_needs``): a layer's
pre-activation a_l before its activation and derivative (one bootstrap serves both), the error δ_l
before each backward step, W before Nesterov's step; the data X is never bootstrapped. Before each
iteration ``trace.bootstrap_step`` chooses, by traced counts, between bootstrapping the whole state
first and bootstrapping inside only; ``plan`` traces the same run (``Plan.bootstraps``), so its count
is the engine's. Only with a refresh hook that bootstraps (``via_client`` False) on an engine that can.

Defaults for ``--model mlp`` / ``protocol.fit(X, y, "mlp", {})``: the client calls ``plan_defaults``
(bottom of this module; search logic in models/mlp_defaults.py) on its plaintext data before keygen. It
keeps every key the user gave and chooses the rest: one hidden layer of 16 (9 levels per iteration:
fits n16384-deep, where two hidden layers need n32768 and ~200 MB per rotation key), momentum "none"
(Nesterov's 10th level does not fit n16384-deep), input_clip 3, centred_hidden (σ − 1/2 in the hidden
layer: on digits 0.63 -> 0.86 test accuracy in 14 iterations), and from a grid of sigmoid pairs,
learning rates, label smoothing {0, 0.1} and batch size {full, 128 rows when n >= 256} the (setting,
iterations) that ranks best on the validation part (mlp_defaults.choose) whose run keeps every
pre-activation within 90 % of its interval (re-checked on all rows); iterations are capped by a
wall-time budget (~7 min of estimated SEAL server time per candidate: a 128-row step costs ~2.4 s at
n16384-deep on 2 cores, a full digits iteration ~30 s) with refresh, by one chain without.
Why mini-batches: full-batch GD fits only 14 digits iterations in the budget (0.839); 113 steps of 128
rows (~9 epochs) reach 0.933. Why label smoothing: with 0/1 targets the output pre-activations keep
growing and leave the output sigmoid's interval before digits converges (best in-margin ~0.91); with
0.1 / 0.9 they settle at ~0.65 of it. Heavy-ball momentum and learning-rate decay were tried on the twin:
faster early, same plateau (~0.94), so not used.
Wide inputs (from 256 features spanning more than 8 input blocks, e.g. raw pixels): every candidate is
also rehearsed on the whitened principal components holding 80 % of the variance (rounded up to whole
input blocks), which the client computes, applies before encryption and keeps (``projection``; the
server's config has only ``components``); validation ranks both kinds together (MNIST pixels 0.69 ->
0.83 test accuracy; RegNet features keep the raw ones). See PCA_MIN_FEATURES below.
Measured (80/20 splits, twin): breast_cancer 0.956, RegNet features 0.828, digits 0.933, wine (dvr) 1.0,
MNIST pixels (1,600/400) 0.833.

The trainer's own defaults (below) are unchanged, for direct use:

Config keys (all optional):
    hidden          list of hidden widths, default [32, 16]
    iterations      int, default 1
    learning_rate   float, default 2.0 (the step on the mean gradient)
    sigmoid         get_sigmoid spec for every layer, default "published" (degree 3 on [-8, 8])
    sigmoid_layers  list of specs, one per weight layer (overrides ``sigmoid``)
    momentum        "nesterov" (default) | "none"; Nesterov costs one level from the second iteration on,
                    which the plan counts for refreshed iterations too (n16384-deep: refused before keygen)
    batch_size      int or None (default: full batch): rows per mini-batch, a multiple of the layout's
                    samples per ciphertext; ``iterations`` then counts mini-batch steps
    label_smoothing float in [0, 0.5), default 0: targets s / 1 − s
    seed            int, default 0 (deterministic Glorot-uniform init, drawn and encrypted by the client)
    init_scale      float, default 1.0 (multiplies the Glorot bound)
    check_interval  bool, default True: the client runs the twin first and refuses the job if any
                    pre-activation leaves its polynomial's interval (the encrypted run would be garbage)
    layout          "dvr" | "auto" (accepted for the CLI; only the dvr layout exists here)
    input_clip      float or None (default): clip the standardised inputs to [-c, c] (twin, encryption, predict)
    centred_hidden  bool, default False: hidden layers use σ − 1/2 (zero-mean features; same depth)
    components      int or None (default): the network's input width when the client projects the inputs
                    (``projection``); the only part of the projection the server's copy of the config keeps
    projection      None (default) or a components x d matrix Q (nested lists): the client trains on, encrypts
                    and predicts from clip(X·Qᵀ) instead of clip(X) (``plan_defaults``: whitened leading principal
                    components for wide inputs such as raw pixels). Client side only: ``client_encrypt`` sends the
                    server the config without it (components says how wide the encrypted inputs are); the released
                    W1 is components wide and the model file keeps Q to apply before it
"""
from __future__ import annotations

import numpy as np

from hetrain.circuits import dvr
from hetrain.circuits.approx import PolyApprox, get_sigmoid
from hetrain.circuits.masked_poly import eval_poly_masked
from hetrain.circuits.tasks import run_tasks
from hetrain.ckks import PlainVector, get_params
from hetrain.ckks.pow2 import log2_pow2
from hetrain._format import plain
from hetrain.errors import DataError, HetrainUserError

from . import inner_boot, mlp_defaults, mlp_dvr_twin, trace
from .base import DepthPlanError, Plan, Trainer, check_training_arrays, register
from .configs import MLPConfig

DEFAULTS = MLPConfig.defaults()  # the one source: models/configs.py


class MLPConfigError(HetrainUserError, ValueError):
    """An mlp-dvr option is unknown or out of range."""


def out_axis(layer: int) -> str:
    """Layer 1 maps a -> b, layer 2 b -> a, ... (circuits/dvr.py)."""
    return "b" if layer % 2 else "a"


def in_axis(layer: int) -> str:
    """The grid axis ("a" or "b") that holds layer ``layer``'s inputs: the other one than :func:`out_axis`'s."""
    return dvr.other(out_axis(layer))


@register
class MLPTrainer(Trainer):
    """Encrypted sigmoid network (``--model mlp --layout dvr``) in the double Volley Revolver layout (Chiang,
    arXiv:2201.12577; circuits/dvr.py): forward pass, back-propagation and update on ciphertexts, the
    arithmetic of the plaintext twin (mlp_dvr_twin.py), optional Nesterov momentum. Config keys and level costs:
    this module's docstring. Raises MLPConfigError (a HetrainUserError) for an unknown or out-of-range option.
    """

    name = "mlp-dvr"
    summary = ("network with one or two hidden sigmoid layers, double Volley Revolver packing (wide inputs such "
               "as 400 CNN features); --model mlp --layout dvr")
    capabilities = frozenset({"refresh", "checkpoint", "executor"})
    bootstraps_inside = True  # models/inner_boot.py

    def __init__(self, **config) -> None:
        cfg = self.merge_config(DEFAULTS, config, MLPConfigError)
        hidden = cfg["hidden"]
        if isinstance(hidden, (int, str)):
            hidden = [int(h) for h in str(hidden).split(",")]
        cfg["hidden"] = [int(h) for h in hidden]
        if not cfg["hidden"] or min(cfg["hidden"]) < 1:
            raise MLPConfigError(f"hidden must list at least one positive width, got {plain(hidden)!r}")
        cfg["iterations"] = int(cfg["iterations"])
        if cfg["iterations"] < 1:
            raise MLPConfigError("iterations must be >= 1")
        cfg["learning_rate"] = float(cfg["learning_rate"])
        if not np.isfinite(cfg["learning_rate"]) or cfg["learning_rate"] <= 0:
            raise MLPConfigError("learning_rate must be a positive number")
        if cfg["momentum"] not in ("nesterov", "none"):
            raise MLPConfigError(f"momentum must be 'nesterov' or 'none', got {cfg['momentum']!r}")
        if cfg["layout"] not in ("dvr", "auto"):
            raise MLPConfigError(f"mlp-dvr has only the 'dvr' layout, got {cfg['layout']!r}")
        cfg["seed"], cfg["init_scale"] = int(cfg["seed"]), float(cfg["init_scale"])
        if cfg["input_clip"] is not None:
            cfg["input_clip"] = float(cfg["input_clip"])
            if not cfg["input_clip"] > 0:
                raise MLPConfigError("input_clip must be a positive number (or None)")
        if cfg["batch_size"] is not None:
            cfg["batch_size"] = int(cfg["batch_size"])
            if cfg["batch_size"] < 1:
                raise MLPConfigError("batch_size must be a positive number of rows (or None: full batch)")
        cfg["label_smoothing"] = float(cfg["label_smoothing"])
        if not 0.0 <= cfg["label_smoothing"] < 0.5:
            raise MLPConfigError("label_smoothing must be in [0, 0.5)")
        K = len(cfg["hidden"]) + 1
        specs = cfg["sigmoid_layers"] or [cfg["sigmoid"]] * K
        if len(specs) != K:
            raise MLPConfigError(f"sigmoid_layers needs {K} specs (one per weight layer), got {len(specs)}")
        try:
            self.acts: list[PolyApprox] = [get_sigmoid(s) for s in specs]
        except ValueError as exc:
            raise MLPConfigError(str(exc)) from None
        cfg["centred_hidden"] = bool(cfg["centred_hidden"])
        self._projection = None
        if cfg["projection"] is not None:
            try:
                Q = np.asarray(cfg["projection"], dtype=np.float64)
            except (TypeError, ValueError):
                raise MLPConfigError("projection must be a components x features matrix of numbers") from None
            if Q.ndim != 2 or Q.shape[0] < 1 or Q.shape[1] < 1 or not np.all(np.isfinite(Q)):
                raise MLPConfigError(f"projection must be a finite components x features matrix, got shape {Q.shape}")
            if cfg["components"] is not None and int(cfg["components"]) != Q.shape[0]:
                raise MLPConfigError(f"components {cfg['components']} differs from the projection's {Q.shape[0]} rows")
            cfg["components"] = int(Q.shape[0])
            cfg["projection"] = Q.tolist()  # JSON-safe (the job record and the model file keep it)
            self._projection = Q
        if cfg["components"] is not None:
            cfg["components"] = int(cfg["components"])
            if cfg["components"] < 1:
                raise MLPConfigError("components must be a positive number of input features (or None)")
        if cfg["centred_hidden"]:  # σ − 1/2 on hidden layers: zero-mean features, a better-conditioned output layer
            self.acts = [PolyApprox(f"{a.name} - 1/2", (a.coeffs[0] - 0.5, *a.coeffs[1:]), a.interval)
                         for a in self.acts[:-1]] + [self.acts[-1]]
        super().__init__(**cfg)

    # ------------------------------------------------------------------ shapes and levels
    @property
    def K(self) -> int:
        """The number of weight layers: hidden layers + 1 (the output layer)."""
        return len(self.config["hidden"]) + 1

    def in_width(self, d: int) -> int:
        """The network's input width for data with d features: ``components`` when the client projects them."""
        return int(self.config["components"]) if self.config["components"] is not None else int(d)

    def sizes(self, d: int, c: int) -> list[int]:
        """The layer widths [input width (d, or ``components``), *hidden, c] (mlp_dvr_twin.layer_sizes)."""
        return mlp_dvr_twin.layer_sizes(self.in_width(d), self.config["hidden"], c)

    def layout(self, n: int, d: int, c: int, slots: int) -> dvr.GridLayout:
        """The dvr grid for n samples of d features (input width as :meth:`in_width`) and c classes in
        ``slots`` slots: P × P slots per sample, S samples per ciphertext (dvr.GridLayout.choose; raises
        LayoutError when the widest layer's grid does not fit the slots)."""
        return dvr.GridLayout.choose(slots, n, self.in_width(d), [*self.config["hidden"], c])

    def _mus(self) -> list[float]:
        it = self.config["iterations"]
        return mlp_dvr_twin.nesterov_mu(it) if self.config["momentum"] == "nesterov" else [0.0] * it

    def plan(self, n_samples: int, n_features: int, n_classes: int, params, *, bootstrap_level: int | None = None) -> Plan:
        """Traced (models/trace.py): iterations run on zeros from a fresh state until one does not fit
        (momentum as scheduled; past ``iterations``, as a longer run would have it); later iterations
        are what a refreshed (top-level) state costs.

        With ``bootstrap_level`` (the level a bootstrap restores; default ``params.levels`` whenever an
        iteration does not fit even a refreshed state) the plan also traces the run as a bootstrapping job
        runs it (``trace.bootstrap_run``: the state's refreshes and the bootstraps inside iterations,
        models/inner_boot.py): ``Plan.bootstraps`` and ``Plan.bootstrap_ops``; None when it does not fit."""
        p = get_params(params)
        lay = self.layout(n_samples, n_features, n_classes, p.slots)
        batches = self.batches(lay)  # refuses a batch_size that is not a whole number of data ciphertexts
        shape = (n_samples, n_features, n_classes)
        T, mus = self.config["iterations"], self._mus()
        horizon = max(T, 64)  # how many iterations one modulus chain holds (μ_t as scheduled)
        run = trace.chain(self, shape, p, [self.trace_flavor(t, mus[t] if t < T else None, batches)
                                           for t in range(horizon)])
        fit = len(run)
        later_flavor = self.trace_flavor(min(1, T - 1), mus[min(1, T - 1)], batches)
        later = trace.step(self, shape, p, None, later_flavor)
        # with refreshes every iteration must fit from a refreshed (top-level) state; with Nesterov the
        # second and later ones carry the momentum level, so checking the first one (μ_0 = 0) is not enough
        refreshed_fits = T <= fit or later.fits
        if not later.fits:  # its cost on a deeper chain of the same ring, for the plan's figures
            later = trace.deep_step(self, shape, p, None, later_flavor)
        first = run[0].consumed if run else later.consumed
        per_it = later.consumed
        needed = sum(s.consumed for s in run[:T]) if fit >= T else sum(s.consumed for s in run) + (T - fit) * per_it
        steps = set().union(later.rotation_steps, *(s.rotation_steps for s in run))
        n_in = lay.groups * (lay.feature_blocks + 1) + lay.feature_blocks + 1 + 2 * (self.K - 1)
        notes = [f"dvr grid P={lay.P}, {lay.S} samples per ciphertext, {lay.groups} data ciphertext group(s), "
                 f"{lay.feature_blocks} input-feature block(s)",
                 f"first iteration {first} levels, later ones {per_it} (traced; momentum costs 1 from the second)",
                 f"{later.ops.get('rotate', 0)} rotations per iteration (traced)"]
        if len(batches) > 1:
            notes.append(f"mini-batches of {len(batches[0])} data ciphertext group(s) ({len(batches[0]) * lay.S} rows), "
                         f"{len(batches)} per epoch")
        # the whole run's operations: refreshes add none, so iterations past the chain cost a refreshed one's
        ops = trace.add_ops(*(s.ops for s in run[:T]), *([later.ops] * max(0, T - fit)))
        boot_level = bootstrap_level if bootstrap_level is not None else (None if refreshed_fits else p.levels)
        bootstraps = boot_ops = None
        if boot_level is not None:
            flavors = [self.trace_flavor(t, mus[t], batches) for t in range(T)]
            bootstraps, boot_ops, booted_steps = trace.planned_bootstraps(self, shape, p, flavors, int(boot_level))
            if bootstraps is None:
                notes.append(f"an iteration does not fit even with bootstraps inside it (a bootstrap restores {boot_level} "
                             "levels)")
            else:
                steps |= booted_steps
                notes.append(f"with --refresh bootstrap (a bootstrap restores {boot_level} levels): "
                             f"{max(bootstraps['in_iteration'])} bootstrap(s) inside an iteration at most, "
                             f"{sum(bootstraps['in_iteration'])} inside and {sum(bootstraps['state'])} of the state "
                             f"in the run (traced)")
        return Plan(levels_needed=needed, levels_available=p.levels, rotation_steps=sorted(steps),
                    iterations=T, iterations_that_fit=fit,
                    levels_per_iteration=trace.per_iteration(first, per_it), n_input_ciphertexts=n_in, notes=notes,
                    refreshed_iteration_fits=refreshed_fits, ops=ops, chain_levels=[s.consumed for s in run[:T]],
                    bootstraps=bootstraps, bootstrap_ops=boot_ops)

    # ------------------------------------------------------------------ tracing (models/trace.py)
    def trace_key(self):
        c = self.config
        return (tuple(c["hidden"]), tuple(a.coeffs for a in self.acts), c["components"], c["batch_size"])

    def trace_flavor(self, t: int, mu: float | None, batches: list[list[int]]):
        """(momentum product or not, data groups of the batch): what shapes iteration t. ``mu``: μ_t
        (None: past the schedule, as a longer run would have it: Nesterov's from the second iteration)."""
        if mu is None:
            mu = 0.0 if self.config["momentum"] == "none" or t == 0 else 0.5
        return (mu != 0.0, len(batches[t % len(batches)]))

    def trace_setup(self, engine, n: int, d: int, c: int):
        """Zeros packed as ``client_encrypt`` packs them, all at the top; the state: W and its look-ahead V."""
        lay = self.layout(n, d, c, engine.slots)
        sizes = self.sizes(d, c)
        X = [engine.encrypt(0.0) for _ in range(lay.groups * lay.feature_blocks)]
        Y = [engine.encrypt(0.0) for _ in range(lay.groups)]
        zeros = {k: np.zeros(s) for k, s in self.weight_shapes(d, c).items()}
        W = {k: [engine.encrypt(v) for v in vecs] for k, vecs in self._pack_params(lay, zeros).items()}
        ctx = self._context(lay, sizes, X, Y, params=engine.params if engine.can_bootstrap else None)
        return ctx, dict(W)  # the look-ahead is W itself (``_state``)

    def trace_iteration(self, engine, ctx, state, flavor):
        momentum, groups = flavor
        t = next(b for b, batch in enumerate(ctx["batches"]) if len(batch) == groups)  # a batch of that size
        W, V = self._unstate(state, ctx["names"])
        W, V = self._iteration(engine, ctx, W, V, t, 0.5 if momentum else 0.0)
        return self._state(W, V)

    @staticmethod
    def _state(W: dict, V: dict) -> dict:
        """The server's state: the weights W1..bK, and the look-ahead v_W1.. only when it is not W itself
        (without momentum, and after Nesterov's first step, it is: a refresh then bootstraps each ciphertext once)."""
        return {**W, **({} if V is W else {f"v_{k}": v for k, v in V.items()})}

    @staticmethod
    def _unstate(state: dict, names: list[str]) -> tuple[dict, dict]:
        """(W, V) of a ``_state`` (V is W when it holds no look-ahead)."""
        W = {k: state[k] for k in names}
        return W, ({k: state[f"v_{k}"] for k in names} if f"v_{names[0]}" in state else W)

    def batches(self, lay: dvr.GridLayout) -> list[list[int]]:
        """Data-ciphertext groups of each mini-batch (one list: full batch). A mini-batch is a run of
        whole groups, so ``batch_size`` must be a multiple of the S samples per ciphertext."""
        B = self.config["batch_size"]
        if B is None or B >= lay.n:
            return [list(range(lay.groups))]
        if B % lay.S:
            raise MLPConfigError(f"batch_size {B} is not a multiple of the {lay.S} samples per ciphertext of this "
                                 f"layout (mini-batches are whole data ciphertexts): use {max(1, round(B / lay.S)) * lay.S}")
        k = B // lay.S
        return [list(range(s, min(s + k, lay.groups))) for s in range(0, lay.groups, k)]

    def rotations_per_iteration(self, lay: dvr.GridLayout) -> int:
        """Rotations of one iteration, counted from the layout: the cost model of ``plan_defaults``'s time
        budget, where a trace per candidate would cost more than the search (tests/test_trace_plan.py
        checks it equals the traced count)."""
        lp, ls = log2_pow2(lay.P), log2_pow2(lay.S)
        K, G = self.K, len(self.batches(lay)[0])
        fwd = lp + (K - 1) * (2 * lp + 1)        # reduce layer 1; replicate + reduce above
        bwd = (K - 1) * (2 * lp + 1) + (lp + 1)  # replicate + reduce per layer, replicate δ1
        grads = (lay.feature_blocks + 2 * K - 1) * ls
        return G * (fwd + bwd) + grads

    # ------------------------------------------------------------------ client
    def _check_data(self, X, Y):
        X, Y = check_training_arrays(X, Y, trainer=self.name, min_features=1)
        return self.clip(self.project(X)), Y

    def order(self, n: int) -> np.ndarray:
        """Row order of the training data: as given for full batches; a fixed permutation (``seed``) with
        mini-batches, so that a class-sorted file still gives mixed batches (the client permutes before
        encrypting; the server never sees the order)."""
        if self.config["batch_size"] is None or self.config["batch_size"] >= n:
            return np.arange(n)
        return np.random.default_rng(self.config["seed"]).permutation(n)

    def targets(self, Y: np.ndarray) -> np.ndarray:
        """Training targets: one-hot Y, smoothed to s / 1 − s with ``label_smoothing`` s. BCE's optimum
        logit is then log((1 − s)/s), finite, so the output pre-activations stop growing inside the
        output sigmoid's interval instead of running out of it on separable data."""
        s = self.config["label_smoothing"]
        return Y if s == 0 else Y * (1.0 - 2.0 * s) + s

    def prepare(self, X, Y) -> tuple[np.ndarray, np.ndarray]:
        """Checked, clipped, ordered inputs and smoothed targets: exactly what is encrypted and what the twin trains on."""
        X, Y = self._check_data(X, Y)
        p = self.order(len(X))
        return X[p], self.targets(Y)[p]

    def project(self, X: np.ndarray) -> np.ndarray:
        """X·Qᵀ with the client's ``projection`` Q (no-op without one). The server's copy of the config has
        ``components`` only: it never projects (it has no plaintext), and asking it to is an error."""
        if self._projection is None:
            if self.config["components"] is not None and np.shape(X)[1] != self.config["components"]:
                raise DataError(f"this {self.name} config has components {self.config['components']} but no "
                                "projection (the server's copy): only the data owner's config can project rows")
            return X
        if np.shape(X)[1] != self._projection.shape[1]:
            raise DataError(f"the projection takes {self._projection.shape[1]} features, the rows have {np.shape(X)[1]}")
        return np.asarray(X, dtype=np.float64) @ self._projection.T

    def clip(self, X: np.ndarray) -> np.ndarray:
        """The standardised inputs clipped to [-input_clip, input_clip] (no-op without input_clip): rare
        extreme values (|x| of 10-40 in breast_cancer, digits) otherwise drive the hidden pre-activations
        out of any usable polynomial interval."""
        c = self.config["input_clip"]
        return X if c is None else np.clip(X, -c, c)

    def initial_weights(self, d: int, c: int) -> dict[str, np.ndarray]:
        """Glorot-uniform W1..WK (out × in, seeded by ``seed``, bound × ``init_scale``) and zero biases b1..bK
        (mlp_dvr_twin.init_weights; Glorot & Bengio 2010), which the client encrypts."""
        return mlp_dvr_twin.init_weights(self.sizes(d, c), self.config["seed"], self.config["init_scale"])

    def client_check(self, X, Y):
        """With ``check_interval``: the twin's pre-activations stay inside their intervals (IntervalError).
        The twin runs on ``prepare``'s arrays (clipped, permuted into the mini-batch order, smoothed targets):
        exactly the run that is encrypted, that ``twin`` reproduces and that ``plan_defaults`` verified."""
        if self.config["check_interval"]:
            self._run_twin(*self.prepare(X, Y), check=True)

    def client_encrypt(self, engine, X, Y, *, refresh: bool = False):
        X, Y = self.prepare(X, Y)
        n, d = X.shape
        c = Y.shape[1]
        boots = refresh == "bootstrap" and engine.can_bootstrap  # the server may also bootstrap inside iterations
        plan = self.plan(n, d, c, engine.params, bootstrap_level=engine.bootstrap_level if boots else None)
        plan.check(engine.params, refresh=refresh)
        if self.config["check_interval"]:
            self._run_twin(X, Y, check=True)  # raises DataError if a pre-activation leaves its interval
        lay = self.layout(n, d, c, engine.slots)
        W = self.initial_weights(d, c)
        inputs = {"X": [engine.encrypt(lay.data_block(X, g, t)) for g in range(lay.groups)
                        for t in range(lay.feature_blocks)],
                  "Y": [engine.encrypt(lay.along(Y, g, out_axis(self.K))) for g in range(lay.groups)]}
        for name, vecs in self._pack_params(lay, W).items():
            inputs[name] = [engine.encrypt(v) for v in vecs]
        # the projection (derived from the client's rows) stays with the client; components tells the width
        job = {"model": self.name, "config": {**self.config, "projection": None}, "sizes": self.sizes(d, c),
               "layout": {"P": lay.P, "S": lay.S, "groups": lay.groups, "feature_blocks": lay.feature_blocks}}
        return inputs, job

    def _pack_params(self, lay: dvr.GridLayout, W: dict) -> dict[str, list[np.ndarray]]:
        out = {"W1": lay.weight_blocks(W["W1"]), "b1": [lay.bias(W["b1"], out_axis(1))]}
        for l in range(2, self.K + 1):
            out[f"W{l}"] = [lay.weight(W[f"W{l}"], out_axis(l))]
            out[f"b{l}"] = [lay.bias(W[f"b{l}"], out_axis(l))]
        return out

    def _unpack_params(self, lay: dvr.GridLayout, vecs: dict, sizes: list[int]) -> dict[str, np.ndarray]:
        W = {"W1": lay.read_weight_blocks(vecs["W1"], (sizes[1], sizes[0])),
             "b1": lay.read_bias(vecs["b1"][0], out_axis(1), sizes[1])}
        for l in range(2, self.K + 1):
            W[f"W{l}"] = lay.read_weight(vecs[f"W{l}"][0], out_axis(l), (sizes[l], sizes[l - 1]))
            W[f"b{l}"] = lay.read_bias(vecs[f"b{l}"][0], out_axis(l), sizes[l])
        return W

    def client_decrypt(self, engine, outputs, job):
        return self.state_weights({k: [engine.decrypt(ct) for ct in v] for k, v in outputs.items()}, job)

    def state_weights(self, vectors, job):
        """Weights W1..bK of decrypted slot vectors (the outputs, or a refreshed state: its look-ahead
        v_* entries are ignored)."""
        sizes = job["sizes"]
        n = int(job["data_shape"][0]) if "data_shape" in job else 1
        lay = self.layout(n, sizes[0], sizes[-1], len(vectors["W1"][0]))
        return self._unpack_params(lay, vectors, sizes)

    def twin_after(self, X, Y, iterations):
        return self._run_twin(*self.prepare(X, Y), iterations=iterations)

    def _run_twin(self, X, Y, check=False, iterations=None):
        """The twin on prepared arrays (``prepare``), for the config's iterations or ``iterations``."""
        iterations = self.config["iterations"] if iterations is None else iterations
        return mlp_dvr_twin.train(X, Y, self.config["hidden"], self.acts, iterations=iterations,
                              learning_rate=self.config["learning_rate"], momentum=self.config["momentum"],
                              seed=self.config["seed"], init_scale=self.config["init_scale"], check=check,
                              batch_size=self.config["batch_size"])

    def twin(self, X, Y):
        return self._run_twin(*self.prepare(X, Y))

    def weight_shapes(self, n_features, n_classes):
        sizes = self.sizes(n_features, n_classes)
        shapes = {}
        for l in range(1, len(sizes)):
            shapes[f"W{l}"], shapes[f"b{l}"] = (sizes[l], sizes[l - 1]), (sizes[l],)
        return shapes

    def predict_scores(self, weights, X):
        return mlp_dvr_twin.predict_scores(weights, self.clip(self.project(np.asarray(X, dtype=np.float64))), self.acts)

    # ------------------------------------------------------------------ server
    def server_train(self, engine, inputs, job, progress=None, *, refresh=None, checkpoint=None, executor=None):
        """Train on ciphertexts. ``refresh(state, t) -> state`` (names -> ciphertext lists, weights
        ``W1``.. ``bK`` and, when it is not W itself, the look-ahead ``v_W1``..) is called before an iteration that would not fit
        the state's remaining levels; without it such a job is refused (DepthPlanError).
        ``checkpoint`` (base.py): after every iteration the weights W, the look-ahead V (when it is
        not W itself) and the iteration count are saved; a saved state resumes after its iteration
        (the ciphertexts keep their levels, so refreshes fall where they would have). ``executor``
        (base.py): each data group's pass and each input block's W1 gradient run on its workers."""
        sizes = job["sizes"]
        lay = dvr.GridLayout(engine.slots, int(job["layout"]["P"]), int(job["layout"]["S"]),
                             int(job["data_shape"][0]) if "data_shape" in job else lay_n(job), sizes[0])
        names = [f"{p}{l}" for l in range(1, self.K + 1) for p in ("W", "b")]
        missing = [k for k in ["X", "Y", *names] if k not in inputs]
        if missing:
            raise DataError(f"encrypted inputs lack {missing}")
        X, Y = inputs["X"], inputs["Y"]
        if len(X) != lay.groups * lay.feature_blocks or len(Y) != lay.groups:
            raise DataError("number of data ciphertexts does not match the job's layout")
        W = {k: list(inputs[k]) for k in names}
        V = W
        start = 0
        saved = checkpoint.load() if checkpoint is not None else None
        if saved is not None:
            W, V, start = self._restore(saved, names)
        mus = self._mus()
        # refresh "bootstrap" (the hook bootstraps: no round trip) on an engine that bootstraps: also inside iterations
        boot = inner_boot.inside(refresh, engine)
        ctx = self._context(lay, sizes, X, Y, executor, params=engine.params if boot else None)
        shape = (lay.n, sizes[0], sizes[-1])
        T = self.config["iterations"]
        if start > T:
            raise DataError(f"the checkpoint holds {start} iterations, this job has {T}")
        inner = 0
        for t in range(start, T):
            flavor = self.trace_flavor(t, mus[t], ctx["batches"])
            state = self._state(W, V)
            if boot:  # traced: refresh the state first, or bootstrap inside the iteration only (fewer bootstraps)
                if inner_boot.refresh_first(self, shape, engine, trace.levels_of(state), flavor, t):
                    W, V = self._unstate(refresh(state, t), names)
            elif not trace.fits(self, shape, engine.params, state, flavor):  # traced: the next iteration needs a refresh
                level = min(ct.level for v in V.values() for ct in v)
                if refresh is None:
                    raise DepthPlanError(f"iteration {t + 1} needs more levels than the state's {level}; "
                                         f"{t} iteration(s) fit without a refresh step")
                state = refresh(state, t)
                W, V = self._unstate(state, names)
                if not trace.fits(self, shape, engine.params, state, flavor):
                    level = min(ct.level for v in V.values() for ct in v)
                    hint = (" or --refresh bootstrap with a backend that bootstraps (openfhe), which bootstraps inside "
                            "the iteration" if not engine.can_bootstrap else "")
                    raise DepthPlanError(f"iteration {t + 1} does not fit even in refreshed ciphertexts (level "
                                         f"{level} of {engine.max_level}): use a preset with more levels or a "
                                         f"cheaper sigmoid{hint}")
            (W, V), done = inner_boot.counted(engine, refresh, lambda: self._iteration(engine, ctx, W, V, t, mus[t]))
            inner += done
            if checkpoint is not None:
                lookahead = {} if V is W else {f"v_{k}": v for k, v in V.items()}
                checkpoint.save({**W, **lookahead}, {"iteration": t + 1, "lookahead": bool(lookahead)})
            if progress:
                progress(t + 1, T, f"iteration {t + 1}/{T}")
        self.run_stats = {"iterations": T, "resumed_from": start, "bootstraps_in_iterations": inner}
        return W

    def _context(self, lay: dvr.GridLayout, sizes: list[int], X: list, Y: list, executor=None, params=None) -> dict:
        """What every iteration reads: the grid, its mini-batches and their steps lr / n_b, the masks, the data,
        and with ``params`` (the job bootstraps inside iterations) the levels each bootstrap point needs."""
        names = [f"{p}{l}" for l in range(1, self.K + 1) for p in ("W", "b")]
        batches = self.batches(lay)
        steps = [self.config["learning_rate"] / sum(lay.valid_samples(g) for g in b) for b in batches]
        masks = self._masks(lay, sizes, {g: s for b, s in zip(batches, steps) for g in b})
        needs = None if params is None else self._level_needs(lay, masks, params)
        return {"lay": lay, "names": names, "batches": batches, "steps": steps, "masks": masks, "X": X, "Y": Y,
                "executor": executor, "needs": needs}

    def _level_needs(self, lay: dvr.GridLayout, masks, params) -> dict:
        """Levels each in-iteration bootstrap point must hold (models/inner_boot.py), traced from the
        segments' own functions on zeros (inner_boot.consumed, cached): ("a", l) layer l's pre-activation
        (its activation and derivative, then the one product each feeds: the next layer's weights, the
        gradient, the backward pass; the output layer: its error), ("d", l) the error δ_l (the backward
        step to δ_{l−1} and the gradient product of its replicated copy), "momentum" the W each Nesterov
        step scales."""
        K, acts = self.K, self.acts
        hidden, out = masks
        out_mask = next(iter(out.values()))
        base = (type(self).__qualname__, self.trace_key(), lay.P, lay.S, lay.n, lay.d)
        needs = {}
        for l in range(1, K + 1):
            if l < K:
                def probe(eng, top, l=l):
                    z, dz = _activate(eng, acts[l - 1], top(), hidden[l])
                    zr = _layer_input(eng, lay, z, l + 1)
                    return [eng.mul(zr, top()), eng.mul(dz, top())]
            else:
                def probe(eng, top, l=l):
                    return [_output_error(eng, acts[l - 1], top(), out_mask, top())]
            needs[("a", l)] = inner_boot.consumed(base + ("a", l), params, probe)

            def dprobe(eng, top, l=l):
                dr, prev = _backward(eng, lay, top(), top() if l > 1 else None, top() if l > 1 else None, l)
                return [eng.mul(dr, top())] + ([prev] if prev is not None else [])
            needs[("d", l)] = inner_boot.consumed(base + ("d", l), params, dprobe)
        needs["momentum"] = inner_boot.consumed(base + ("momentum",), params,
                                                lambda eng, top: [_momentum(eng, top(), top(), 0.5)])
        return needs

    def _iteration(self, engine, ctx: dict, W: dict, V: dict, t: int, mu: float) -> tuple[dict, dict]:
        """Iteration t (its mini-batch t mod B): gradients at the look-ahead V, W ← V − G, and with μ_t ≠ 0
        the next look-ahead (1 + μ)·W_new − μ·W (one level). Returns (W, V); V is W without momentum.
        With ``ctx["needs"]`` it bootstraps inside where levels run out (models/inner_boot.py)."""
        b = t % len(ctx["batches"])
        needs = ctx.get("needs")
        G = self._gradients(engine, ctx["lay"], ctx["X"], ctx["Y"], V, ctx["masks"], ctx["steps"][b],
                            ctx["batches"][b], ctx["executor"], needs)
        W_new = {k: [engine.sub(v, g) for v, g in zip(V[k], G[k])] for k in ctx["names"]}
        if mu:
            if needs is not None:  # the Nesterov step scales both states: each needs its level
                def with_levels(S: dict) -> dict:
                    return {k: [inner_boot.ensure_levels(engine, w, needs["momentum"], f"{k} before the momentum step")
                                for w in S[k]] for k in ctx["names"]}
                W_new, W = with_levels(W_new), with_levels(W)
            V = {k: [_momentum(engine, wn, wo, mu) for wn, wo in zip(W_new[k], W[k])] for k in ctx["names"]}
        else:
            V = W_new
        return W_new, V

    # ------------------------------------------------------------------ inference on the encrypted model
    # Case (a) of protocol/inference.py: new rows scored with the weights ``server_train`` returned,
    # still encrypted. The queries are packed exactly as the training rows (GridLayout.data_block in
    # the training's grid: the same P and S samples per ciphertext), so the weights, replicated over
    # samples, are used as they are; the forward is ``_gradients``' own, without the output sigmoid
    # (monotone: the decrypted linear scores give the argmax).
    def query_packing(self, job: dict, slots: int) -> dict:
        """What a query bundle for this job's encrypted model must hold (query_check.py checks it)."""
        lay = self.query_layout(job, 1, slots)
        return {"layout": "grid", "P": lay.P, "S": lay.S, "d": int(job["sizes"][0]), "c": int(job["sizes"][-1]),
                "per_group": lay.feature_blocks, "steps": [s for s in lay.rotation_steps() if s % slots]}

    def query_layout(self, job: dict, n: int, slots: int) -> dvr.GridLayout:
        """The training's grid (job["layout"]: P, S) for ``n`` query rows."""
        return dvr.GridLayout(slots, int(job["layout"]["P"]), int(job["layout"]["S"]), int(n), int(job["sizes"][0]))

    def pack_queries(self, job: dict, X: np.ndarray, slots: int) -> list[np.ndarray]:
        """Query rows as the network takes them (``prepare``: projected, clipped) -> the data blocks."""
        lay = self.query_layout(job, X.shape[0], slots)
        return [lay.data_block(X, g, t) for g in range(lay.groups) for t in range(lay.feature_blocks)]

    def query_rows(self, X: np.ndarray) -> np.ndarray:
        """Preprocessed rows -> the network's inputs (the client's projection and clip; ``prepare``)."""
        return self.clip(self.project(np.asarray(X, dtype=np.float64)))

    def encrypted_scores(self, engine, X: list, weights: dict, job: dict) -> list:
        """The forward of ``_gradients`` on query ciphertexts ``X`` with the encrypted weights:
        one ciphertext of the last layer's linear outputs per group of S rows."""
        sizes, K = job["sizes"], self.K
        lay = self.query_layout(job, 1, engine.slots)
        T = lay.feature_blocks
        hidden = {l: PlainVector(lay.mask(out_axis(l), sizes[l])) for l in range(1, K)}
        out = []
        for g in range(len(X) // T):
            z = None
            for l in range(1, K + 1):
                if l == 1:
                    acc = engine.mul_sum([(X[g * T + t], weights["W1"][t]) for t in range(T)])
                else:
                    acc = engine.mul(dvr.replicate(engine, z, lay, out_axis(l)), weights[f"W{l}"][0])
                a = engine.add(dvr.reduce_axis(engine, acc, lay, in_axis(l)), weights[f"b{l}"][0])
                z = eval_poly_masked(engine, a, self.acts[l - 1].coeffs, hidden[l]) if l < K else a
            out.append(z)
        return out

    def read_scores(self, vectors: list, job: dict, n: int) -> np.ndarray:
        """Decrypted ``encrypted_scores`` -> n × c linear scores."""
        lay = self.query_layout(job, n, len(vectors[0]))
        c = int(job["sizes"][-1])
        return np.concatenate([lay.read_along(v, out_axis(self.K), c) for v in vectors])[:n]

    def linear_scores(self, weights: dict, X: np.ndarray) -> np.ndarray:
        """Plaintext twin of ``read_scores`` on the network's inputs (``query_rows``)."""
        return mlp_dvr_twin.forward(weights, X, self.acts)[0][-1]

    @staticmethod
    def _restore(saved, names: list[str]) -> tuple[dict, dict, int]:
        """(W, V, iterations done) from a checkpoint written by ``server_train``."""
        state, meta = saved
        lookahead = bool(meta.get("lookahead"))
        need = names + ([f"v_{k}" for k in names] if lookahead else [])
        if "iteration" not in meta or any(k not in state for k in need):
            raise DataError("the checkpoint does not hold this job's network state")
        W = {k: list(state[k]) for k in names}
        V = {k: list(state[f"v_{k}"]) for k in names} if lookahead else W
        return W, V, int(meta["iteration"])

    def _masks(self, lay, sizes, steps: dict):
        """Hidden-layer masks and, per data group g, the output mask with value ``steps[g]`` (its batch's lr / n_b)."""
        K = self.K
        hidden = {l: PlainVector(lay.mask(out_axis(l), sizes[l])) for l in range(1, K)}
        output = {g: PlainVector(lay.mask(out_axis(K), sizes[K], lay.valid_samples(g), value=steps[g]))
                  for g in range(lay.groups)}
        return hidden, output

    def _gradients(self, eng, lay, X, Y, V, masks, step, groups, executor=None, needs=None):
        """One forward + backward pass at the look-ahead V over the data ``groups`` (a mini-batch);
        returns step-scaled gradients. Each group's pass, and each input block's W1 gradient, is one
        task of ``executor`` (base.py; the same operations without one). ``needs``: bootstrap inside
        the pass where levels run out (``_level_needs``; None: never)."""
        K, T = self.K, lay.feature_blocks
        hidden_masks, out_masks = masks
        per_group = run_tasks(eng, executor, _group_pass,
                              [([X[g * T + t] for t in range(T)], Y[g], out_masks[g]) for g in groups],
                              (self.acts, lay, V, hidden_masks, step, needs))
        zrep = {l: [p[0][l - 2] for p in per_group] for l in range(2, K + 1)}  # layer l's input, replicated
        drep = {l: [p[1][K - l] for p in per_group] for l in range(1, K + 1)}  # δ_l replicated over its inputs
        deltas = {l: [p[2][K - l] for p in per_group] for l in range(1, K + 1)}
        G = {"W1": run_tasks(eng, executor, _w1_gradient, [([X[g * T + t] for g in groups],) for t in range(T)],
                             (lay, drep[1]))}
        for l in range(1, K + 1):
            if l > 1:
                G[f"W{l}"] = [dvr.reduce_axis(eng, eng.mul_sum(list(zip(drep[l], zrep[l]))), lay, "s")]
            G[f"b{l}"] = [dvr.reduce_axis(eng, eng.add_many(deltas[l]), lay, "s")]
        return G


def _group_pass(eng, acts, lay, V, hidden_masks, step, needs, Xg: list, y, out_mask):
    """Forward and backward pass of one data group: ([input of layer l replicated, l = 2..K],
    [δ_l replicated over layer l's inputs, l = K..1], [δ_l, l = K..1]) (an executor task).
    ``needs`` (``MLPTrainer._level_needs``; None: no bootstrapping inside the iteration): the levels each
    pre-activation ("a", l) and each δ ("d", l) must hold for its segment; one with fewer is bootstrapped
    there (models/inner_boot.py)."""
    K, T = len(acts), len(Xg)
    dact, z, zreps = {}, None, []
    y = eng.mul_scalar(y, step)
    for l in range(1, K + 1):
        if l == 1:
            acc = eng.mul_sum([(Xg[t], V["W1"][t]) for t in range(T)])
        else:
            zr = _layer_input(eng, lay, z, l)
            zreps.append(zr)
            acc = eng.mul(zr, V[f"W{l}"][0])
        a = eng.add(dvr.reduce_axis(eng, acc, lay, in_axis(l)), V[f"b{l}"][0])
        if needs is not None:
            a = inner_boot.ensure_levels(eng, a, needs[("a", l)], f"layer {l}'s pre-activation")
        act = acts[l - 1]
        if l < K:
            z, dact[l] = _activate(eng, act, a, hidden_masks[l])
        else:
            delta = _output_error(eng, act, a, out_mask, y)
    dreps, deltas = [], []
    for l in range(K, 0, -1):
        if needs is not None:
            delta = inner_boot.ensure_levels(eng, delta, needs[("d", l)], f"layer {l}'s error δ")
        deltas.append(delta)
        dr, delta = _backward(eng, lay, delta, V[f"W{l}"][0] if l > 1 else None, dact.get(l - 1), l)
        dreps.append(dr)
    return zreps, dreps, deltas


def _layer_input(eng, lay, z, l: int):
    """Layer l's input z (the layer below's activation) replicated along layer l's output axis."""
    return dvr.replicate(eng, z, lay, out_axis(l))


def _activate(eng, act, a, mask):
    """A hidden layer's activation σ(a) and derivative σ'(a), masked (garbage slots zeroed)."""
    return eval_poly_masked(eng, a, act.coeffs, mask), eval_poly_masked(eng, a, act.derivative().coeffs, mask)


def _output_error(eng, act, a, out_mask, y):
    """E = (lr/n)(σ(A_K) − Y) on valid samples and outputs only (the step is in the mask and in y)."""
    return eng.sub(eval_poly_masked(eng, a, act.coeffs, out_mask), y)


def _backward(eng, lay, delta, W, dact, l: int):
    """(δ_l replicated over layer l's inputs, δ_{l−1} = (W_lᵀ·δ_l) ⊙ σ'(a_{l−1}); None for l = 1)."""
    dr = dvr.replicate(eng, delta, lay, in_axis(l))
    if l == 1:
        return dr, None
    back = dvr.reduce_axis(eng, eng.mul(dr, W), lay, out_axis(l))
    return dr, eng.mul(back, dact)


def _momentum(eng, w_new, w_old, mu: float):
    """Nesterov's next look-ahead (1 + μ)·W_new − μ·W (one level)."""
    return eng.sub(eng.mul_scalar(w_new, 1.0 + mu), eng.mul_scalar(w_old, mu))


def _w1_gradient(eng, lay, drep1: list, Xt_blocks: list):
    """W1's gradient for one input block t: reduce_s(Σ_g δ₁[g] ⊙ X[g, t]) (an executor task)."""
    return dvr.reduce_axis(eng, eng.mul_sum(list(zip(drep1, Xt_blocks))), lay, "s")


# ---------------------------------------------------------------------- defaults chosen on the client
# hidden (16): one hidden layer, so an iteration takes 9 levels and fits n16384-deep (two hidden layers
# need 14-15 levels, i.e. n32768, whose rotation keys are ~200 MB each and whose operations are ~4x
# slower); 16 units keep the dvr grid at P = 16 for up to 16 classes, and reached sklearn's accuracy on
# every benchmark set. momentum "none": Nesterov costs a 10th level from the second iteration, which
# n16384-deep does not have. The sigmoid pairs (hidden layer, output layer), learning rates, label smoothing
# and batch sizes are the grid ``plan_defaults`` searches with the twin; degree 3 only (degree 5/7 cost a
# level per layer).
DEFAULT_HIDDEN = [16]
DEFAULT_INPUT_CLIP = 3.0
SIGMOID_PAIRS = [("deg3:32", "deg3:16"), ("deg3:64", "deg3:16")]
LEARNING_RATES = [2.0, 4.0, 8.0, 16.0, 32.0]
SEAL_SECONDS_PER_ROTATION = 0.018   # n16384-deep on 2 shared cores, measured (breast_cancer: 430 rot -> 7.5 s)
SEAL_SECONDS_PER_PRODUCT = 0.010    # one ct x ct product at n16384-deep (a W1 block x data block)
TIME_BUDGET_S = 420.0               # server training time a default run may plan for (<= 10 min in all)
MAX_DEFAULT_ITERATIONS = 160       # mini-batch steps (digits: ~130 steps of 128 rows fit the budget)
BATCH_ROWS = 128                    # mini-batch candidate (rounded to whole data ciphertexts) when n >= 2 batches
LABEL_SMOOTHING = [0.0, 0.1]
# Wide inputs (raw pixels): the planner also rehearses every candidate on the whitened leading principal
# components of the standardised features (the client's projection; raw features stay candidates too, and
# validation decides). MNIST's 784 pixels (1,600 rows), raw: 49 input blocks per data ciphertext group,
# ~10.9 s per 128-row step under SEAL, so the budget held 38 steps (the plan: 27, 0.69 test accuracy where
# scikit-learn's MLP gets 0.85); and with 600 correlated pixel columns the hidden pre-activations grow fast:
# every raw candidate left the 90 % margin of its interval within 20-110 steps (raw at 60 steps would score
# 0.82 but reaches 1.09 of deg3:64; the near-constant pixels' share of the largest |A1| is only ~2 %: it is
# the correlated directions, not the rare lit pixels). On the components holding 80 % of the variance (89,
# rounded up to 96 = 6 blocks of the P = 16 grid: the extra components cost nothing) a step costs ~3.6 s,
# 118 steps fit the budget, every pre-activation stays within 0.87 of its interval and the twin scores 0.83.
# RegNet's 400 features (128 rows): validation keeps the raw features (0.83; its projection scored 0.80).
PCA_MIN_FEATURES = 256      # from this many features (more than 8 input blocks' worth) add projected candidates
PCA_VARIANCE = 0.8          # share of the standardised features' variance the kept components hold
PCA_EIGEN_FLOOR = 1e-6      # components below this share of the largest eigenvalue are never kept (rank < d)


def estimated_seconds_per_iteration(trainer: "MLPTrainer", n: int, d: int, c: int, slots: int) -> float:
    """Rough SEAL server time of one iteration at n16384-deep (rotations and products dominate)."""
    lay = trainer.layout(n, d, c, slots)
    products = 2 * len(trainer.batches(lay)[0]) * (lay.feature_blocks + 2 * trainer.K)
    return trainer.rotations_per_iteration(lay) * SEAL_SECONDS_PER_ROTATION + products * SEAL_SECONDS_PER_PRODUCT


def _reach(weights: dict, X: np.ndarray, acts) -> float:
    A, _ = mlp_dvr_twin.forward(weights, X, acts)
    r = 0.0
    for a, act in zip(A, acts):
        m = float(np.max(np.abs(a))) if np.all(np.isfinite(a)) else np.inf
        r = max(r, m / max(abs(v) for v in act.interval))
    return r


def _trace(cfg: dict, X, Y, Xv, Yv, T: int) -> mlp_defaults.Trace:
    """Twin run of ``cfg`` on (X, Y) for T iterations, scored on (Xv, Yv) after each iteration; reach of the
    look-ahead state V_t each iteration's forward pass runs on (what ``check_interval`` checks)."""
    tr = MLPTrainer(**{**cfg, "iterations": T})
    acts, mus = tr.acts, tr._mus()
    (X, Y), Xv = tr.prepare(X, Y), tr.clip(tr.project(Xv))
    W0 = mlp_dvr_twin.init_weights(tr.sizes(X.shape[1], Y.shape[1]), tr.config["seed"], tr.config["init_scale"])
    out = mlp_defaults.Trace([], [], [])
    hist = [W0]
    worst = 0.0

    def callback(t, W, info):
        nonlocal worst
        if t == 0:
            V = hist[0]
        else:
            mu = mus[t - 1]
            V = {k: (1 + mu) * hist[t][k] - mu * hist[t - 1][k] for k in W} if mu else hist[t]
        worst = max(worst, _reach(V, X, acts))
        hist.append(W)
        if len(hist) > 3:
            hist[-4] = None  # only the last two states are needed
        s = mlp_dvr_twin.predict_scores(W, Xv, acts)
        out.val_acc.append(float(np.mean(s.argmax(1) == Yv.argmax(1))))
        out.val_loss.append(mlp_defaults.bce(s, Yv))
        out.reach.append(worst)

    mlp_dvr_twin.train(X, Y, tr.config["hidden"], acts, iterations=T, learning_rate=tr.config["learning_rate"],
                   momentum=tr.config["momentum"], seed=tr.config["seed"], init_scale=tr.config["init_scale"],
                   weights=W0, callback=callback, batch_size=tr.config["batch_size"])
    return out


def principal_projection(X: np.ndarray, variance: float = PCA_VARIANCE, multiple: int = 1,
                         components: int | None = None) -> np.ndarray:
    """Whitening projection Q (k x d) onto the leading principal components of the (standardised) rows X:
    X·Qᵀ has uncorrelated unit-variance columns on these rows. k: ``components`` if given, else the fewest
    components that hold ``variance`` of the total, rounded up to a multiple of ``multiple`` (whole input
    blocks of the dvr grid); never more than the components with a non-negligible eigenvalue (a rank below d:
    fewer rows than features, constant columns). Signs are fixed (each row's largest entry positive), so the
    same rows always give the same Q."""
    X = np.asarray(X, dtype=np.float64)
    Xc = X - X.mean(axis=0)
    lam, V = np.linalg.eigh(Xc.T @ Xc / max(len(X), 1))
    lam, V = np.maximum(lam[::-1], 0.0), V[:, ::-1]
    rank = max(1, int(np.sum(lam > PCA_EIGEN_FLOOR * max(lam[0], 1e-300))))
    if components is None:
        k = int(np.searchsorted(np.cumsum(lam) / max(lam.sum(), 1e-300), variance) + 1)
        k = -(-k // max(1, multiple)) * max(1, multiple)
    else:
        k = int(components)
    k = max(1, min(k, rank))
    Q = (V[:, :k] / np.sqrt(lam[:k])).T
    flip = np.sign(Q[np.arange(k), np.abs(Q).argmax(axis=1)])
    return Q * flip[:, None]


def plan_defaults(X, Y, config: dict | None = None, *, refresh: bool = True, params=None) -> tuple[dict, dict]:
    """The complete mlp-dvr config for this data: the user's keys kept, the rest chosen on the plaintext
    twin (models/mlp_defaults.py): hidden, sigmoid_layers, learning_rate, momentum, batch_size,
    label_smoothing and iterations (report: what was chosen, its validation scores and ``max_iterations``);
    for wide inputs (``wide_inputs``) or a given ``components``, also the client's input ``projection``
    (``principal_projection``: candidates on the raw features and on the projected ones are ranked together).

    ``refresh``: the state is refreshed between iterations, so the iteration count is bounded by a
    wall-time budget (``TIME_BUDGET_S`` at the estimated SEAL cost per iteration); without refresh, by
    what one modulus chain of ``params`` (default n16384-deep) holds. Returns (config, report)."""
    X, Y = np.asarray(X, dtype=np.float64), np.asarray(Y, dtype=np.float64)
    given = dict(config or {})
    if "sigmoid" in given and "sigmoid_layers" not in given:
        given["sigmoid_layers"] = None
    base = {k: v for k, v in given.items() if k != "iterations"}
    base.setdefault("hidden", list(DEFAULT_HIDDEN))
    base.setdefault("momentum", "none")
    base.setdefault("input_clip", DEFAULT_INPUT_CLIP)
    base.setdefault("centred_hidden", True)
    p = get_params(params or "n16384-deep")
    n, d, c = X.shape[0], X.shape[1], Y.shape[1]
    # the inputs the candidates train on: the standardised features, and for wide data (or the user's
    # ``components``) also their whitened leading principal components (the client's projection)
    own_width = base.get("projection") is None and base.get("components") is not None  # components, not Q, given
    inputs = [] if own_width else [{}]
    if own_width or (base.get("projection") is None and wide_inputs(base, n, d, c, p.slots)):
        P = MLPTrainer(**{**base, "components": None, "iterations": 1}).layout(n, d, c, p.slots).P
        Q = principal_projection(X, multiple=P, components=base.get("components")).tolist()
        inputs.append({"projection": Q, "components": len(Q)})
    probe = MLPTrainer(**{**base, **inputs[0], "iterations": 1})
    K = probe.K
    pairs = [None] if ("sigmoid_layers" in given or "sigmoid" in given) else SIGMOID_PAIRS
    cands = []
    for inp in inputs:
        S = MLPTrainer(**{**base, **inp, "iterations": 1}).layout(n, d, c, p.slots).S
        batch = S * max(1, round(BATCH_ROWS / S))  # whole data ciphertexts
        batches = [None, batch] if (refresh and n >= 2 * batch) else [None]
        for cand in mlp_defaults.grid(given, batch_size=batches, label_smoothing=LABEL_SMOOTHING,
                                      learning_rate=LEARNING_RATES):
            for pair in pairs:
                cc = {**base, **inp, **cand}
                if pair is not None:
                    cc["sigmoid_layers"] = [pair[0]] * (K - 1) + [pair[1]]
                cands.append(cc)
    fixed = int(given["iterations"]) if "iterations" in given else None

    def T_max(cand) -> int:
        if refresh:
            per_it = estimated_seconds_per_iteration(MLPTrainer(**{**cand, "iterations": 1}), n, d, c, p.slots)
            return int(min(MAX_DEFAULT_ITERATIONS, max(4, TIME_BUDGET_S // per_it)))
        return max(1, MLPTrainer(**{**cand, "iterations": 64}).plan(n, d, c, p).iterations_that_fit)

    def final_reach(cand, T):
        return _trace(cand, X, Y, X[:1], Y[:1], T).reach

    # the job as the trainer alone runs it (the user's options, the trainer's DEFAULTS for the rest): kept
    # when no candidate fits the margin but this run stays inside every interval (never worse than unplanned)
    own = {k: v for k, v in given.items() if k != "iterations"}
    if own.get("components") is not None and own.get("projection") is None:  # the trainer alone cannot project
        own = {**own, **inputs[-1]}
    fallback = (own, fixed or MLPTrainer(**own).config["iterations"])
    return mlp_defaults.choose(cands, _trace, final_reach, X, Y, T_max, fixed, fallback=fallback)


def wide_inputs(base: dict, n: int, d: int, c: int, slots: int) -> bool:
    """Whether the planner projects the inputs onto principal components (``PCA_MIN_FEATURES``): at least that
    many features, spanning more than 8 input blocks of the dvr grid."""
    if d < PCA_MIN_FEATURES:
        return False
    return MLPTrainer(**{**base, "iterations": 1}).layout(n, d, c, slots).feature_blocks > 8


def lay_n(job: dict) -> int:
    """The sample count of a job record without ``data_shape``: there is none to read, so it raises
    DataError (an incomplete or old job.json)."""
    raise DataError("job has no data_shape [n_samples, n_features, n_classes]")
