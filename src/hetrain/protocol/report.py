"""Human-readable summary of a fit (shared by `hetrain fit`, `hetrain demo` and benchmarks)."""
from __future__ import annotations

from hetrain._format import plain

MB = 1024 * 1024


def format_summary(stats: dict) -> list[str]:
    """Lines describing times, memory, operations and bytes; the caller prints the final key=value lines."""
    ops = stats["server_operations"]
    heavy = ("rotate", "multiply", "relinearize", "multiply_plain", "multiply_scalar", "square", "rescale")
    op_text = " ".join(f"{k}={ops[k]['count']}" for k in heavy if k in ops) or "none"
    parts = stats.get("upload_key_parts") or {}
    part_text = (" (" + ", ".join(f"{k.replace('_', ' ')} {v / MB:.1f} MB" for k, v in parts.items()) + ")") if parts else ""
    lines = [
        f"backend={stats['backend']} params={stats['params']} model={stats['model']}",
        f"depth: {stats['levels_needed']} of {stats['levels_available']} levels; per iteration "
        f"{plain(stats['levels_per_iteration'])}; rotation keys: {len(stats['rotation_steps'])} steps",
        f"times: keygen {stats['keygen_s']:.2f} s, encrypt {stats['encrypt_s']:.2f} s, server train "
        f"{stats['server_train_s']:.2f} s (server process {stats['server_wall_s']:.2f} s in all), "
        f"decrypt {stats['decrypt_s']:.2f} s",
        f"peak memory (RSS): client {stats['client_peak_rss_bytes'] / MB:.0f} MB, server "
        f"{stats['server_peak_rss_bytes'] / MB:.0f} MB",
        f"server operations: {op_text}",
        f"upload: keys {stats['upload_key_bytes'] / MB:.1f} MB{part_text}, data {stats['upload_data_bytes'] / MB:.1f} MB; "
        f"download {stats['download_bytes'] / MB:.1f} MB",
    ]
    if stats["backend"] == "sim":
        lines.insert(0, "WARNING: INSECURE simulation backend: nothing was encrypted")
    return lines
