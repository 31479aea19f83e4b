"""Human-readable summary of a fit (shared by `hetrain fit`, `decrypt`, `demo` and benchmarks)."""
from __future__ import annotations

from hetrain._format import plain

MB = 1024 * 1024


def _s(v) -> str:
    return "?" if v is None else f"{v:.2f} s"


def _mb(v) -> str:
    return "?" if v is None else f"{v / MB:.0f} MB"


def format_summary(stats: dict) -> list[str]:
    """Lines describing times, memory, operations and bytes; the caller prints the final key=value lines.
    Figures a path does not have (e.g. `hetrain decrypt` never saw the client's peak memory) show as ?."""
    ops = stats.get("server_operations") or {}
    heavy = ("rotate", "multiply", "relinearize", "multiply_plain", "multiply_scalar", "square", "rescale")
    op_text = " ".join(f"{k}={ops[k]['count']}" for k in heavy if k in ops) or "none"
    parts = stats.get("upload_key_parts") or {}
    part_text = (" (" + ", ".join(f"{k.replace('_', ' ')} {v / MB:.1f} MB" for k, v in parts.items()) + ")") if parts else ""
    lines = [f"backend={stats['backend']} params={stats['params']} model={stats['model']}"]
    if stats.get("levels_needed") is not None:
        lines.append(f"depth: {stats['levels_needed']} of {stats['levels_available']} levels; per iteration "
                     f"{plain(stats['levels_per_iteration'])}; rotation keys: {len(stats['rotation_steps'])} steps")
    wall = f" (server process {stats['server_wall_s']:.2f} s in all)" if stats.get("server_wall_s") is not None else ""
    lines += [
        f"times: keygen {_s(stats.get('keygen_s'))}, encrypt {_s(stats.get('encrypt_s'))}, server train "
        f"{_s(stats.get('server_train_s'))}{wall}, decrypt {_s(stats.get('decrypt_s'))}",
        f"peak memory (RSS): client {_mb(stats.get('client_peak_rss_bytes'))}, server "
        f"{_mb(stats.get('server_peak_rss_bytes'))}",
        f"server operations: {op_text}",
        f"upload: keys {_mb(stats.get('upload_key_bytes'))}{part_text}, data {_mb(stats.get('upload_data_bytes'))}; "
        f"download {_mb(stats.get('download_bytes'))}",
    ]
    if stats["backend"] == "sim":
        lines.insert(0, "WARNING: INSECURE simulation backend: nothing was encrypted")
    return lines
