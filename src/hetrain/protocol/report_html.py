"""`hetrain report`: a model file's training run as a self-contained HTML page (or a folder of PNGs).

    sections = build_sections(model)        # protocol/model.TrainedModel, loaded and checked
    write_html(sections, model, "/tmp/report.html")
    write_png_dir(sections, model, "/tmp/report-pngs/")

What it reads: ``info["history"]`` (mini-batch mlr: one entry per decryption by the client,
refresh.MLRValidation: ``step``, ``kind`` epoch|refresh|retract, ``epoch``, ``val_accuracy``,
``val_loss``, ``stop``) and ``info["run"]`` (protocol/report.run_record: times per phase, operations,
bytes, memory, levels, twin check, the estimate made before keygen). A model file written before
these were recorded (or by a path that does not measure some of them) gets a "not recorded" note in
the sections it lacks, never an error. The plots are drawn by matplotlib (Agg backend, imported
here only: ``pip install matplotlib`` or the ``report`` extra) and embedded as base64 PNGs.
Every figure in the parameter table comes from the model file unchanged (6 significant digits).
"""
from __future__ import annotations

import base64
import dataclasses
import html
import io
import pathlib

from hetrain.ckks.registry import is_insecure
from hetrain.errors import HetrainUserError

from .files import atomic_write


@dataclasses.dataclass
class Section:
    """One part of the report: a title, a figure (PNG bytes) or None, a caption, table rows (key, label, value)."""
    key: str
    title: str
    png: bytes | None
    caption: str
    rows: list[tuple[str, str, object]] = dataclasses.field(default_factory=list)


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise HetrainUserError("hetrain report draws its plots with matplotlib, which is not installed: "
                               "pip install matplotlib (or pip install 'hetrain[report]')") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    fig.clf()
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def value_text(v) -> str:
    """How the table writes a value: numbers to 6 significant digits, None as "not recorded"."""
    if v is None:
        return "not recorded"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(value_text(x) for x in v)
    if isinstance(v, dict):
        return ", ".join(f"{k} {value_text(x)}" for k, x in v.items())
    return str(v)


# ------------------------------------------------------------------ sections
def _curve(plt, history: list[dict]) -> Section:
    pts = [h for h in history if h.get("val_accuracy") is not None]
    if not pts:
        return Section("curve", "Training curve", None, "not recorded in this model file (the per-step history "
                       "is kept for mlr with refresh, which validates on the client's held-out rows)")
    fig, ax = plt.subplots(figsize=(7, 3.5))
    steps = [h["step"] for h in pts]
    ax.plot(steps, [h["val_accuracy"] for h in pts], "-", color="tab:blue", label="validation accuracy")
    ep = [h for h in pts if h.get("kind") == "epoch"]
    ax.plot([h["step"] for h in ep], [h["val_accuracy"] for h in ep], "o", color="tab:blue", label="epoch ends")
    ax.set_xlabel("step (server iteration)")
    ax.set_ylabel("accuracy")
    ax2 = ax.twinx()
    ax2.plot(steps, [h.get("val_loss") for h in pts], "--", color="tab:red", label="validation loss")
    ax2.set_ylabel("loss (cross-entropy)")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="center right", fontsize=8)
    ax.set_title("validation accuracy and loss per step")
    best = max(ep or pts, key=lambda h: h["val_accuracy"])
    rows = [("history.entries", "entries recorded", len(history)), ("history.epochs", "epochs evaluated", len(ep)),
            ("history.best_accuracy", "best validation accuracy", best["val_accuracy"]),
            ("history.best_step", "at step", best["step"])]
    return Section("curve", "Training curve", _png(fig),
                   f"Validation accuracy and loss measured by the client each time it decrypted the state "
                   f"({len(pts)} points; dots: epoch ends). Best {best['val_accuracy']:.4f} at step {best['step']}.",
                   rows)


def _bars(plt, title: str, labels: list[str], values: list[float], unit: str, log: bool = False):
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(labels) + 1.2))
    ax.barh(labels, values, color="tab:blue")
    ax.invert_yaxis()
    ax.set_xlabel(unit)
    if log:
        ax.set_xscale("log")
    ax.set_title(title)
    return _png(fig)


def _times(plt, run: dict) -> Section:
    t = {k: v for k, v in (run.get("times_s") or {}).items() if v is not None}
    if not t:
        return Section("times", "Time per phase", None, "not recorded in this model file")
    png = _bars(plt, "seconds per phase", [k.replace("_", " ") for k in t], list(t.values()), "seconds")
    rows = [(f"times_s.{k}", k.replace("_", " ") + " (s)", v) for k, v in t.items()]
    return Section("times", "Time per phase", png,
                   "Wall time of each phase. 'server process' is the whole server process (start, loading the keys "
                   "and ciphertexts, training, writing); 'server train' is its training alone.", rows)


def _operations(plt, run: dict) -> Section:
    ops = run.get("operations") or {}
    if not ops:
        return Section("operations", "Operations by kind", None, "not recorded in this model file")
    kinds = sorted(ops, key=lambda k: -ops[k].get("count", 0))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 0.35 * len(kinds) + 1.3), sharey=True)
    a1.barh(kinds, [ops[k].get("count", 0) for k in kinds], color="tab:blue")
    a1.invert_yaxis()
    a1.set_xlabel("count")
    a2.barh(kinds, [ops[k].get("seconds", 0.0) for k in kinds], color="tab:orange")
    a2.set_xlabel("seconds")
    fig.suptitle("homomorphic operations on the server")
    rows = [(f"operations.{k}.count", f"{k} (count)", ops[k].get("count")) for k in kinds]
    rows += [(f"operations.{k}.seconds", f"{k} (s)", ops[k].get("seconds")) for k in kinds if "seconds" in ops[k]]
    return Section("operations", "Operations by kind", _png(fig),
                   "How many of each CKKS operation the server ran and their total time. Rotations and "
                   "relinearisations switch keys and usually dominate.", rows)


def _levels(plt, run: dict) -> Section:
    lv = run.get("levels") or {}
    per_it, per_step, avail = lv.get("per_iteration"), lv.get("per_step"), lv.get("available")
    steps = run.get("steps") or {}
    if per_it:
        png = _bars(plt, "levels per iteration, by part" + (f" (one chain: {avail})" if avail else ""),
                    list(per_it), list(per_it.values()), "multiplicative levels")
        caption = (f"Multiplicative levels each part of one iteration consumes ({sum(per_it.values())} per "
                   f"iteration); one modulus chain offers {avail}. A refresh (or bootstrap) restores them.")
    elif per_step and steps.get("count"):
        n, avail_ = int(steps["count"]), int(avail or per_step)
        level, xs, ys = avail_, [0], [avail_]
        for k in range(1, n + 1):
            if level < per_step:
                level = avail_  # the client refreshed: a fresh encryption at the top level
                xs.append(k - 1)
                ys.append(level)
            level -= per_step
            xs.append(k)
            ys.append(level)
        fig, ax = plt.subplots(figsize=(7, 3))
        ax.plot(xs, ys, "-o", markersize=3)
        ax.set_ylim(-0.5, avail_ + 0.5)
        ax.set_xlabel("step")
        ax.set_ylabel("level left")
        ax.set_title(f"{per_step} levels per step; one chain holds {avail_}")
        png = _png(fig)
        caption = (f"Levels left after each step: every step uses {per_step}; when the next would not fit the "
                   f"client refreshes the state, which resets the level to {avail_}.")
    else:
        return Section("levels", "Levels used", None, "not recorded in this model file")
    rows = [("levels.needed", "levels used in all", lv.get("needed")), ("levels.available", "levels per chain", avail),
            ("levels.per_step", "levels per step", per_step), ("levels.rotation_keys", "rotation keys",
                                                               lv.get("rotation_keys"))]
    return Section("levels", "Levels used", png, caption, [r for r in rows if r[2] is not None])


def _bytes(plt, run: dict) -> Section:
    b = {k: v for k, v in (run.get("bytes") or {}).items() if v}
    for part, v in (run.get("key_parts") or {}).items():
        b[f"upload_keys.{part}"] = v
    if not b:
        return Section("bytes", "Bytes moved", None, "not recorded in this model file")
    png = _bars(plt, "bytes moved (MB)", [k.replace("_", " ") for k in b], [v / 2**20 for v in b.values()], "MB")
    rows = [(f"bytes.{k}", k.replace("_", " ") + " (bytes)", v) for k, v in b.items()]
    est = run.get("estimate") or {}
    if est.get("upload_bytes") is not None:
        rows.append(("estimate.upload_bytes", "upload estimated before keygen (bytes)", est["upload_bytes"]))
    return Section("bytes", "Bytes moved", png,
                   "Upload: the public keys (public, relinearisation and Galois keys) and the ciphertexts; download: "
                   "the encrypted result; refresh: the state sent to the client and back.", rows)


def _twin(plt, run: dict, info: dict) -> Section:
    tw = run.get("twin") or {}
    diff = tw.get("max_abs_diff", info.get("twin_max_abs_diff"))
    bound = tw.get("bound")
    rows = [("twin.max_abs_diff", "max |decrypted − twin|", diff), ("twin.bound", "allowed", bound),
            ("twin.released_max_abs_diff", "released (rounded) weights vs twin", tw.get("released_max_abs_diff")),
            ("twin.verified", "verified", tw.get("verified", info.get("verified")))]
    if diff is None:
        return Section("twin", "Twin check", None, "not recorded in this model file", rows)
    fig, ax = plt.subplots(figsize=(6, 1.8))
    vals = [max(diff, 1e-18)] + ([bound] if bound else [])
    ax.barh(["max |decrypted − twin|"] + (["allowed"] if bound else []), vals,
            color=["tab:green" if tw.get("verified", True) is not False else "tab:red", "tab:gray"][:len(vals)])
    ax.set_xscale("log")
    ax.set_title("decrypted model vs the plaintext twin")
    from .report import twin_words

    words = twin_words({"twin_max_abs_diff": diff, "twin_bound": bound, "verified": tw.get("verified")})
    return Section("twin", "Twin check", _png(fig), "The client redid the training in plaintext with the same "
                   f"arithmetic and compared. {words[len('twin: '):]}.", rows)


def _params_section(model, run: dict) -> Section:
    info = model.info
    p = info.get("params") or {}
    sec = run.get("security") or {}
    rows = [("backend", "backend", info.get("backend")), ("params.name", "preset", p.get("name")),
            ("params.poly_modulus_degree", "ring degree N", p.get("poly_modulus_degree")),
            ("params.coeff_bits", "modulus chain (bits)", p.get("coeff_bits")),
            ("params.scale_bits", "scale (bits)", p.get("scale_bits")),
            ("security.total_bits", "modulus bits in all", sec.get("total_bits")),
            ("security.max_bits_128", "most bits for 128-bit security at this N", sec.get("max_bits_128")),
            ("security.secure_128", "128-bit secure (HE standard)", sec.get("secure_128")),
            ("model", "model", model.model), ("refresh", "refresh", info.get("refresh")),
            ("n_train", "training rows", info.get("n_train")), ("n_validation", "validation rows",
                                                                info.get("n_validation")),
            ("stop_reason", "stopped because", info.get("stop_reason", run.get("stop_reason"))),
            ("partial", "partial (time limit or failure)", info.get("partial", run.get("partial")))]
    for k, v in sorted((info.get("training") or {}).items()):
        rows.append((f"training.{k}", f"training: {k.replace('_', ' ')}", v))
    if is_insecure(info.get("backend")):
        caption = f"WARNING: the {info['backend']} backend encrypts nothing (INSECURE); these are the parameters it simulated."
    else:
        caption = "The CKKS parameters; 128-bit security per the Homomorphic Encryption Standard's table."
    return Section("params", "Parameters and security", None, caption, rows)


def build_sections(model) -> list[Section]:
    """Every section of the report of ``model`` (a loaded TrainedModel)."""
    plt = _pyplot()
    info = model.info or {}
    run = info.get("run") or {}
    return [_params_section(model, run), _curve(plt, info.get("history") or []), _times(plt, run),
            _operations(plt, run), _levels(plt, run), _bytes(plt, run), _twin(plt, run, info)]


# ------------------------------------------------------------------ output
_STYLE = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}"
          "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}"
          "figcaption{font-size:90%;color:#444}.missing{color:#a60}")


def render_html(sections: list[Section], model, source: str, image_src=None) -> str:
    """The page. ``image_src(section)``: the <img> src (default: the PNG embedded as base64)."""
    src = image_src or (lambda s: "data:image/png;base64," + base64.b64encode(s.png).decode())
    out = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>",
           f"<title>hetrain report: {html.escape(source)}</title><style>{_STYLE}</style></head><body>",
           f"<h1>Training report</h1><p>Model file <code>{html.escape(source)}</code>: {html.escape(model.model)} "
           f"on {html.escape(model.params_name)}, hetrain {html.escape(str(model.info.get('hetrain_version', '?')))}"
           "</p>"]
    for s in sections:
        out.append(f"<h2 id='{s.key}'>{html.escape(s.title)}</h2>")
        if s.png is not None:
            out.append(f"<figure><img alt='{html.escape(s.title)}' src='{src(s)}'>"
                       f"<figcaption>{html.escape(s.caption)}</figcaption></figure>")
        else:
            cls = " class='missing'" if "not recorded" in s.caption else ""
            out.append(f"<p{cls}>{html.escape(s.caption)}</p>")
        if s.rows:
            out.append("<table>")
            for key, label, value in s.rows:
                out.append(f"<tr><th>{html.escape(label)}</th><td data-key='{html.escape(key)}'>"
                           f"{html.escape(value_text(value))}</td></tr>")
            out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out)


def write_html(sections: list[Section], model, out, source: str) -> pathlib.Path:
    """Write ``render_html(sections, model, source)`` to the file ``out`` (atomically) and return its path."""
    out = pathlib.Path(out)
    atomic_write(out, render_html(sections, model, source).encode())
    return out


def write_png_dir(sections: list[Section], model, out, source: str) -> pathlib.Path:
    """One PNG per plotted section (``<key>.png``) and an index.html that shows them."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for s in sections:
        if s.png is not None:
            atomic_write(out / f"{s.key}.png", s.png)
    atomic_write(out / "index.html", render_html(sections, model, source, image_src=lambda s: f"{s.key}.png").encode())
    return out
