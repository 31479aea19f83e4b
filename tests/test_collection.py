"""The one ciphertext-collection format (ckks/collection.py) through each of its users: job bundles,
Engine.save_ciphertexts, checkpoints and the refresh channel; on the simulator and on SEAL (n8192).
Truncated, garbled, oversized and old-format inputs are refused with precise errors."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from hetrain import ckks
from hetrain.ckks import collection
from hetrain.ckks.container import pack as pack_container
from hetrain.protocol import checkpoint, files, refresh_channel
from hetrain.protocol.errors import BundleError
from hetrain.protocol.refresh_channel import ChannelError


@pytest.fixture(scope="module", params=["sim", "seal"])
def eng(request):
    return ckks.create_engine(request.param, "n8192")


def _values(eng, cts):
    return [eng.decrypt(ct)[:4] for ct in cts]


def _state(eng, rng, k=2):
    return {"W": [eng.encrypt(rng.uniform(-1, 1, 4)) for _ in range(k)], "b": [eng.encrypt(rng.uniform(-1, 1, 4))]}


def _assert_same(eng, a: dict, b: dict):
    assert a.keys() == b.keys() and all(len(a[k]) == len(b[k]) for k in a)
    for k in a:
        np.testing.assert_allclose(_values(eng, a[k]), _values(eng, b[k]), atol=1e-9)


# ---------------------------------------------------------------------- the format itself
def test_round_trip_bytes_and_file_keep_names_order_levels_and_meta(eng, tmp_path, rng):
    named = {"X": [eng.encrypt(rng.uniform(-1, 1, 4)), eng.encrypt(rng.uniform(-1, 1, 4), level=1)], "E": []}
    back, meta = collection.unpack(eng, collection.pack(eng, named, {"step": 3}))
    _assert_same(eng, back, named)
    assert meta == {"step": 3} and [ct.level for ct in back["X"]] == [ct.level for ct in named["X"]]
    size, sha = collection.write(tmp_path / "c.bin", eng, named, {"step": 3})
    assert size == (tmp_path / "c.bin").stat().st_size
    back, meta = collection.read(tmp_path / "c.bin", eng)
    _assert_same(eng, back, named)
    data = (tmp_path / "c.bin").read_bytes()
    header = json.loads(data[12:12 + struct.unpack("<I", data[8:12])[0]])
    assert header["kind"] == "ciphertexts" and header["version"] == 1 and header["counts"] == {"X": 2, "E": 0}
    assert all(len(p["sha256"]) == 64 and p["size"] > 0 for p in header["parts"])


def test_truncated_garbled_oversized_and_trailing_bytes_are_refused(eng, tmp_path, rng):
    good = collection.pack(eng, {"X": [eng.encrypt(rng.uniform(-1, 1, 4)) for _ in range(2)]})
    path = tmp_path / "c.bin"
    cases = {"truncated": good[:-10], "corrupted": good[:-5] + bytes([good[-5] ^ 0xFF]) + good[-4:],
             "bytes after its last ciphertext": good + b"x", "bad magic": b"NOTHETRA" + good[8:]}
    for match, data in cases.items():
        path.write_bytes(data)
        with pytest.raises(ckks.SerializationError, match=match):
            collection.read(path, eng)
        with pytest.raises(ckks.SerializationError, match=match):
            collection.unpack(eng, data)
    # a header that claims more bytes than allowed is refused before it is read
    huge = good[:8] + struct.pack("<I", collection.MAX_HEADER_BYTES + 1) + good[12:]
    with pytest.raises(ckks.SerializationError, match="more than the .* allowed"):
        collection.unpack(eng, huge)
    # a part that claims more than the file holds: refused from the manifest, nothing allocated for it
    header, blobs = collection.unpack_blobs(good)
    meta = {k: v for k, v in header.items() if k != "parts"}
    parts = {f"X/{i}": b for i, b in enumerate(blobs["X"])}
    lying = bytearray(pack_container(meta, parts))
    fake = json.dumps(dict(header, parts=[dict(p, size=p["size"] * 1000) for p in header["parts"]]), sort_keys=True)
    path.write_bytes(b"HETRAIN1" + struct.pack("<I", len(fake)) + fake.encode() + bytes(lying[-100:]))
    with pytest.raises(ckks.SerializationError, match="truncated: its parts claim"):
        collection.read(path, eng)
    with pytest.raises(ckks.SerializationError, match="claims .* bytes, more than a ciphertext"):
        collection.unpack_blobs(good, max_part=10)


def test_manifest_claims_are_checked_before_any_part(eng):
    ok = {"kind": "ciphertexts", "version": 1, "key_id": "k", "counts": {"X": 1}, "meta": {},
          "parts": [{"name": "X/0", "size": 5, "sha256": "0" * 64}]}
    assert collection.check_manifest(ok) == {"X": 1}
    bad = {"version 2": dict(ok, version=2), "a 'x' container": dict(ok, kind="x"),
           "counts": dict(ok, counts={"X": -1}), "malformed part entry": dict(ok, parts=[{"name": "X/0", "size": "5"}]),
           "not the next ciphertext": dict(ok, parts=[dict(ok["parts"][0], name="X/1")]),
           "do not match": dict(ok, counts={"X": 2}), "key_id must be a string": dict(ok, key_id=None)}
    for match, header in bad.items():
        with pytest.raises(ckks.SerializationError, match=match):
            collection.check_manifest(header)
    for kind in collection.OLD_KINDS:
        with pytest.raises(collection.OldFormat, match="earlier hetrain") as info:
            collection.check_manifest({"kind": kind})
        assert info.value.kind == kind


# ---------------------------------------------------------------------- users
def test_engine_save_and_load_ciphertexts_is_a_collection(eng, tmp_path, rng):
    cts = [eng.encrypt(rng.uniform(-1, 1, 4)) for _ in range(3)]
    eng.save_ciphertexts(tmp_path / "l.bin", cts)
    np.testing.assert_allclose(_values(eng, eng.load_ciphertexts(tmp_path / "l.bin")), _values(eng, cts), atol=1e-9)
    assert collection.read(tmp_path / "l.bin", eng)[0].keys() == {"ct"}
    collection.write(tmp_path / "m.bin", eng, {"X": cts})
    with pytest.raises(ckks.SerializationError, match="not a list saved by save_ciphertexts"):
        eng.load_ciphertexts(tmp_path / "m.bin")


def test_bundle_inputs_round_trip_and_an_old_bundle_says_what_to_do(eng, tmp_path, rng):
    named = _state(eng, rng)
    files.write_job(tmp_path / "job", eng, named, {"model": "mlr", "job_id": "j"})
    manifest = files.read_manifest(tmp_path / "job")
    back = files.read_ciphertext_map(tmp_path / "job" / files.INPUTS, eng, "inputs",
                                     sha256=manifest["sha256"][files.INPUTS])
    _assert_same(eng, back, named)
    old = {"kind": "ciphertext_map", "key_id": eng.key_id, "counts": {"X": 1}}
    (tmp_path / "old.bin").write_bytes(pack_container(old, {"X/0": eng.serialize(named["W"][0])}))
    with pytest.raises(BundleError, match=r"inputs: written by an earlier hetrain \(format 'ciphertext_map'\): "
                                          "write the job bundle again"):
        files.read_ciphertext_map(tmp_path / "old.bin", eng, "inputs")


def test_channel_frames_carry_a_collection_checked_as_read(eng, rng):
    state = _state(eng, rng)
    state["V"] = state["W"]  # shared ciphertexts cross once
    layout, blobs = refresh_channel.encode_state(eng, state)
    frame = refresh_channel.encode_frame({"op": "refresh", "key_id": eng.key_id, "state": layout}, blobs)
    header, got = refresh_channel.decode_frame(frame)
    assert got == blobs and len(blobs) == 3
    back = refresh_channel.decode_state(eng, header["state"], got)
    _assert_same(eng, {k: back[k] for k in ("W", "b")}, {k: state[k] for k in ("W", "b")})
    assert refresh_channel.decode_frame(frame, verify=False)[1] == []  # the relay: structure only
    garbled = bytearray(frame)
    garbled[-3] ^= 0xFF
    with pytest.raises(ChannelError, match="malformed frame body .*corrupted"):
        refresh_channel.decode_frame(bytes(garbled))
    refresh_channel.decode_frame(bytes(garbled), verify=False)  # the relay does not hash: the server does
    with pytest.raises(ChannelError, match="announces .* it has"):
        refresh_channel.decode_frame(frame[:-1])
    with pytest.raises(ChannelError, match="a header of .* bytes"):
        refresh_channel.check_prefix(struct.pack(">4sIQ", b"HTRF", refresh_channel.MAX_FRAME_HEADER + 1, 0))
    with pytest.raises(ChannelError, match="more than the 100 allowed"):
        refresh_channel.check_prefix(frame[:16], max_frame=100)
    old = json.dumps({"op": "refresh", "blobs": [3]}).encode()
    with pytest.raises(ChannelError, match="not a JSON object of this hetrain"):
        refresh_channel.decode_frame(struct.pack(">4sIQ", b"HTRF", len(old), 3) + old + b"abc")
    assert refresh_channel.answer_limit(10) == refresh_channel.MIN_ANSWER_LIMIT
    assert refresh_channel.answer_limit(1 << 30) == refresh_channel.ANSWER_FACTOR << 30


# ---------------------------------------------------------------------- checkpoints: a log of collections
def test_checkpoint_appends_only_what_changed_and_resumes_the_same_state(eng, tmp_path, rng):
    path = tmp_path / "state.ckpt"
    ck = checkpoint.StateCheckpoint(path, eng, job="J")
    H = [[eng.encrypt(rng.uniform(-1, 1, 4))]]
    ck.save({"H0": H[0]}, {"iteration": 1})
    first = path.stat().st_size
    for t in range(1, 4):  # mlr's pattern: every gradient so far, the earlier ones the same objects
        H.append([eng.encrypt(rng.uniform(-1, 1, 4))])
        ck.save({f"H{j}": h for j, h in enumerate(H)}, {"iteration": t + 1})
        assert path.stat().st_size < (t + 1) * first * 1.2  # one gradient per step, not t + 1
    assert ck.records == 4 and ck.bytes_written == path.stat().st_size
    resumed = checkpoint.StateCheckpoint(path, eng, job="J")
    assert resumed.check() == {"iteration": 4}
    state, meta = resumed.load()
    _assert_same(eng, state, {f"H{j}": h for j, h in enumerate(H)})
    # after a resume, the next step appends again (the loaded ciphertexts are the saved ones)
    size = path.stat().st_size
    resumed.save({**state, "H4": [eng.encrypt(rng.uniform(-1, 1, 4))]}, {"iteration": 5})
    assert path.stat().st_size < size + 1.2 * first
    # a step that changes everything rewrites the file: it holds one state, not a history
    W = {"W": [eng.encrypt(rng.uniform(-1, 1, 4)) for _ in range(3)]}
    ck2 = checkpoint.StateCheckpoint(tmp_path / "w.ckpt", eng)
    for t in range(4):
        W = {"W": [eng.add(ct, ct) for ct in W["W"]]}
        ck2.save(W, {"iteration": t + 1})
    assert len(list(collection.iter_file(tmp_path / "w.ckpt", eng))) == 1  # one record: the last state
    assert ck2.records == 4 and ck2.bytes_written > 3.5 * (tmp_path / "w.ckpt").stat().st_size
    _assert_same(eng, checkpoint.StateCheckpoint(tmp_path / "w.ckpt", eng).load()[0], W)


def test_a_torn_last_record_resumes_from_the_step_before_and_is_overwritten(eng, tmp_path, rng):
    path = tmp_path / "state.ckpt"
    ck = checkpoint.StateCheckpoint(path, eng)
    H = [[eng.encrypt(rng.uniform(-1, 1, 4))], [eng.encrypt(rng.uniform(-1, 1, 4))]]
    ck.save({"H0": H[0]}, {"iteration": 1})
    good = path.stat().st_size
    ck.save({"H0": H[0], "H1": H[1]}, {"iteration": 2})
    path.write_bytes(path.read_bytes()[:-7])  # killed mid-append
    resumed = checkpoint.StateCheckpoint(path, eng)
    state, meta = resumed.load()
    assert meta == {"iteration": 1} and state.keys() == {"H0"}
    resumed.save({"H0": state["H0"], "H1": H[1]}, {"iteration": 2})  # the torn bytes go, the record is whole
    state, meta = checkpoint.StateCheckpoint(path, eng).load()
    assert meta == {"iteration": 2} and path.stat().st_size > good
    _assert_same(eng, state, {"H0": H[0], "H1": H[1]})


def test_checkpoints_of_another_job_keys_or_format_are_refused_with_what_to_do(eng, tmp_path, rng):
    path = tmp_path / "state.ckpt"
    checkpoint.StateCheckpoint(path, eng, job="A").save(_state(eng, rng), {"step": 1})
    with pytest.raises(checkpoint.CheckpointError, match="another job bundle.*delete it"):
        checkpoint.StateCheckpoint(path, eng, job="B").load()
    other = ckks.create_engine(eng.backend_name.split("-")[0], "n8192")
    with pytest.raises(checkpoint.CheckpointError, match="written under keys other than this job's.*delete it"):
        checkpoint.StateCheckpoint(path, other, job="A").load()
    old = pack_container({"kind": "hetrain_checkpoint", "key_id": eng.key_id, "n": 0, "meta": "{}"}, {})
    path.write_bytes(old)
    with pytest.raises(checkpoint.CheckpointError, match="earlier hetrain .*'hetrain_checkpoint'.*delete it"):
        checkpoint.StateCheckpoint(path, eng).check()
    path.write_bytes(b"garbage" * 10)
    with pytest.raises(checkpoint.CheckpointError, match="unreadable .*bad magic.*delete it"):
        checkpoint.StateCheckpoint(path, eng).check()
