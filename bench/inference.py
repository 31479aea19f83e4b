"""Encrypted inference on SEAL: queries per second, latency per batch, and fidelity.

    python bench/inference.py                       # mlr on RegNet MNIST features + Iris mlp, n8192/n16384
    python bench/inference.py --repeats 5

Workloads (real CKKS, SEAL, 128-bit presets):
* mlr, RegNet features (../shared/data/regnet_x_400mf_mnist_train_first256.csv, 400 features, 10
  classes): a plaintext model trained here with the encrypted trainer's twin arithmetic is not the
  point; the model is trained under encryption (mlr, 1 iteration, n8192) so that case (a) has the
  server's encrypted weights. Queries: the 256 rows (a batch; column packing holds 4,096 per group).
  Case (a) (encrypted model, ct × ct, blocked layout) and case (b) (plaintext model, column packing).
* mlp, Iris: mlp-diagonal trained in plaintext twin form is not available without a long encrypted run;
  the bench uses the released Iris network of `fit --model mlp --layout diagonal` on sim (INSECURE
  backend, training only) and scores under SEAL n16384 (case b; mlp has no case (a), see
  protocol/inference.py).
Printed per workload: median seconds of encrypt (client), infer (server), decrypt (client) over the
repeats, queries per second of the server, and max |decrypted − plaintext| scores with the share of
rows whose prediction agrees.
"""
from __future__ import annotations

import argparse
import pathlib
import shutil
import statistics
import tempfile
import time

import numpy as np

DATA = pathlib.Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "regnet_x_400mf_mnist_train_first256.csv"
if not DATA.exists():
    DATA = pathlib.Path("/work/shared/data/regnet_x_400mf_mnist_train_first256.csv")


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run_case(name, root, repeats, encrypt, infer, decrypt, plain):
    enc_t, inf_t, dec_t = [], [], []
    for r in range(repeats):
        q = root / f"{name}-{r}"
        _, te = _timed(lambda: encrypt(q))
        stats, ti = _timed(lambda: infer(q))
        s, td = _timed(lambda: decrypt(q))
        enc_t.append(te), inf_t.append(ti), dec_t.append(td)
        shutil.rmtree(q, ignore_errors=True)
    n = s.scores.shape[0]
    diff = float(np.max(np.abs(s.scores - plain)))
    agree = float(np.mean(s.scores.argmax(1) == plain.argmax(1)))
    ti = statistics.median(inf_t)
    print(f"{name:34s} n={n:5d}  encrypt {statistics.median(enc_t):6.2f} s  infer {ti:6.2f} s  "
          f"decrypt {statistics.median(dec_t):5.2f} s  server {n / ti:8.1f} queries/s  "
          f"max|enc-plain| {diff:.2e}  agreement {agree:.4f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rows", type=int, default=256, help="RegNet rows used (train and query)")
    args = ap.parse_args()

    from sklearn.datasets import load_iris

    from hetrain.protocol import inference as inf
    from hetrain.protocol import steps
    from hetrain.protocol.keys import KeyDir
    from hetrain.protocol.model_spec import model_spec

    root = pathlib.Path(tempfile.mkdtemp(prefix="hetrain-bench-infer-"))
    try:
        D = np.loadtxt(DATA, delimiter=",")[: args.rows]
        X, y = D[:, 1:], D[:, 0].astype(int)
        r = steps.fit(X, y, "mlr", {"iterations": 1}, refresh="none", backend="seal", preset="n8192",
                      keys=root / "K", workdir=root / "JOB", progress=False)
        keys, model = KeyDir.open(root / "K"), r.model
        twin = {}

        def dec_a(q):
            s = inf.decrypt_scores(keys, q)
            twin["a"] = s.twin_scores
            return s

        # case (a): plaintext reference = the twin's scores (the encrypted model is the unrounded twin)
        q0 = root / "probe"
        inf.encrypt_queries_for_job(keys, X, root / "JOB", q0)
        inf.infer(q0, job=root / "JOB")
        ref_a = inf.decrypt_scores(keys, q0).twin_scores
        run_case("mlr RegNet case (a) n8192", root, args.repeats,
                 lambda q: inf.encrypt_queries_for_job(keys, X, root / "JOB", q),
                 lambda q: inf.infer(q, job=root / "JOB"), dec_a, ref_a)
        spec = model_spec(model)
        qkeys = steps.keygen(root / "QK", backend="seal", preset="n8192")
        run_case("mlr RegNet case (b) n8192", root, args.repeats,
                 lambda q: inf.encrypt_queries(qkeys, X, spec, q), lambda q: inf.infer(q, model=model),
                 lambda q: inf.decrypt_scores(qkeys, q), model.predict_scores(X))

        Xi, yi = load_iris(return_X_y=True)
        ri = steps.fit(Xi, yi, "mlp", {"layout": "diagonal"}, backend="sim", progress=False)  # training: sim only
        mlp = ri.model
        mspec = model_spec(mlp)
        mkeys = steps.keygen(root / "MK", backend="seal", preset="n16384")
        run_case(f"{mlp.model} Iris case (b) n16384", root, args.repeats,
                 lambda q: inf.encrypt_queries(mkeys, Xi, mspec, q), lambda q: inf.infer(q, model=mlp),
                 lambda q: inf.decrypt_scores(mkeys, q), inf.plain_model_scores(mlp, Xi))
        agree_model = float(np.mean(inf.decrypt_scores(mkeys, _last(root, mkeys, Xi, mspec, mlp)).predict()
                                    == mlp.predict(Xi)))
        print(f"{mlp.model} Iris: encrypted predictions vs TrainedModel.predict (output sigmoid, clipping): "
              f"agreement {agree_model:.4f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _last(root, keys, X, spec, model):
    from hetrain.protocol import inference as inf

    q = root / "last"
    inf.encrypt_queries(keys, X, spec, q)
    inf.infer(q, model=model)
    return q


if __name__ == "__main__":
    main()
