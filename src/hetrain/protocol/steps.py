"""The steps of a training job, each usable on its own machine, and ``fit``: all of them in sequence.

    data owner                                   training server
    ----------                                   ---------------
    keygen(KEYS)                 (once)
    encrypt(KEYS, X, y, JOB)     -> JOB/ ------>  train(JOB)            the server process; public keys only
    attach(KEYS, JOB)            <-- refresh -->  (refresh "client": the owner may come and go)
    decrypt(KEYS, JOB)           <- JOB/outputs.bin

or through the training service (``hetrain serve``): ``submit(JOB, URL)`` uploads the bundle and
returns the service's job id ID; ``attach(KEYS, JOB, server=URL, remote_job=ID)`` answers over
HTTP; ``decrypt(KEYS, JOB, server=URL, remote_job=ID)`` downloads the result first.

The CLI commands ``hetrain keygen|encrypt|train|refresh|decrypt`` call these functions, and
``fit`` (``hetrain fit``, ``hetrain.protocol.fit``, the estimators) is exactly ``keygen`` (into a
private temporary directory unless ``keys=`` is given) → ``encrypt`` → ``train`` (a server
process here, or the ``hetrain serve`` service at ``server=URL``) with ``attach`` answering its
refresh requests in this process → ``decrypt``. The client's private half of each job (the
preprocessing, the rows for the plaintext twin, the validation state) lives in KEYS/jobs/<job id>/,
never in JOB/.
"""
from __future__ import annotations

import contextlib
import json
import pathlib
import secrets
import shutil
import tempfile
import time

from hetrain.ckks.registry import is_insecure
from hetrain.errors import HetrainUserError
from hetrain.models.base import DepthPlanError

from . import files
from .client_jobs import ClientJob, FitResult, prepare_job
from .errors import ServerError, TwinMismatch
from .keys import KeyDir
from .monitor import PeakRSS


# ---------------------------------------------------------------------------- keygen
def keygen(out, *, backend: str = "seal", preset: str = "n16384", force_insecure: bool = False,
           seed: int | None = None) -> KeyDir:
    """A new key directory (protocol/keys.py): the secret key for ``preset`` and its public record."""
    return KeyDir.create(out, backend, preset, force_insecure=force_insecure, seed=seed)


# ---------------------------------------------------------------------------- encrypt
def encrypt(keys: KeyDir, X, y, jobdir, *, model: str = "mlr", config: dict | None = None, refresh: str = "auto",
            progress=True, log=None, job: ClientJob | None = None, before_keys=None, settings: dict | None = None,
            **options) -> tuple[ClientJob, object]:
    """Preprocess and plan on the plaintext, make this job's evaluation keys under ``keys``, encrypt and
    write the job bundle to ``jobdir`` (public material only) and the client's record to
    KEYS/jobs/<job id>/. Returns (the client's job half, the engine with the secret key).

    ``job``: an already prepared job (``fit`` prepares before it makes keys). The job's CKKS
    parameters are the keys' parameters: a job that does not fit them is refused with the preset
    that would fit (make keys for it with ``hetrain keygen --preset P``). ``progress``: True/False or
    a progress.RunProgress (the "keygen" and "encrypt" phases); ``before_keys(job)``: called before the
    evaluation keys are made (prints the estimate, may refuse: estimate.check_memory).

    ``settings``: the options the user ran with (``{"encrypt": {...}}``, cli.config.effective_config),
    kept in the client's record and written to the model file's ``info["configuration"]`` by ``decrypt``.
    Raises DepthPlanError when the job bootstraps and the keys' backend cannot, and the planning errors
    (DepthPlanError, IntervalError, DataError) of preparing the job.
    """
    from .progress import as_display

    say = log or (lambda msg: None)
    display = as_display(progress)
    if job is None:
        job = _prepare_for_keys(keys, X, y, model, config, refresh, say, options)
    if settings is not None:
        job.settings = dict(settings)
    if before_keys is not None:
        before_keys(job)
    job.job_id = secrets.token_hex(8)
    record_dir = keys.job_dir(job.job_id, create=True)
    t0 = time.perf_counter()
    with display.phase("keygen", detail=f"{len(job.rotations)} rotation key(s), {job.params.name}"):
        engine = keys.job_engine(job.rotations)
    job.timings["keygen_s"] = time.perf_counter() - t0
    if job.refresh == "bootstrap" and not engine.can_bootstrap:
        raise DepthPlanError(f"backend {engine.backend_name} cannot bootstrap: use refresh client")
    # the bound of the twin check, from the job's parameters and its own circuit (twin_bound.py)
    from .twin_bound import describe, twin_bound

    bound = twin_bound(job, engine)
    job.options["twin_bound"] = bound
    job.timings["rehearsal_s"] = bound["seconds"]
    say(describe(bound))
    from .client import _count_calls

    with display.phase("encrypt", total=getattr(job, "n_input_ciphertexts", None), unit="ciphertexts") as bar, \
            _count_calls(engine, "encrypt", bar.advance):
        inputs, bundle = job.encrypt(engine)
        bundle["refresh"] = job.refresh
        bundle["job_id"] = job.job_id
        # the server opens the refresh channel when the data owner answers something: refreshes, or
        # (mini-batch mlr) the validation of each epoch
        bundle["channel"] = job.wants_channel
        t0 = time.perf_counter()
        job.upload = files.write_job(jobdir, engine, inputs, bundle)  # lazily encrypted inputs: encrypted here
        job.timings["write_job_s"] = time.perf_counter() - t0
    del inputs
    # the data owner only encrypts and decrypts from here on: OpenFHE frees its rotation/bootstrapping keys
    # (gigabytes at N=2^16) so that the server beside it has the memory
    release = getattr(engine, "release_evaluation_keys", None)
    if release is not None:
        release()
    job.save(record_dir)
    return job, engine


def _prepare_for_keys(keys: KeyDir, X, y, model, config, refresh, say, options) -> ClientJob:
    """prepare_job on the keys' parameters; a job that needs others is refused with the ones it needs."""
    options = {k: v for k, v in options.items() if k != "force_insecure"}  # the keys' own choice counts
    try:
        return prepare_job(X, y, model, config, refresh=refresh, backend=keys.backend, preset=keys.params, log=say,
                           force_insecure=keys.force_insecure, advise_presets=False, **options)
    except DepthPlanError as exc:
        fits = _preset_that_fits(X, y, model, config, refresh, keys.backend, options)
        if fits is None:
            raise
        raise DepthPlanError(f"{exc}\nThe keys in {keys.path} are for preset {keys.params.name}; this job needs "
                             f"{fits}: make keys for it with `hetrain keygen --out NEWKEYS --preset {fits}` and "
                             "encrypt with --keys NEWKEYS") from None


def _preset_that_fits(X, y, model, config, refresh, backend, options) -> str | None:
    """The smallest preset whose levels hold the job's depth plan (None if none does)."""

    from .client_jobs import resolve_refresh
    from .planning import choose_preset, make_trainer
    from .preprocess import Preprocessor

    pre = Preprocessor.fit(X, y, scale=options.get("scale") or 1.0)
    Xp, Y = pre.transform(X), pre.one_hot(y)
    refresh = resolve_refresh(refresh, model, config, backend, Xp.shape[1])
    try:
        if model == "mlr" and refresh != "none":
            from hetrain.models.mlr_minibatch import MiniBatchMLR

            trainer = MiniBatchMLR(**{k: v for k, v in (config or {}).items() if k != "whitening"})
            return choose_preset(trainer, *Xp.shape, Y.shape[1], refresh=True).name
        trainer = make_trainer(model, config, Xp.shape[1], data=(Xp, Y), refresh=refresh != "none", preset="auto")
        p = choose_preset(trainer, *Xp.shape, Y.shape[1], refresh=refresh != "none")
        plan = trainer.plan(*Xp.shape, Y.shape[1], p)
        return p.name if (plan.fits_with_refresh() if refresh != "none" else plan.fits) else None
    except HetrainUserError:
        return None


# ---------------------------------------------------------------------------- train (the server side)
def train(jobdir, *, resume: bool = False, progress: bool = True, channel_timeout: float | None = None,
          trainer_modules=(), on_progress=None, during=None, mem: PeakRSS | None = None, env=None,
          workers: int | None = None, executor: str | None = None, ray_address: str | None = None) -> dict:
    """Run the server process on the job bundle in ``jobdir`` (public material only; it never reads a
    key directory). With refresh "client" it listens on the job's channel (refresh_channel.py) for
    the data owner's ``attach``. ``resume``: continue from JOB/state.ckpt after a kill. ``during(proc)``:
    runs here while the process runs (``fit`` answers the channel there). Returns the server's stats;
    ServerError with the server's own message if it fails. ``workers``: the server's worker processes
    (None: every core); ``executor`` "ray", ``ray_address``: on a Ray cluster's actors instead."""
    from .refresh_channel import channel_location
    from .runner import run_server

    jobdir = pathlib.Path(jobdir)
    manifest = files.read_manifest(jobdir)
    job = json.loads(files.read_bytes(jobdir / files.JOB, "job description"))
    channel = channel_location(jobdir) if job.get("channel", job.get("refresh") == "client") else None
    del manifest
    return run_server(jobdir, progress=progress, mem=mem, on_progress=on_progress, env=env,
                      trainer_modules=tuple(trainer_modules), channel=channel, channel_timeout=channel_timeout,
                      resume=resume, during=during, workers=workers, executor=executor, ray_address=ray_address)


# ---------------------------------------------------------------------------- attach (refresh)
def submit(jobdir, server: str, progress: bool = True, *, api_key: str | None = None, server_ca=None):
    """Upload the job bundle in ``jobdir`` to the training service at ``server``; returns the
    service's job (transport.RemoteJob: url, id, token; it trains there on its own; see ``attach``
    and ``decrypt``), also written to JOB/remote.json (mode 0600). ``api_key``, ``server_ca``: see
    transport.HttpTransport.
    Raises HetrainUserError when ``server`` is not the URL of a service.
    """
    from .transport import HttpTransport, make_transport, save_remote

    transport = make_transport(server, api_key=api_key, ca=server_ca)
    if not isinstance(transport, HttpTransport):
        raise HetrainUserError(f"--server must be the URL of a `hetrain serve` service, got {server!r}")
    files.read_job_files(jobdir)  # a complete, intact bundle (checksums) before anything is sent
    remote = transport.submit(jobdir, progress)
    save_remote(jobdir, remote)
    return remote


def attach(keys: KeyDir, jobdir, *, alive=lambda: True, log=None, engine=None, job: ClientJob | None = None,
           connect_timeout: float | None = None, server: str | None = None, remote_job: str | None = None,
           server_ca=None):
    """The data owner's refresh session for the running job of ``jobdir``: connect to its server's
    channel (or, with ``server``, to the service's job over HTTP: ``remote_job`` or JOB/remote.json
    names it, transport.load_remote), decrypt, check,
    re-encrypt and evaluate until the server says done. May be stopped and started again: the
    server waits for the next session and resends an unanswered request.
    Raises HetrainUserError for a job that asks the data owner nothing while it trains.
    """
    from .refresh_channel import DEFAULT_TIMEOUT_S, channel_location, serve_socket

    jobdir = pathlib.Path(jobdir)
    job, engine, record_dir = _client_half(keys, jobdir, engine, job)
    handler = job.handler(engine, record_dir, log)
    if handler is None:
        raise HetrainUserError(f"job {job.job_id} (refresh {job.refresh}) asks the data owner nothing while it "
                               "trains: there is nothing to attach to")
    if server is not None:
        transport, remote_job = _remote(server, remote_job, jobdir, server_ca)
        return transport.attach(remote_job, engine, handler, job.job_id)
    return serve_socket(channel_location(jobdir), engine, handler, job.job_id, alive=alive,
                        connect_timeout=DEFAULT_TIMEOUT_S if connect_timeout is None else connect_timeout)


def _remote(server: str, remote_job: str | None, jobdir, server_ca=None):
    """(an HttpTransport holding the job's token, the service's id of the job)."""
    from .transport import HttpTransport, load_remote, make_transport

    if isinstance(server, str) and not server.startswith(("http://", "https://")):
        raise HetrainUserError(f"--server must be the URL of a `hetrain serve` service, got {server!r}")
    remote = load_remote(jobdir, server.url if isinstance(server, HttpTransport) else server, remote_job)
    transport = make_transport(server, token=remote.token, ca=server_ca)
    if not isinstance(transport, HttpTransport):
        raise HetrainUserError(f"--server must be the URL of a `hetrain serve` service, got {server!r}")
    transport.token = transport.token or remote.token
    return transport, remote.id


def _client_half(keys: KeyDir, jobdir: pathlib.Path, engine=None, job: ClientJob | None = None):
    """(the client's job half, an engine with the secret key, its record directory) for ``jobdir``."""
    manifest = files.read_manifest(jobdir)
    job_id = manifest.get("job_id")
    if job_id is None:
        raise HetrainUserError(f"{jobdir} was written by an older hetrain (no job id): it cannot be decrypted "
                               "with a key directory")
    if manifest.get("key_id") != keys.key_id:
        raise HetrainUserError(f"{jobdir} was encrypted under key {manifest.get('key_id')}; {keys.path} holds key "
                               f"{keys.key_id}: use the key directory that encrypted it")
    record_dir = keys.job_dir(job_id)
    if job is None:
        job = ClientJob.load(record_dir)
        job.after_load()
    if engine is None:
        # the secret key decrypts; this job's Galois (OpenFHE: bootstrapping) keys are not needed here
        engine = keys.job_engine((), **({"bootstrap_keys": False} if keys.backend == "openfhe" else {}))
    return job, engine, record_dir


# ---------------------------------------------------------------------------- decrypt
def decrypt(keys: KeyDir, jobdir, *, engine=None, job: ClientJob | None = None, failure: str | None = None,
            server_stats: dict | None = None, server: str | None = None, remote_job: str | None = None,
            force_unverified: bool = False,
            progress: bool = False, server_ca=None, settings: dict | None = None) -> FitResult:
    """Decrypt the server's result in ``jobdir``, compare it with the plaintext twin (TwinMismatch: no
    model) and release it (rounded). Mini-batch mlr releases its best validated epoch; when the
    server did not finish (``failure``, or no outputs.bin) but epochs were validated, the best of
    them is released with ``stats["partial"] = True``. ``server_stats``: the server's statistics
    as the caller has them (with the client's view of the channel); default JOB/server_stats.json.
    ``server`` (and ``remote_job``, else JOB/remote.json): first wait for the service's job and
    download its result. ``settings``: this step's options (``{"decrypt": {...}}``), recorded with the
    job's own (``encrypt``'s) in the model file's ``info["configuration"]``."""
    jobdir = pathlib.Path(jobdir)
    job, engine, record_dir = _client_half(keys, jobdir, engine, job)
    if server is not None:
        transport, remote_job = _remote(server, remote_job, jobdir, server_ca)
        server_stats = transport.fetch(remote_job, jobdir, progress)
    outputs = None
    if (jobdir / files.OUTPUTS).is_file():
        outputs = files.read_ciphertext_map(jobdir / files.OUTPUTS, engine, "server outputs")
    if server_stats is None and (jobdir / files.SERVER_STATS).is_file():
        server_stats = json.loads(files.read_bytes(jobdir / files.SERVER_STATS, "server statistics"))
    if outputs is None and failure is None and (jobdir / files.SERVER_ERROR).is_file():
        err = json.loads(files.read_bytes(jobdir / files.SERVER_ERROR, "server error"))
        failure = f"the server failed: {err.get('message')}"
    from .report import record_run

    result = job.finish(engine, outputs, server_stats, record_dir, force_unverified=force_unverified,
                        **({"failure": failure} if failure else {}))
    configuration = {**job.settings, **(settings or {})}
    if configuration:
        result.model.info["configuration"] = configuration
    record_run(result)  # the run's figures in the model file (info["run"]), for `hetrain report`
    return result


# ---------------------------------------------------------------------------- fit
def fit(X, y, model: str = "mlr", config: dict | None = None, *, refresh: str = "auto", backend: str = "seal",
        preset="auto", keys=None, workdir=None, server=None, progress=True, log=None, on_step=None,
        trainer_modules=(), api_key: str | None = None, server_ca=None, before_keys=None,
        force_unverified: bool = False, channel_timeout: float | None = None, workers: int | None = None,
        settings: dict | None = None, **options) -> FitResult:
    """The one-command path: keygen → encrypt → train → (attach) → decrypt, client here, server in a
    separate process (or the service at ``server``, an http(s) URL).

    ``X``: array-like, shape (n_samples, n_features), numbers (converted to float64; finite).
    ``y``: array-like, shape (n_samples,): class labels, whole numbers (int64; floats such as 5.0
    accepted) or non-empty text (hetrain.data.check_labels); at least two classes. ``model``: a
    registered trainer ("mlr", "mlp", "mlp-dvr", "mlp-diagonal", ...; hetrain.models.base.resolve_model),
    ``config`` its options (None: the trainer's planned defaults). ``refresh``: "auto", "none",
    "client" or "bootstrap" (client_jobs.resolve_refresh). ``backend``: "seal", "sim" (INSECURE
    simulation), "openfhe", "desilo"; ``preset``: a CKKSParams, a preset name or "auto".
    ``keys``: a key directory to use (made when absent; its parameters must fit the job) and keep —
    default a private temporary one, removed at the end. ``workdir``: where the job bundle goes
    (kept); default a temporary directory. ``options``: scale, seed, release_decimals, noise_std,
    force_insecure, and for mini-batch mlr validation_fraction, max_epochs, time_limit, plan.
    ``on_step(done, total)`` follows the server's iterations. ``progress``: True/False or a
    progress.RunProgress, the one display of the run's phases (keygen, encrypt, train with epochs and
    validation, decrypt). ``before_keys(job)``: called once the job is planned, before any key is
    made (the CLI prints estimate.estimate_job there and asks when it is big). ``api_key``, ``server_ca``: for a
    service (transport.HttpTransport; the job's token stays in memory). ``channel_timeout``: how long
    the local server process waits for this process's answers (``train``'s; a service decides its
    own: ServerError with ``server``). ``workers``: the local server process's worker processes (``train``'s;
    None: every core; ServerError with ``server``, whose operator decides). ``settings``: the options the user ran with, recorded in the
    model file (see ``encrypt``). Returns a FitResult whose
    ``stats["partial"]`` says when a mini-batch run released its best epoch before it was done.
    ``force_unverified``: release (marked ``verified: false``) even a model that disagrees with its
    twin, and do not stop the run at a refreshed state that does (TwinMismatch otherwise).

    Returns ``FitResult`` (client_jobs.py): ``model`` (the released TrainedModel), ``twin`` (the
    plaintext twin's final state), ``twin_max_abs_diff`` (max |decrypted − twin|, NaN for a partial
    run), ``plan`` and ``stats``, a dict. Keys of ``stats`` on every path (client_jobs._base_stats,
    then fit): backend, params (preset name), params_record, model, job_id, key_id; keygen_s,
    encrypt_s, write_job_s, rehearsal_s, server_train_s, server_load_s, server_wall_s, decrypt_s,
    twin_s (seconds); server_peak_rss_bytes, client_peak_rss_bytes; upload_key_bytes,
    upload_key_parts, upload_data_bytes, download_bytes (bytes); server_operations (counts of
    each CKKS operation on the server), server_engine_has_secret_key (always False), run (the
    trainer's own statistics), refresh (mode, round trips, seconds), partial, stop_reason, verified,
    twin_bound, twin_max_abs_diff, released_max_abs_diff, estimate (estimate.estimate_job's figures
    before keygen). Full-batch trainers (TrainerJob.finish) add rotation_steps, levels_needed,
    levels_available, levels_per_iteration, iterations, defaults (what the planner chose). Mini-batch
    mlr (MiniBatchJob.finish) adds steps, released_step, twin_best_max_abs_diff, twin_weights,
    twin_best_weights, plan (its lines of text), history (one dict per epoch and refresh),
    round_trips, refreshes, evaluations, bootstraps, bytes_to_client, bytes_to_server,
    client_refresh_s and train_s.

    Raises: DataError (X or y malformed: shape, NaN/inf, fractional or empty labels, one class;
    IntervalError when a sigmoid input leaves its approximation's interval), DepthPlanError (the
    job does not fit the parameters' levels), InsecureParameters (a ring under 128-bit security
    without ``force_insecure``), ServerError (the server process or service failed, or refused the
    job), TwinMismatch (the decrypted result disagrees with the twin), and HetrainUserError for any
    other bad option, key directory or file (all of them are HetrainUserError subclasses)."""
    say = log or (lambda msg: None)
    from .progress import CountingHandler, as_display
    from .transport import make_transport

    display = as_display(progress)
    transport = make_transport(server, api_key=api_key, ca=server_ca)
    if channel_timeout is not None or workers is not None:
        transport = _local_server_options(transport, channel_timeout, workers)
    transport.preflight()  # a wrong --server URL fails now, not after keygen and encryption
    keydir = KeyDir.open(keys) if keys is not None and (pathlib.Path(keys) / "key.json").exists() else None
    # every refusal of the plaintext checks comes before any key is made, with checked advice
    if keydir is not None:
        keydir.check_forced(options.get("force_insecure", False))
        asked = getattr(preset, "name", preset)
        if asked != "auto" and asked != keydir.params.name or backend != keydir.backend:
            raise HetrainUserError(f"the keys in {keydir.path} are {keydir.backend} {keydir.params.name} keys; this run "
                                   f"asks for {backend} {asked}: leave --preset at auto and --backend at "
                                   f"{keydir.backend}, or use another --keys directory")
        job = _prepare_for_keys(keydir, X, y, model, config, refresh, say, options)
    else:
        job = prepare_job(X, y, model, config, refresh=refresh, backend=backend, preset=preset, log=say, **options)
    if is_insecure(backend):
        say(f"WARNING: backend {backend!r} is an INSECURE simulation: nothing is encrypted (tests/planning only)")
    from .estimate import estimate_job
    from .report import record_run

    est = estimate_job(job)
    if before_keys is not None:
        before_keys(job)
    with contextlib.ExitStack() as stack:
        if keydir is None:
            kdir = keys if keys is not None else stack.enter_context(_private_tempdir("hetrain-keys-"))
            keydir = keygen(kdir, backend=backend, preset=job.params, force_insecure=options.get("force_insecure", False),
                            seed=options.get("seed"))
        jobdir = pathlib.Path(workdir) if workdir is not None else stack.enter_context(_private_tempdir("hetrain-job-"))
        mem = stack.enter_context(PeakRSS())
        job, engine = encrypt(keydir, None, None, jobdir, job=job, progress=display, log=say, settings=settings)
        handler = job.handler(engine, keydir.job_dir(job.job_id), say, verify=not force_unverified,
                              on_epoch=None if display.quiet else display.epoch_result)
        if handler is not None:
            handler = CountingHandler(handler, display)

        def on_progress(done, total, message=""):
            display.step(done, total, message)
            if on_step is not None:
                on_step(done, total)

        failure = None
        t0 = time.perf_counter()
        try:
            with display.phase("train", unit="steps"):
                sstats = transport.run(jobdir, False, mem, refresh_handler=handler,
                                       client_engine=engine, job_id=job.job_id,
                                       on_submitted=lambda rid: say(f"service job id: {rid}"),
                                       on_progress=on_progress,
                                       trainer_modules=trainer_modules or _extra_modules(job))
        except (ServerError, HetrainUserError) as exc:
            # mini-batch mlr keeps its best validated epoch; everything else has nothing to release, and
            # a server caught computing something else (TwinMismatch) gets nothing released at all
            if getattr(job, "kind", None) != "minibatch" or isinstance(exc, (DepthPlanError, TwinMismatch)):
                raise
            failure = f"training failed: {exc}"
            sstats = None
        server_wall_s = time.perf_counter() - t0
        with display.phase("decrypt"):
            result = decrypt(keydir, jobdir, engine=engine, job=job, failure=failure, server_stats=sstats,
                             force_unverified=force_unverified)
        result.stats["server_wall_s"] = server_wall_s
        result.stats["client_peak_rss_bytes"] = mem.peaks.get("client")
        if sstats is not None:
            result.stats["server_peak_rss_bytes"] = max(mem.peaks.get("server", 0),
                                                        sstats.get("server_peak_rss_bytes") or 0)
        result.stats["estimate"] = est.as_dict()
        record_run(result)
        return result


def _local_server_options(transport, channel_timeout: float | None, workers: int | None):
    """A LocalTransport whose server process waits ``channel_timeout`` seconds for this process and runs
    ``workers`` worker processes; ServerError for a service (its operator decides both), HetrainUserError
    for a value out of range."""
    from .transport import LocalTransport

    if not isinstance(transport, LocalTransport):
        what = "channel_timeout" if channel_timeout is not None else "workers"
        raise ServerError(f"{what} applies to a server process on this machine; a service's operator sets its own")
    if channel_timeout is not None and not channel_timeout > 0:
        raise HetrainUserError(f"--channel-timeout must be a positive number of seconds, got {channel_timeout:g}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise HetrainUserError(f"--workers must be a whole number of at least 1, got {workers!r} (e.g. --workers 1)")
    return LocalTransport(channel_timeout=channel_timeout, workers=workers)


def _extra_modules(job: ClientJob) -> tuple[str, ...]:
    """A trainer defined outside hetrain.models (tests, plugins): the server process must import it."""
    module = type(job.trainer).__module__
    return () if module.startswith("hetrain.models.") else (module,)


@contextlib.contextmanager
def _private_tempdir(prefix: str):
    d = tempfile.mkdtemp(prefix=prefix)  # mode 0700
    try:
        yield pathlib.Path(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)
