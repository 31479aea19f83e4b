"""`hetrain serve`: the HTTP training service (needs the extra: pip install 'hetrain[service]').

It holds public material only (public contexts, ciphertexts) and refuses uploads carrying a
secret key. It has no authentication: keep it on loopback or behind an authenticating TLS proxy.
"""
from __future__ import annotations

import argparse
import ipaddress
import pathlib

from hetrain.errors import HetrainUserError

INSTALL_HINT = "hetrain serve needs the service extra: pip install 'hetrain[service]' (FastAPI, uvicorn, httpx)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback; the service has no authentication)")
    p.add_argument("--port", type=int, default=8750, help="TCP port (default 8750)")
    p.add_argument("--workdir", required=True, help="directory for job bundles and results (created if missing)")
    p.add_argument("--workers", type=int, default=1, help="jobs trained at the same time, each in its own process (default 1)")
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
                   help="extra module to import so its trainer registers (operator's choice, never the job's)")


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
    for mod in args.trainer_module:
        importlib.import_module(mod)  # registers the trainer here too, so uploads naming it are accepted
    workdir = pathlib.Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if not _is_loopback(args.host):
        print(f"WARNING: listening on {args.host}: the service has no authentication; anyone who can reach "
              "this port can submit jobs and, knowing a job id, read its encrypted result", flush=True)
    gb = 1024 ** 3
    app = create_app(workdir, max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), workers=args.workers,
                     trainer_modules=tuple(args.trainer_module),
                     job_memory_bytes=int(args.job_memory_gb * gb) if args.job_memory_gb else None,
                     job_time_limit=args.job_time_limit, job_ttl_s=args.job_ttl * 3600.0,
                     disk_quota_bytes=int(args.disk_quota_gb * gb) if args.disk_quota_gb else None,
                     upload_timeout_s=args.upload_timeout)
    print(f"hetrain service on http://{args.host}:{args.port} (workdir {workdir}; public material only)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
