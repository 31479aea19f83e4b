"""`hetrain serve`: the HTTP training service (needs the extra: pip install 'hetrain[service]').

It holds public material only (public contexts, ciphertexts) and refuses uploads carrying a
secret key. Each job is read, followed and deleted with the bearer token its submission returned;
with --api-keys (or HETRAIN_API_KEYS) only holders of a key may submit. Beyond loopback it
speaks TLS (--tls-cert, --tls-key), or refuses to start unless --insecure-bind says that something
in front of it (a TLS proxy) does. With --model MODEL.json it also scores other parties' encrypted
queries with that plaintext model (encrypted inference, case b: service/inference.py); any job it
trained scores its own data owner's encrypted queries (case a).
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import pathlib
import stat

from hetrain.errors import HetrainUserError

INSTALL_HINT = "hetrain serve needs the service extra: pip install 'hetrain[service]' (FastAPI, uvicorn, httpx)"
API_KEYS_ENV = "HETRAIN_API_KEYS"
MIN_API_KEY_CHARS = 16


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback; any other address needs "
                                                      "--tls-cert/--tls-key, or --insecure-bind)")
    p.add_argument("--port", type=int, default=8750, help="TCP port (default 8750)")
    p.add_argument("--workdir", required=True, help="directory for job bundles and results (created if missing; "
                                                    "made mode 0700)")
    p.add_argument("--workers", type=int, default=1, help="jobs trained at the same time, each in its own process (default 1)")
    p.add_argument("--ray-address", default=None, metavar="auto|HOST:PORT",
                   help="train each job's independent tasks on the actors of this Ray cluster (auto: the one "
                        "`ray start` set up on this machine; needs pip install 'hetrain[ray]'; each job gets the "
                        "cluster's CPUs shared among --workers jobs; default: processes of this machine)")
    p.add_argument("--max-upload-mb", type=float, default=16384, help="largest job bundle accepted, in MiB (default 16384)")
    p.add_argument("--job-memory-gb", type=float, default=16.0,
                   help="memory (data segment) each job's server process may use, in GB (default 16; 0: no limit)")
    p.add_argument("--job-time-limit", type=float, default=None, metavar="S",
                   help="wall-time limit of each job's server process, in seconds (default: none)")
    p.add_argument("--job-ttl", type=float, default=24.0, metavar="HOURS",
                   help="finished jobs and their files are removed this many hours after they finished (default 24)")
    p.add_argument("--disk-quota-gb", type=float, default=None,
                   help="disk space for all jobs and uploads together, in GB; uploads beyond it get 507 (default: none)")
    p.add_argument("--upload-timeout", type=float, default=300.0, metavar="S",
                   help="an upload with no data for this many seconds is dropped (default 300)")
    p.add_argument("--trainer-module", action="append", default=[],
                   help="extra module to import so its trainer registers (operator's choice, never the job's; "
                        "may be repeated; default: none)")
    p.add_argument("--api-keys", metavar="FILE",
                   help="only holders of one of these keys may submit jobs (one key per line; blank lines and "
                        f"lines starting with # are ignored); also from {API_KEYS_ENV} (comma-separated); "
                        "default: none, anyone who reaches the port may submit)")
    p.add_argument("--model", action="append", default=[], metavar="MODEL.json",
                   help="a model owner's plaintext model (repeatable): the service publishes its spec (GET /v1/models) "
                        "and scores other parties' encrypted queries with it (hetrain encrypt-queries --server)")
    p.add_argument("--noise-std", type=float, default=0.0, metavar="S",
                   help="with --model: add fresh encrypted Gaussian noise of this standard deviation to every score "
                        "(limits what the decrypted scores reveal of the model; keep it well below the gap between "
                        "class scores)")
    p.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this certificate (PEM; with --tls-key; "
                                                      "default: plain HTTP)")
    p.add_argument("--tls-key", metavar="FILE", help="the certificate's private key (PEM; default: none)")
    p.add_argument("--insecure-bind", action="store_true",
                   help="listen beyond loopback without TLS (only behind a TLS-terminating proxy: tokens and "
                        "API keys travel in every request)")


def run(args) -> int:
    try:
        import uvicorn

        from hetrain.service.app import create_app
    except ImportError as exc:
        raise HetrainUserError(f"{INSTALL_HINT} ({exc})") from None
    import importlib

    if args.workers < 1:
        raise HetrainUserError("--workers must be at least 1")
    if args.max_upload_mb <= 0:
        raise HetrainUserError("--max-upload-mb must be positive")
    for flag, value in (("--job-memory-gb", args.job_memory_gb), ("--job-time-limit", args.job_time_limit),
                        ("--job-ttl", args.job_ttl), ("--disk-quota-gb", args.disk_quota_gb),
                        ("--upload-timeout", args.upload_timeout)):
        if value is not None and not (value >= 0 if flag == "--job-memory-gb" else value > 0):
            raise HetrainUserError(f"{flag} must be positive, got {value:g}")
    if not args.noise_std >= 0:
        raise HetrainUserError(f"--noise-std must be >= 0, got {args.noise_std:g}")
    if args.noise_std and not args.model:
        raise HetrainUserError("--noise-std applies to the scores of --model MODEL.json: give the model too")
    job_workers = ray_job_workers(args.ray_address, args.workers) if args.ray_address is not None else None
    tls = check_tls(args.tls_cert, args.tls_key)
    if not tls and not _is_loopback(args.host) and not args.insecure_bind:
        raise HetrainUserError(f"refusing to listen on {args.host} without TLS: job tokens and API keys would cross "
                               "the network in clear. Give --tls-cert FILE --tls-key FILE, or --insecure-bind if a "
                               "TLS-terminating proxy stands in front of the service")
    api_keys = load_api_keys(args.api_keys, os.environ.pop(API_KEYS_ENV, None))  # not in the server processes' env
    for mod in args.trainer_module:
        importlib.import_module(mod)  # registers the trainer here too, so uploads naming it are accepted
    workdir = pathlib.Path(args.workdir)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(workdir, 0o700)  # job directories are named by hash, and nobody else may list them anyway
    except OSError as exc:
        raise HetrainUserError(f"cannot use {workdir} as the service's work directory: {exc}") from None
    if not tls and not _is_loopback(args.host):
        print(f"WARNING: listening on {args.host} without TLS (--insecure-bind): only safe behind a TLS proxy",
              flush=True)
    if not api_keys and not _is_loopback(args.host):
        print(f"WARNING: no API keys (--api-keys, {API_KEYS_ENV}): anyone who reaches {args.host}:{args.port} may "
              "submit jobs", flush=True)
    from hetrain.service.inference import ModelRegistry

    models = ModelRegistry(args.model)  # a model file that does not load: one line, before listening
    gb = 1024 ** 3
    app = create_app(workdir, max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), workers=args.workers,
                     trainer_modules=tuple(args.trainer_module), api_keys=api_keys,
                     job_memory_bytes=int(args.job_memory_gb * gb) if args.job_memory_gb else None,
                     job_time_limit=args.job_time_limit, job_ttl_s=args.job_ttl * 3600.0,
                     disk_quota_bytes=int(args.disk_quota_gb * gb) if args.disk_quota_gb else None,
                     upload_timeout_s=args.upload_timeout, models=models, noise_std=args.noise_std,
                     job_workers=job_workers, ray_address=args.ray_address)
    scheme = "https" if tls else "http"
    auth = f"{len(api_keys)} API key(s) may submit" if api_keys else "anyone who reaches it may submit"
    print(f"hetrain service on {scheme}://{args.host}:{args.port} (workdir {workdir}; public material only; {auth})",
          flush=True)
    for spec_id, spec in models.specs.items():
        print(f"scoring encrypted queries with model spec {spec_id} ({spec['model']}, {spec['n_features']} features, "
              f"{spec['n_classes']} classes, needs {spec['levels']} level(s)): GET /v1/models", flush=True)
    del api_keys
    ssl = {"ssl_certfile": args.tls_cert, "ssl_keyfile": args.tls_key} if tls else {}
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", **ssl)
    return 0


def ray_job_workers(address: str, jobs: int) -> int:
    """Each job's workers on the Ray cluster at ``address``: its server process and one actor per CPU
    of the cluster's share of one of ``jobs`` concurrent jobs (at least one actor). HetrainUserError
    for "local" (a Ray per job would compete for this machine) or a cluster that cannot be reached."""
    if address.strip() in ("", "local"):
        raise HetrainUserError(f"--ray-address {address!r}: the service runs its jobs on a running Ray cluster; "
                               "start one (`ray start --head`) and give --ray-address auto or HOST:PORT")
    from hetrain.ckks.ray_executor import probe

    cpus = probe(address)
    print(f"training on the Ray cluster at {address}: {cpus} CPUs, {max(1, cpus // jobs)} per job", flush=True)
    return max(1, cpus // jobs) + 1


def check_tls(cert: str | None, key: str | None) -> bool:
    """Whether TLS is asked for; HetrainUserError if only half of it is, or the files do not load."""
    if cert is None and key is None:
        return False
    if cert is None or key is None:
        raise HetrainUserError("--tls-cert and --tls-key go together (the certificate and its private key, PEM)")
    import ssl

    try:
        # an encrypted key fails here instead of prompting on the terminal (uvicorn would prompt)
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key, password=lambda: b"")
    except (OSError, ssl.SSLError) as exc:
        raise HetrainUserError(f"cannot load the TLS certificate {cert} with its key {key} (PEM; the key "
                               f"unencrypted): {exc}") from None
    return True


def load_api_keys(path: str | None, env: str | None) -> list[str]:
    """The API keys of --api-keys FILE and of the environment variable (comma-separated)."""
    keys: list[str] = []
    if path is not None:
        try:
            mode = os.stat(path).st_mode
            lines = pathlib.Path(path).read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise HetrainUserError(f"cannot read the API keys in {path}: {exc}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            print(f"WARNING: {path} is readable by other users (chmod 600 {path})", flush=True)
        keys += [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
        if not keys:
            raise HetrainUserError(f"{path} holds no API key (one per line)")
    if env:
        keys += [k.strip() for k in env.split(",") if k.strip()]
    short = [k for k in keys if len(k) < MIN_API_KEY_CHARS or any(c.isspace() for c in k)]
    if short:
        raise HetrainUserError(f"{len(short)} API key(s) shorter than {MIN_API_KEY_CHARS} characters or with spaces: "
                               "make keys with e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'")
    return keys


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
