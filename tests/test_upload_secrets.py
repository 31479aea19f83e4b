"""Secrets at rest: the service recognises a secret key by its content, wherever it sits in an upload
(protocol/secret_scan.py), and model files are written 0600.

Every smuggled upload recomputes the manifest's checksums, so only the secret-key check can refuse it.
"""
from __future__ import annotations

import base64
import json
import stat

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from hetrain.ckks import collection  # noqa: E402
from hetrain.ckks.container import pack, unpack  # noqa: E402
from hetrain.protocol import files  # noqa: E402
from hetrain.protocol.secret_scan import Scanner, SecretFound  # noqa: E402
from servicekit import (Service, with_manifest_sha, assert_error, bundle_members, make_bundle,  # noqa: E402
                          tar_of)

REFUSED = "the upload holds a secret key: refused"


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    s = Service(tmp_path_factory.mktemp("secrets"), max_upload_bytes=64 * 2**20)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def iris():
    from hetrain.data import load_builtin

    X, y = load_builtin("iris")
    return X[::3], y[::3]


@pytest.fixture(scope="module")
def seal_job(tmp_path_factory, iris):
    """A SEAL n8192 bundle, its secret key container and the raw SEAL SecretKey inside it."""
    kit, _ = make_bundle(tmp_path_factory.mktemp("seal"), iris, backend="seal", preset="n8192")
    container = kit.engine.secret_key_bytes()
    raw = unpack(container)[1]["sk"]
    return kit, bundle_members(kit.jobdir), container, raw


def _ciphertext_like(members, payload: bytes) -> dict:
    """inputs.bin with one more part X/1, labelled a ciphertext of this job, whose data is ``payload``."""
    meta, parts = unpack(members[files.INPUTS], expect_kind=collection.KIND)
    inner_meta, _ = unpack(parts["X/0"])
    inner_meta = {k: v for k, v in inner_meta.items() if k != "parts"}
    meta = {k: v for k, v in meta.items() if k != "parts"}
    meta["counts"] = {**meta["counts"], "X": meta["counts"]["X"] + 1}
    new = dict(parts)
    new["X/1"] = pack(inner_meta, {"ct": payload})
    return with_manifest_sha({**members, files.INPUTS: pack(meta, new)})


def _job_with(members, **extra) -> dict:
    job = json.loads(members[files.JOB])
    job.update(extra)
    return with_manifest_sha({**members, files.JOB: json.dumps(job, sort_keys=True).encode()})


def _smuggles(members, container, raw):
    relabelled = unpack(container)[0]
    relabelled = {**{k: v for k, v in relabelled.items() if k != "parts"}, "kind": "ciphertext"}
    manifest = json.loads(members[files.MANIFEST])
    return {
        "raw key as a stray file": {**members, "notes.txt": raw},
        "raw key as inputs.bin": with_manifest_sha({**members, files.INPUTS: raw}),
        "raw key relabelled as a ciphertext part": _ciphertext_like(members, raw),
        "raw key after a ciphertext's data": _ciphertext_like(
            members, unpack(unpack(members[files.INPUTS])[1]["X/0"])[1]["ct"] + raw),
        "key container relabelled as a ciphertext": _ciphertext_like(members, pack(relabelled, {"ct": raw})),
        "base64 inside job.json": _job_with(members, notes=base64.b64encode(raw).decode()),
        "hex inside job.json": _job_with(members, comment={"blob": [raw.hex()]}),
        "base64 of the container inside the manifest": {
            **members, files.MANIFEST: json.dumps({**manifest, "x": base64.urlsafe_b64encode(container).decode()}).encode()},
        "raw key as the public context's Galois part": with_manifest_sha({**members, files.PUBLIC_CONTEXT: pack(
            {k: v for k, v in unpack(members[files.PUBLIC_CONTEXT])[0].items() if k != "parts"},
            {**unpack(members[files.PUBLIC_CONTEXT])[1], "gk": raw})}),
    }


CASES = ["raw key as a stray file", "raw key as inputs.bin", "raw key relabelled as a ciphertext part",
         "raw key after a ciphertext's data", "key container relabelled as a ciphertext", "base64 inside job.json",
         "hex inside job.json", "base64 of the container inside the manifest",
         "raw key as the public context's Galois part"]


@pytest.mark.parametrize("case", CASES)
def test_a_secret_key_is_refused_wherever_it_sits(service, seal_job, case):
    _, members, container, raw = seal_job
    body = _smuggles(members, container, raw)[case]
    before = service.http.get("/v1/health").json()["jobs"]
    r = service.http.post("/v1/jobs", content=tar_of(body))
    assert_error(r, 400, REFUSED, "SEAL secret key" if "container" not in case or "relabelled" in case else "secret")
    assert service.http.get("/v1/health").json()["jobs"] == before
    assert list((service.workdir / "incoming").iterdir()) == []


def test_the_sim_secret_key_container_is_refused_inside_json(service, tmp_path, iris):
    kit, _ = make_bundle(tmp_path, iris)
    members = _job_with(bundle_members(kit.jobdir), notes=base64.b64encode(kit.engine.secret_key_bytes()).decode())
    assert_error(service.http.post("/v1/jobs", content=tar_of(members)), 400, REFUSED, "hetrain secret-key container")


def test_honest_bundles_are_accepted(service, seal_job, tmp_path, iris):
    kit, members, _, _ = seal_job
    sim_kit, _ = make_bundle(tmp_path, iris)
    for body in (members, bundle_members(sim_kit.jobdir)):
        r = service.http.post("/v1/jobs", content=tar_of(body))
        assert r.status_code == 201, r.text
        service.http.delete(f"/v1/jobs/{r.json()['id']}")


def test_the_scanner_tells_keys_from_public_material(seal_job):
    """No public key, relinearisation key, Galois key or ciphertext parses as a secret key; the key does."""
    kit, members, container, raw = seal_job
    scanner = Scanner(kit.engine.params)
    for part in unpack(members[files.PUBLIC_CONTEXT])[1].values():
        scanner.scan_bytes(part, "public part")
    for ct in unpack(members[files.INPUTS])[1].values():
        scanner.scan_bytes(ct, "ciphertext")
    for blob in (raw, container, b"junk" * 1000 + raw + b"junk"):
        with pytest.raises(SecretFound):
            scanner.scan_bytes(blob, "key")
    # a key of other parameters (n16384) is recognised too, not only the job's
    from hetrain import ckks

    other = unpack(ckks.create_engine("seal", "n16384", [1]).secret_key_bytes())[1]["sk"]
    with pytest.raises(SecretFound, match="n16384"):
        Scanner(kit.engine.params).scan_bytes(other, "key")


def test_model_files_are_written_0600(tmp_path):
    path = tmp_path / "model.json"
    path.write_text("old")
    path.chmod(0o644)
    files.save_model(path, {"weights": {"W": np.zeros((2, 3))}, "model": "mlr"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert files.load_model(path)["weights"]["W"].shape == (2, 3)
