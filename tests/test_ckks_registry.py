"""The backend registry (ckks/registry.py): one registration per backend, read by every other layer.

A fake backend registered here (an INSECURE sim under another name, with its own secret-part name)
shows up in the CLI's --backend choices and help, in `hetrain models`, in create/load_engine and in
the upload's secret-key scan with no other edit; every built-in registration matches its engine.
"""
from __future__ import annotations

import dataclasses
import importlib
import sys

import numpy as np
import pytest

from hetrain import ckks
from hetrain.ckks import registry
from hetrain.ckks.container import pack, unpack
from hetrain.ckks.registry import Backend, BackendUnavailable
from hetrain.ckks.sim_backend import SimEngine
from hetrain.cli.main import build_parser, main
from hetrain.protocol.secret_scan import Scanner, SecretFound


class FakeEngine(SimEngine):
    """The sim under another container name, whose secret keys would be a part named "fsk"."""

    backend_name = "fake-INSECURE"


FAKE = Backend(name="fake", summary="a fake backend registered by a test", short_help="fake, for this test",
               secure=False, module=__name__, engine="FakeEngine", container_name="fake-INSECURE",
               secret_parts={"fsk"}, key_parts={"fpk": "fake_public_key"})


@pytest.fixture
def fake():
    registry.register(FAKE)
    yield FAKE
    registry.unregister(FAKE.name)


def test_fake_backend_reaches_the_cli_choices_and_help(fake, capsys):
    parser = build_parser()
    for command in ("fit", "keygen", "roundtrip"):
        sub = parser.commands[command]
        action = next(a for a in sub._actions if "--backend" in a.option_strings)
        assert "fake" in action.choices and "fake (fake, for this test)" in action.help
    assert main(["models"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.split()[:1] == ["fake"])
    assert "a fake backend registered by a test" in line
    assert "fake" in ckks.BACKENDS and "fake" not in ckks.BOOTSTRAP_BACKENDS
    assert registry.is_insecure("fake") and not registry.is_insecure("seal") and not registry.is_insecure("nope")


def test_fake_backend_is_gone_from_the_cli_once_unregistered():
    action = next(a for a in build_parser().commands["fit"]._actions if "--backend" in a.option_strings)
    assert "fake" not in action.choices and "fake" not in action.help


def test_fake_backend_makes_and_loads_engines(fake):
    eng = ckks.create_engine("fake", "n8192", rotations=[1])
    assert isinstance(eng, FakeEngine)
    x = np.linspace(-1, 1, eng.slots)
    server = ckks.load_engine(eng.public_bytes())
    assert type(server) is FakeEngine and not server.has_secret_key
    ct = server.deserialize(eng.serialize(eng.encrypt(x)))
    np.testing.assert_allclose(eng.decrypt(eng.deserialize(server.serialize(server.rotate(ct, 1)))), np.roll(x, -1), atol=1e-9)


def test_fake_backends_secret_part_is_refused_by_the_scan_only_while_registered(fake):
    smuggled = pack({"kind": "ciphertext", "backend": "fake-INSECURE"}, {"fsk": b"\x01" * 64})
    with pytest.raises(SecretFound, match="secret-key container"):
        Scanner().scan_bytes(b"padding" + smuggled, "inputs.bin")
    registry.unregister("fake")
    Scanner().scan_bytes(b"padding" + smuggled, "inputs.bin")  # an unknown part name is not a key
    registry.register(FAKE)


def test_key_part_sizes_use_each_backends_names(fake):
    parts = [{"name": "fpk", "size": 10}, {"name": "other", "size": 3}]
    assert registry.key_part_sizes("fake-INSECURE", parts) == {"fake_public_key": 10, "other": 3}
    desilo = [{"name": "pk", "size": 5}, {"name": "rot1", "size": 7}, {"name": "rot-4", "size": 8}]
    assert registry.key_part_sizes("desilo", desilo) == {"public_key": 5, "galois_keys": 15}


def test_bad_registrations_and_names_are_refused(fake):
    with pytest.raises(ValueError, match="registered already"):
        registry.register(FAKE)
    with pytest.raises(ValueError, match="container name 'sim-INSECURE' is taken"):
        registry.register(Backend(name="sim2", summary="", short_help="", secure=False, module=__name__,
                                  engine="FakeEngine", container_name="sim-INSECURE"))
    with pytest.raises(ValueError, match="both secret and public"):
        Backend(name="x", summary="", short_help="", secure=True, module="m", engine="E", secret_parts={"pk"},
                key_parts={"pk": "public_key"})
    with pytest.raises(ValueError, match="letters, digits"):
        Backend(name="a b", summary="", short_help="", secure=True, module="m", engine="E")
    with pytest.raises(BackendUnavailable, match="unknown backend 'nope'; choose one of seal, sim, desilo, openfhe, fake"):
        ckks.create_engine("nope", "n8192")


def test_a_backend_whose_library_is_missing_says_how_to_install_it():
    missing = Backend(name="missing", summary="", short_help="", secure=True, module="hetrain.ckks.seal_backend",
                      engine="SealEngine", requires="no_such_he_library_xyz", install_hint="pip install nothing-here",
                      container_name="missing")
    registry.register(missing)
    try:
        assert not missing.installed()
        with pytest.raises(BackendUnavailable, match="needs the no_such_he_library_xyz package.*pip install nothing-here"):
            ckks.create_engine("missing", "n8192")
    finally:
        registry.unregister("missing")


@pytest.mark.parametrize("name", ["seal", "sim", "desilo", "openfhe"])
def test_builtin_registration_matches_its_engine_class(name):
    """Class attributes (the module imports without its HE library: tests run where desilo is not installed)."""
    b = registry.get(name)
    cls = getattr(importlib.import_module(b.module), b.engine)
    assert issubclass(cls, ckks.Engine)
    assert cls.backend_name == b.container_name
    assert cls.process_workers is b.process_workers
    assert cls.secure is b.secure
    assert (cls.can_bootstrap is not False) is b.bootstraps  # a backend that bootstraps overrides the property
    assert registry.by_container_name(cls.backend_name) is b
    if b.python_versions:
        assert all(v.count(".") == 1 for v in b.python_versions)
    if b.bootstrap_preset is not None:
        assert b.bootstraps


def _engine_parts(eng) -> tuple[set, set]:
    public, _ = unpack(eng.public_bytes(), expect_kind="public_context")
    secret, _ = unpack(eng.secret_key_bytes(), expect_kind="secret_key")
    return {p["name"] for p in public["parts"]}, {p["name"] for p in secret["parts"]}


@pytest.mark.parametrize("name,preset,opts", [("seal", "n8192", {}), ("sim", "n8192", {"bootstrap_level": 2}),
                                              ("openfhe", "openfhe-test", {"force_insecure": True})])
def test_builtin_registration_names_the_parts_its_engine_writes(name, preset, opts):
    """Real engines (SEAL at n8192; OpenFHE where installed, Python 3.10): public parts are the registered
    key parts (all of them where the backend has Galois keys), secret parts the registered secret parts."""
    b = registry.get(name)
    if not b.installed():
        pytest.skip(f"{b.requires} not installed")
    eng = ckks.create_engine(name, preset, rotations=[1, 2], **opts)
    public, secret = _engine_parts(eng)
    assert public <= set(b.key_parts) and (public == set(b.key_parts) or name == "sim")
    assert secret <= b.secret_parts and secret.isdisjoint(b.key_parts)
    assert eng.process_workers is b.process_workers and (b.bootstraps or not eng.can_bootstrap)
    assert eng.can_bootstrap is (name == "sim")  # the sim with a bootstrap level; openfhe-test has no bootstrapping
    assert set(registry.key_part_sizes(eng.backend_name, unpack(eng.public_bytes())[0]["parts"])) == \
        {b.key_parts[p] for p in public}
    assert secret <= registry.secret_part_names()


def test_the_registry_module_imports_no_he_library():
    code = ("import sys; import hetrain.ckks.registry as r; r.names(); "
            "print([m for m in ('tenseal', 'desilofhe', 'openfhe') if m in sys.modules])")
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cannot_bootstrap_names_the_registered_backends_that_can(fake):
    registry.unregister("fake")
    registry.register(dataclasses.replace(FAKE, bootstraps=True, bootstrap_preset="n8192"))
    eng = ckks.create_engine("sim", "n8192")
    with pytest.raises(ckks.CKKSError, match=r"cannot bootstrap: use --refresh client \(or a backend that "
                                             r"bootstraps: desilo, openfhe, fake\)"):
        eng.bootstrap(eng.encrypt([1.0]))
    from hetrain.protocol.client_jobs import default_refresh

    assert default_refresh("fake") == "bootstrap" and default_refresh("sim") == "client"


def test_bundle_check_allows_only_the_registered_public_parts(fake, tmp_path):
    from hetrain.protocol import bundle_check as bc

    params = ckks.get_params("n8192")

    def check(parts):
        path = tmp_path / "public_context.bin"
        path.write_bytes(pack({"kind": "public_context", "backend": "fake-INSECURE"}, parts))
        with open(path, "rb") as f:
            meta, header_bytes = bc._header_at(f, 0, path.stat().st_size, "public_context.bin", bc.MAX_HEADER_BYTES)
        bc.check_public_parts(path, meta, header_bytes, params, set())

    check({"fpk": b"k" * 32})
    with pytest.raises(bc.ClaimError, match=r"unexpected parts \['gk'\] for backend fake-INSECURE"):
        check({"fpk": b"k" * 32, "gk": b"g" * 32})


def test_cli_says_in_one_line_how_to_install_a_missing_backend(tmp_path, capsys):
    missing = next((b for b in registry.backends() if not b.installed()), None)
    if missing is None:
        pytest.skip("every registered backend is installed here")
    assert main(["keygen", "--out", str(tmp_path / "keys"), "--backend", missing.name]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"hetrain keygen: error: backend {missing.name} needs the {missing.requires} package, which is "
                   f"not installed{'' if missing.python_ok() else ' (it has wheels for Python ' + ', '.join(missing.python_versions) + ' only)'}"
                   f": {missing.install_hint}"]
    assert not (tmp_path / "keys").exists()
