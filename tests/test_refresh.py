"""Client-aided refresh, bootstrap refresh and per-step checkpoints (kill and resume)."""
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from sklearn.datasets import load_iris

from hetrain import ckks
from hetrain.models.minibatch import MiniBatchMLR
from hetrain.protocol import checkpoint
from hetrain.protocol.preprocess import Preprocessor
from hetrain.protocol.refresh import (BootstrapRefresh, ClientChannel, ClientRefresh, RefreshClient, train,
                                      twin_long)

CFG = {"epochs": 3, "batch_size": 64, "learning_rate": 0.5, "patience": 0}


def _data():
    X, y = load_iris(return_X_y=True)
    pre = Preprocessor.fit(X, y)
    return pre.transform(X), pre.one_hot(y)


def _steps(trainer):
    return trainer.packing(4, 3, 8192).rotation_steps()  # iris: 4 features, 3 classes; n16384 slots


def _setup(engine, trainer, X, Y):
    batches = trainer.encrypt_batches(engine, X, Y)
    W0 = [engine.encrypt(v) for v in trainer.initial_weights(X.shape[1], Y.shape[1], engine.slots)]
    return trainer.packing(X.shape[1], Y.shape[1], engine.slots), batches, W0


def test_checkpoint_round_trip_is_atomic_and_keyed(tmp_path):
    eng = ckks.create_engine("sim", "n8192")
    path = tmp_path / "state.ckpt"
    assert checkpoint.load(path, eng) is None
    checkpoint.save(path, eng, [eng.encrypt([1.0, 2.0]), eng.encrypt([3.0])], {"step": 4})
    state, meta = checkpoint.load(path, eng)
    assert meta == {"step": 4} and eng.decrypt(state[1])[0] == 3.0
    assert [p.name for p in tmp_path.iterdir()] == ["state.ckpt"]  # no temporary file left
    with pytest.raises(checkpoint.CheckpointError, match="another key|written under key"):
        checkpoint.load(path, ckks.create_engine("sim", "n8192"))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ckks.SerializationError):
        checkpoint.load(path, eng)


def test_client_refresh_on_seal_counts_trips_and_server_never_decrypts():
    X, Y = _data()
    t = MiniBatchMLR(**{**CFG, "epochs": 1, "batch_size": 128})  # 2 batches: 2 steps, 1 refresh
    client_eng = ckks.create_engine("seal", "n16384", t.packing(X.shape[1], Y.shape[1], 8192).rotation_steps())
    server_eng = ckks.load_engine(client_eng.public_bytes())
    pk, batches, W0 = _setup(client_eng, t, X, Y)
    move = lambda cts: [server_eng.deserialize(client_eng.serialize(c)) for c in cts]  # noqa: E731
    from hetrain.models.minibatch import Batch
    sb = [Batch(move(b.X), move(b.Xt), move(b.Ym)) for b in batches]
    channel = ClientChannel(server_eng, RefreshClient(client_eng, t, None, None, X.shape[1], Y.shape[1], X_train=X))
    res = train(server_eng, t, pk, sb, move(W0), refresh=ClientRefresh(channel), monitor=None, epochs=1)
    st = channel.stats
    assert st.round_trips == st.refreshes == 1 and st.evaluations == 0
    one_ct = len(client_eng.serialize(client_eng.encrypt([0.0])))
    # fresh top-level encryptions come back (SEAL compresses: sizes vary by a few bytes)
    assert st.bytes_to_server == pytest.approx(len(W0) * one_ct, rel=0.01)
    assert 0 < st.bytes_to_client < st.bytes_to_server  # the state leaves at a lower level: smaller
    with pytest.raises(ckks.SecretKeyUnavailable):
        server_eng.decrypt(res.state[0])
    W = t.unpack([client_eng.decrypt(c) for c in res.state], X.shape[1], Y.shape[1], client_eng.slots)
    assert np.abs(W - twin_long(t, X, Y, 2)).max() < 1e-4  # see test_minibatch for the tolerance


def test_bootstrap_refresh_on_sim_matches_twin():
    X, Y = _data()
    t = MiniBatchMLR(**CFG)
    eng = ckks.create_engine("sim", "n16384", _steps(t), bootstrap_level=7)  # INSECURE: planning only
    pk, batches, W0 = _setup(eng, t, X, Y)
    boot = BootstrapRefresh()
    res = train(eng, t, pk, batches, W0, refresh=boot, monitor=None, epochs=3)
    assert res.steps_done == 9 and boot.stats.bootstraps == 8 * len(W0)
    assert eng.counters.counts["bootstrap"] == 8 * len(W0)
    W = t.unpack([eng.decrypt(c) for c in res.state], X.shape[1], Y.shape[1], eng.slots)
    np.testing.assert_allclose(W, twin_long(t, X, Y, 9), atol=1e-9)


DRIVER = textwrap.dedent("""
    import os, pathlib, signal, sys
    import numpy as np
    from hetrain import ckks
    from hetrain.models.minibatch import MiniBatchMLR
    from hetrain.protocol.refresh import BootstrapRefresh, train
    sys.path.insert(0, {here!r})
    from test_refresh import CFG, _data, _setup
    d = pathlib.Path(sys.argv[1])
    eng = ckks.load_engine((d / "public").read_bytes(), (d / "secret").read_bytes())
    X, Y = _data()
    t = MiniBatchMLR(**CFG)
    pk, batches, W0 = _setup(eng, t, X, Y)
    def die(done, total):
        if done == int(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, like a crash or an OOM kill
    train(eng, t, pk, batches, W0, refresh=BootstrapRefresh(), monitor=None, epochs=CFG["epochs"],
          checkpoint_path=d / "state.ckpt", on_step=die)
""")


def test_killed_job_resumes_and_loses_at_most_one_step(tmp_path):
    eng = ckks.create_engine("sim", "n16384", _steps(MiniBatchMLR(**CFG)), bootstrap_level=7)
    (tmp_path / "public").write_bytes(eng.public_bytes())
    (tmp_path / "secret").write_bytes(eng.secret_key_bytes())
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(here=str(pathlib.Path(__file__).parent)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path), "4"], env=env, capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr[-2000:]  # it really was killed
    _, meta = checkpoint.load(tmp_path / "state.ckpt", eng)
    assert meta["step"] == 4  # the checkpoint of the last completed step survived the kill

    X, Y = _data()
    t = MiniBatchMLR(**CFG)
    pk, batches, W0 = _setup(eng, t, X, Y)
    res = train(eng, t, pk, batches, W0, refresh=BootstrapRefresh(), monitor=None, epochs=3,
                checkpoint_path=tmp_path / "state.ckpt")
    assert res.resumed_from == 4 and res.steps_done == 9 and len(res.step_seconds) == 5
    W = t.unpack([eng.decrypt(c) for c in res.state], X.shape[1], Y.shape[1], eng.slots)
    np.testing.assert_allclose(W, twin_long(t, X, Y, 9), atol=1e-9)  # same as an uninterrupted run
