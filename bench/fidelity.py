"""Fidelity of the library DEFAULTS: encrypted vs plaintext twin vs scikit-learn.

    python bench/fidelity.py                                   # SEAL, every dataset, mlr and mlp
    python bench/fidelity.py --backend sim                     # INSECURE simulation: a quick check
    python bench/fidelity.py --datasets iris,wine --models mlr --out /tmp/fidelity.json
    python bench/fidelity.py --skip-mnist-mlp                  # see --skip

No tuning option is given: ``mlr`` is ``hetrain.protocol.fit(X, y)`` (what ``hetrain fit`` runs: a
stratified 20% of the training rows held out for validation, the planner, refreshed mini-batch
epochs, early stopping, the best validation epoch released) and ``mlp`` is ``fit(X, y, "mlp")``
(the planner's hidden sizes, iterations and the rest, client refresh; for wide inputs such as the MNIST
pixels possibly a client-side projection onto whitened principal components, named in the note). The
client is the bench's child process, the server its own process, as in ``hetrain fit``.

Data: scikit-learn's bundled iris, wine, breast_cancer and digits (``hetrain.data.load_builtin``;
``train_test_split(X, y, test_size=0.2, stratify=y, random_state=0)``); ``regnet``: RegNet_X_400MF
features of MNIST (../shared/data/regnet_x_400mf_mnist_train_first256.csv, rows 0–127 train,
128–255 test); ``mnist``: 2,000 raw-pixel images of ../shared/data/mnist_test_10k.npz (flattened,
/255; the first 1,600 train, the last 400 test).

Per dataset and model, one row: test accuracy of the decrypted (released) model, of its plaintext
twin (the same steps in NumPy; mlr: the twin of the released epoch), of scikit-learn on the same
split and preprocessing (StandardScaler on the training rows; LogisticRegression(max_iter=5000) /
MLPClassifier(hidden_layer_sizes=<the hidden sizes the default chose>, max_iter=2000,
random_state=0)), the gap encrypted − scikit-learn, iterations (mlr: mini-batch steps; mlp: the
trainer's iterations), round trips on the refresh channel, wall time of the whole fit (planning,
keygen, encryption, training, decryption, twin), server training time, peak RSS of client and
server, and max |decrypted − twin| (the final state, as the library reports it). Each run is a
child process (clean memory figures; a crash or an error becomes a row). Rows are printed and
--out is rewritten as each run ends, so partial results survive.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import traceback

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = pathlib.Path(os.environ.get("HETRAIN_BENCH_DATA", ROOT.parent / "shared" / "data"))  # or --data-dir
DATASETS = ("iris", "wine", "breast_cancer", "digits", "regnet", "mnist")
MODELS = ("mlr", "mlp")


# ------------------------------------------------------------------------------ data
def load(name: str):
    """(Xtr, Xte, ytr, yte) of the fixed split."""
    if name in ("iris", "wine", "breast_cancer", "digits"):
        from sklearn.model_selection import train_test_split

        from hetrain.data import load_builtin

        X, y = load_builtin(name)
        return train_test_split(X, y, test_size=0.2, stratify=y, random_state=0)
    if name == "regnet":
        D = np.loadtxt(DATA / "regnet_x_400mf_mnist_train_first256.csv", delimiter=",")
        y, X = D[:, 0].astype(np.int64), D[:, 1:]
        return X[:128], X[128:256], y[:128], y[128:256]
    if name == "mnist":
        f = np.load(DATA / "mnist_test_10k.npz")
        X = f["images"][:2000].reshape(2000, -1).astype(np.float64) / 255.0
        y = f["labels"][:2000].astype(np.int64)
        return X[:1600], X[1600:], y[:1600], y[1600:]
    raise SystemExit(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")


def sklearn_reference(model: str, hidden, Xtr, Xte, ytr, yte) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    s = StandardScaler().fit(Xtr)
    if model == "mlr":
        clf = LogisticRegression(max_iter=5000)
    else:
        clf = MLPClassifier(hidden_layer_sizes=tuple(hidden), max_iter=2000, random_state=0)
    return float(clf.fit(s.transform(Xtr), ytr).score(s.transform(Xte), yte))


# ------------------------------------------------------------------------------ one run (in the child)
def run_mlr(backend, Xtr, Xte, ytr, yte) -> dict:
    from hetrain.protocol import fit

    t0 = time.perf_counter()
    r = fit(Xtr, ytr, backend=backend, progress=False)
    model, st = r.model, r.stats
    wall = time.perf_counter() - t0
    row = dict(params=st.get("params_record", {}).get("name", "?"), enc_acc=model.accuracy(Xte, yte),
               wall_s=wall, server_s=st.get("train_s", math.nan), client_peak_mib=st["client_peak_rss_bytes"] / 2**20,
               server_peak_mib=st.get("server_peak_rss_bytes", math.nan) / 2**20,
               twin_diff=st["twin_max_abs_diff"], twin_bound=st.get("twin_bound"), iterations=st.get("steps"),
               round_trips=st.get("round_trips"),
               refreshes=st.get("refreshes"), hidden=None)
    notes = [f"released step {st.get('released_step')}/{st.get('steps')} ({st.get('stop_reason')})"]
    if "twin_best_weights" in st:
        twin = dataclasses.replace(model, weights={"W": np.asarray(st["twin_best_weights"])})
        row["twin_acc"] = twin.accuracy(Xte, yte)
        row["twin_diff_released"] = st["twin_best_max_abs_diff"]
        notes.append(f"released-epoch diff {st['twin_best_max_abs_diff']:.1e}")
    else:
        row["twin_acc"] = math.nan
        notes.append("no twin: partial run")
    if st.get("partial"):
        notes.append("PARTIAL")
    row["note"] = "; ".join(notes)
    return row


def run_mlp(backend, Xtr, Xte, ytr, yte) -> dict:
    from hetrain.protocol import fit

    t0 = time.perf_counter()
    r = fit(Xtr, ytr, "mlp", backend=backend, progress=False)
    wall = time.perf_counter() - t0
    m, st = r.model, r.stats
    twin = dataclasses.replace(m, weights={k: np.reshape(np.asarray(r.twin[k], dtype=np.float64), np.shape(v))
                                           for k, v in m.weights.items()})
    rf = st.get("refresh") or {}
    hidden = m.config.get("hidden")
    if hidden is None:  # not in the recorded config: the trainer's own default (mlp-diagonal: [4])
        from hetrain.models.base import get_trainer

        hidden = [get_trainer(m.model)(**m.config).H]
    return dict(params=st["params"], enc_acc=m.accuracy(Xte, yte), twin_acc=twin.accuracy(Xte, yte), wall_s=wall,
                server_s=st["server_train_s"], client_peak_mib=st["client_peak_rss_bytes"] / 2**20,
                server_peak_mib=st["server_peak_rss_bytes"] / 2**20, twin_diff=r.twin_max_abs_diff,
                twin_bound=st.get("twin_bound"),
                iterations=m.config.get("iterations"), round_trips=rf.get("round_trips"),
                refreshes=rf.get("refreshes"), hidden=[int(h) for h in hidden],
                note=f"{m.model}, hidden {[int(h) for h in hidden]}, {m.config.get('iterations')} iterations"
                     + (f", on {m.config['components']} principal components" if m.config.get("projection") else ""))


def code_version() -> str:
    """The library code this run imports: the commit, '+dirty' when src/ has uncommitted changes
    (others may commit while a long bench runs); a copy without .git says so in its CODE_VERSION file."""
    if (ROOT / ".git").exists():
        def git(*a):
            return subprocess.run(["git", "-C", str(ROOT), *a], capture_output=True, text=True).stdout.strip()
        return git("rev-parse", "--short", "HEAD") + ("+dirty" if git("status", "--porcelain", "--", "src") else "")
    f = ROOT / "CODE_VERSION"
    return f.read_text().strip() if f.exists() else "?"


def child(dataset: str, model: str, backend: str, out: str) -> int:
    """One (dataset, model) run; writes its row (or its error) as JSON to ``out``."""
    row: dict = {"code": code_version()}
    try:
        Xtr, Xte, ytr, yte = load(dataset)
        row["n"] = f"{len(ytr)}/{len(yte)}"
        row.update((run_mlr if model == "mlr" else run_mlp)(backend, Xtr, Xte, ytr, yte))
        row["sk_acc"] = sklearn_reference(model, row.get("hidden"), Xtr, Xte, ytr, yte)
        row["gap"] = row["enc_acc"] - row["sk_acc"]
    except Exception as exc:  # noqa: BLE001 - the bench records every failure as a row
        row["error"] = f"{type(exc).__name__}: {exc}"
        row["traceback"] = traceback.format_exc()
    pathlib.Path(out).write_text(json.dumps(row, default=float))
    return 0


# ------------------------------------------------------------------------------ the table (in the parent)
COLUMNS = [  # key, header, width, format
    ("dataset", "dataset", 13, "s"), ("model", "model", 5, "s"), ("backend", "be", 4, "s"), ("n", "train/test", 10, "s"),
    ("params", "params", 11, "s"), ("enc_acc", "enc", 6, ".4f"), ("twin_acc", "twin", 6, ".4f"),
    ("sk_acc", "sklrn", 6, ".4f"), ("gap", "gap", 7, "+.4f"), ("iterations", "iters", 5, "d"),
    ("round_trips", "trips", 5, "d"), ("wall_s", "wall_s", 7, ".1f"), ("server_s", "srv_s", 7, ".1f"),
    ("client_peak_mib", "cli_MiB", 7, ".0f"), ("server_peak_mib", "srv_MiB", 7, ".0f"),
    ("twin_diff", "|dec-twin|", 10, ".2e"), ("twin_bound", "bound", 8, ".1e"), ("code", "code", 18, "s"), ("note", "note", 0, "s"),
]


def fmt(row: dict) -> str:
    cells = []
    for key, _, width, spec in COLUMNS:
        v = row.get(key)
        if key == "note" and row.get("error"):
            v = "ERROR " + row["error"].splitlines()[0][:160]
        if v is None or (isinstance(v, float) and math.isnan(v)):
            text = "-"
        else:
            try:
                text = format(v, spec)
            except (TypeError, ValueError):
                text = str(v)
        cells.append(text.rjust(width) if spec != "s" or key in ("n",) else text.ljust(width))
    return "  ".join(cells).rstrip()


def header() -> str:
    return "  ".join(h.rjust(w) if s != "s" or k == "n" else h.ljust(w) for k, h, w, s in COLUMNS).rstrip()


def write_out(path: pathlib.Path, rows: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix.lower() == ".csv":
        keys = [k for k, *_ in COLUMNS] + ["refreshes", "twin_diff_released", "hidden", "error"]
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
    else:
        tmp.write_text(json.dumps(rows, indent=1, default=float))
    os.replace(tmp, path)


def _tree_rss(proc) -> dict[str, int]:
    """RSS of a run process (the client) and of its descendants (the server), in bytes."""
    import psutil

    try:
        p = psutil.Process(proc.pid)
        out = {"client": p.memory_info().rss, "server": 0}
        for c in p.children(recursive=True):
            try:
                out["server"] += c.memory_info().rss
            except psutil.Error:
                pass
        return out
    except psutil.Error:
        return {"client": 0, "server": 0}


def _stop_tree(proc) -> None:
    """Stop a run process and the server process it started (by their ids)."""
    import psutil

    try:
        kids = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        kids = []
    for p in [proc, *kids]:
        try:
            p.terminate()
        except (psutil.Error, ProcessLookupError):
            pass
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    _, alive = psutil.wait_procs(kids, timeout=30)
    for k in alive:
        k.kill()


def run_child(ds: str, model: str, backend: str, env: dict, timeout: float, max_gb: float | None) -> dict:
    """One run in its own process, stopped past ``timeout`` seconds or ``max_gb`` GiB of client +
    server RSS (sampled every 0.5 s); its row, or a row that says why it has none. The run's
    temporary files (the job bundle included) go to a folder of its own, removed afterwards even
    when the run was stopped."""
    import shutil

    rundir = pathlib.Path(tempfile.mkdtemp(prefix="fidelity-run-"))
    res = rundir / "row.json"
    err = tempfile.TemporaryFile(mode="w+")
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--child", ds, model, backend, str(res)],
                            env={**env, "TMPDIR": str(rundir)}, stdout=subprocess.DEVNULL, stderr=err, text=True)
    stopped, peak = None, {"client": 0, "server": 0}
    try:
        while proc.poll() is None:
            time.sleep(0.5)
            rss = _tree_rss(proc)
            peak = {k: max(peak[k], rss[k]) for k in peak}
            if time.perf_counter() - t0 > timeout:
                stopped = f"stopped after --run-timeout {timeout:g} s"
            elif max_gb is not None and sum(rss.values()) > max_gb * 2**30:
                stopped = (f"stopped: client + server RSS above --max-gb {max_gb:g} GiB (client "
                           f"{rss['client'] / 2**30:.1f} GiB, server {rss['server'] / 2**30:.1f} GiB after "
                           f"{time.perf_counter() - t0:.0f} s)")
            if stopped:
                _stop_tree(proc)
                break
        text = res.read_text() if res.exists() else ""
        if text and not stopped:
            return json.loads(text)
        err.seek(0)
        tail = [ln for ln in err.read().strip().splitlines() if ln.strip()][-1:]
        return {"error": stopped or f"run process exited with status {proc.returncode} and no result (killed? out "
                                    f"of memory?): {tail[0] if tail else ''}",
                "wall_s": time.perf_counter() - t0, "client_peak_mib": peak["client"] / 2**20,
                "server_peak_mib": peak["server"] / 2**20}
    finally:
        err.close()
        shutil.rmtree(rundir, ignore_errors=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", default="seal", choices=("seal", "sim"))
    p.add_argument("--datasets", default=",".join(DATASETS), help=f"comma list of {', '.join(DATASETS)}")
    p.add_argument("--models", default=",".join(MODELS), help="comma list of mlr, mlp")
    p.add_argument("--out", help="also write the rows to this file (.csv: CSV, else JSON); not in the repository root")
    p.add_argument("--skip", default="", help="comma list of dataset:model runs to leave out (recorded as skipped)")
    p.add_argument("--skip-mnist-mlp", action="store_true", help="same as --skip mnist:mlp")
    p.add_argument("--data-dir", help="folder of the RegNet CSV and the MNIST npz (default ../shared/data)")
    p.add_argument("--max-gb", type=float, default=None,
                   help="stop a run whose client + server RSS passes this many GiB (default: no limit)")
    p.add_argument("--run-timeout", type=float, default=3600.0, help="seconds before one run is stopped (default 3600)")
    p.add_argument("--child", nargs=4, metavar=("DATASET", "MODEL", "BACKEND", "OUT"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.data_dir:  # the run processes read it from the environment
        os.environ["HETRAIN_BENCH_DATA"] = str(pathlib.Path(a.data_dir).resolve())
    if a.child:
        return child(*a.child)

    datasets = [d.strip() for d in a.datasets.split(",") if d.strip()]
    models = [m.strip() for m in a.models.split(",") if m.strip()]
    bad = sorted(set(datasets) - set(DATASETS)) + sorted(set(models) - set(MODELS))
    if bad:
        p.error(f"unknown dataset(s)/model(s) {bad}; datasets: {', '.join(DATASETS)}; models: {', '.join(MODELS)}")
    skip = {s.strip() for s in a.skip.split(",") if s.strip()}
    if a.skip_mnist_mlp:
        skip.add("mnist:mlp")
    out = None
    if a.out:
        out = pathlib.Path(a.out).resolve()
        if out.parent == ROOT:
            p.error(f"--out {a.out}: not in the repository root; write it elsewhere (e.g. /tmp or bench/)")
        out.parent.mkdir(parents=True, exist_ok=True)

    print(f"fidelity of the defaults: backend {a.backend}{' (INSECURE simulation)' if a.backend == 'sim' else ''}; "
          f"datasets {', '.join(datasets)}; models {', '.join(models)}; {os.cpu_count()} CPU(s)", flush=True)
    print(header(), flush=True)
    rows: list[dict] = []
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    for ds in datasets:
        for model in models:
            row = {"dataset": ds, "model": model, "backend": a.backend}
            if f"{ds}:{model}" in skip:
                row["note"] = "skipped (--skip): see the footnotes"
                row["skipped"] = True
            else:
                row["code"] = code_version()  # the run's own record replaces it; kept when it has none
                row.update(run_child(ds, model, a.backend, env, a.run_timeout, a.max_gb))
            rows.append(row)
            print(fmt(row), flush=True)
            if out is not None:
                write_out(out, rows)

    print("\nenc: test accuracy of the decrypted model (mlr: the released best-validation epoch, rounded to 1e-6 "
          "as released); twin: the plaintext twin's weights (mlr: the twin replayed to the released epoch's step; "
          "mlp: the twin of the final iteration) with the same preprocessing; sklrn: scikit-learn on the same split, "
          "StandardScaler on the training rows, LogisticRegression(max_iter=5000) / MLPClassifier(hidden sizes the "
          "default chose, max_iter=2000, random_state=0), fitted on ALL training rows (the library's mlr holds 20% "
          "of them out for validation); gap = enc - sklrn.")
    print("iters: mlr mini-batch steps run (early stopping included), mlp the trainer's iterations; trips: round trips "
          "on the refresh channel (mlr: refreshes and epoch evaluations); wall_s: the whole fit in the client "
          "(planning, keygen, encryption, server, decryption, twin; not the scikit-learn fit); srv_s: server training; "
          "cli_MiB/srv_MiB: peak RSS of the client process (the bench's run process: imports included) and of the "
          "server process; |dec-twin|: max |decrypted - twin| over the weights of the FINAL state (mlr: the note "
          "gives the released epoch's); bound: the job's twin-check bound (protocol/twin_bound.py: 100 x a simulated "
          "run with the parameters' CKKS noise); code: the commit the run imported (+dirty: with uncommitted changes in src/).")
    if a.backend == "sim":
        print("backend sim: nothing is encrypted; times and memory are not those of SEAL.")
    for r in rows:
        if r.get("skipped"):
            print(f"skipped {r['dataset']}:{r['model']}: asked with --skip/--skip-mnist-mlp")
        if r.get("traceback"):
            print(f"\nerror in {r['dataset']}:{r['model']}:\n{r['traceback']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
