"""The backend registry: every CKKS backend is one ``Backend`` record, registered once.

    from hetrain.ckks import registry
    registry.register(Backend(name="mybackend", module="mypkg.engine", engine="MyEngine", ...))

Every other layer reads backends from here and from nowhere else: ``create_engine`` and
``load_engine`` (which module and class to import, lazily), the CLI's ``--backend`` choices and
help, ``hetrain models``, the refresh a job chooses (``bootstrap_preset``), the executor's
process workers, the upload's secret-key scan (``secret_parts``), the bundle check's allowed
public-context parts (``key_parts``, ``closed_key_parts``) and the upload accounting's names of
those parts (``key_part_sizes``). Adding a backend is one ``register`` call; the engine class
itself is imported only when an engine of that backend is made or loaded, so an optional HE
library that is not installed costs nothing until it is asked for (``BackendUnavailable`` then,
with the install hint).

The built-in backends are registered at the bottom of this module. tests/test_ckks_registry.py
checks every registration against its engine class (container name, process workers, whether it
bootstraps, security) and the part names its engine writes.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import sys
from types import MappingProxyType
from typing import Mapping

from .errors import CKKSError


class BackendUnavailable(CKKSError, ValueError):
    """A registered backend whose HE library is not installed here (the message says how to install
    it), or a name no backend is registered under (the message lists the registered ones). Also a
    ValueError, as ``create_engine`` raised for an unknown name before the registry."""


@dataclasses.dataclass(frozen=True)
class Backend:
    """What hetrain needs to know about one CKKS backend, without importing it.

    name: what ``--backend`` takes (and ``create_engine``'s ``backend``).
    summary: one line for ``hetrain models``; short_help: a few words for ``--backend`` help.
    secure: False for a backend that encrypts nothing (the sim): its label is "INSECURE".
    module, engine: the module and the Engine subclass in it, imported on first use.
    requires: the top-level module of the HE library the engine needs (None: NumPy only);
    install_hint: how to get it (printed when it is missing).
    container_name: the backend name the engine writes into its containers' headers
    (``Engine.backend_name``; default ``name``; the sim writes "sim-INSECURE").
    secret_parts: names of container parts that hold secret-key material (``Engine.secret_key_bytes``
    writes "sk"); the upload's secret-key scan refuses any container holding a part so named.
    key_parts: public-context part name -> its name in upload accounting ("rlk" -> "relin_keys");
    key_part_prefixes: the same for parts named by a prefix and a number (desilo's "rot<step>");
    closed_key_parts: a public context of this backend holds no other parts (the bundle check refuses
    others); False where the parts depend on options (desilo's bootstrapping keys).
    bootstraps: the engine can bootstrap (the sim only with a ``bootstrap_level``);
    bootstrap_preset: the preset a bootstrapping job takes by default; a backend with one is the one
    where ``--refresh auto`` means "bootstrap" (None: auto means "client").
    process_workers: the engine's tasks may run in worker processes (``Engine.process_workers``).
    seeded_uploads: the data owner's fresh ciphertexts and key-switching keys are serialised seeded
    (about half the bytes: SEAL's Serializable); the size estimate counts them so.
    measured: "module:function" giving, for a preset name, the (public context bytes, data owner's
    peak RSS, server's peak RSS) a run measured, or None; the estimate never goes below them (its
    formulas count no bootstrapping keys). Imported only when asked, without the HE library.
    python_versions: the Python versions its library has wheels for (empty: all hetrain supports).
    own_presets: ``create_engine`` passes the preset through unresolved (the engine knows its own
    preset names); preset_needs_engine: a preset's ring is known only from an engine (desilo picks it).
    load_options: keyword options of the engine's ``from_bytes`` beyond ``force_insecure``
    (seal: "verify").
    """

    name: str
    summary: str
    short_help: str
    secure: bool
    module: str
    engine: str
    requires: str | None = None
    install_hint: str = ""
    container_name: str = ""
    secret_parts: frozenset[str] = frozenset({"sk"})
    key_parts: Mapping[str, str] = dataclasses.field(default_factory=dict)
    key_part_prefixes: Mapping[str, str] = dataclasses.field(default_factory=dict)
    closed_key_parts: bool = True
    bootstraps: bool = False
    bootstrap_preset: str | None = None
    process_workers: bool = True
    python_versions: tuple[str, ...] = ()
    own_presets: bool = False
    preset_needs_engine: bool = False
    load_options: tuple[str, ...] = ()
    seeded_uploads: bool = False
    measured: str | None = None

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("-", "").isalnum():
            raise ValueError(f"a backend name must be letters, digits and '-', got {self.name!r}")
        if not self.container_name:
            object.__setattr__(self, "container_name", self.name)
        object.__setattr__(self, "secret_parts", frozenset(self.secret_parts))
        object.__setattr__(self, "key_parts", MappingProxyType(dict(self.key_parts)))
        object.__setattr__(self, "key_part_prefixes", MappingProxyType(dict(self.key_part_prefixes)))
        clash = self.secret_parts & (set(self.key_parts) | set(self.key_part_prefixes))
        if clash:
            raise ValueError(f"backend {self.name}: parts {sorted(clash)} cannot be both secret and public")

    @property
    def label(self) -> str:
        """"real encryption" or "INSECURE" (nothing encrypted)."""
        return "real encryption" if self.secure else "INSECURE"

    def installed(self) -> bool:
        """Whether the HE library is importable here (no import is done)."""
        return self.requires is None or importlib.util.find_spec(self.requires) is not None

    def measured_bytes(self, preset: str) -> tuple[int, int, int] | None:
        """(public context bytes, owner peak RSS, server peak RSS) measured at ``preset``, or None (see ``measured``)."""
        if not self.measured:
            return None
        module, _, function = self.measured.partition(":")
        return getattr(importlib.import_module(module), function)(preset)

    def python_ok(self) -> bool:
        """Whether this Python (major.minor) is one the backend supports (every one when none are listed)."""
        return not self.python_versions or f"{sys.version_info[0]}.{sys.version_info[1]}" in self.python_versions

    def engine_class(self):
        """The Engine subclass (imports its module now). BackendUnavailable if its library is missing."""
        if not self.installed():
            where = "" if self.python_ok() else f" (it has wheels for Python {', '.join(self.python_versions)} only)"
            raise BackendUnavailable(f"backend {self.name} needs the {self.requires} package, which is not "
                                     f"installed{where}: {self.install_hint or 'install it'}")
        return getattr(importlib.import_module(self.module), self.engine)

    def key_part_label(self, part: str) -> str:
        """The upload accounting's name of a public-context part (the part's own name if unknown)."""
        if part in self.key_parts:
            return self.key_parts[part]
        for prefix, label in self.key_part_prefixes.items():
            if part.startswith(prefix) and part[len(prefix):].lstrip("-").isdigit():
                return label
        return part


_REGISTRY: dict[str, Backend] = {}


def register(backend: Backend, *, replace: bool = False) -> Backend:
    """Add ``backend`` (ValueError if its name or container name is taken, unless ``replace``)."""
    if not replace:
        if backend.name in _REGISTRY:
            raise ValueError(f"backend {backend.name!r} is registered already")
        if any(b.container_name == backend.container_name for b in _REGISTRY.values()):
            raise ValueError(f"container name {backend.container_name!r} is taken by another backend")
    _REGISTRY[backend.name] = backend
    return backend


def unregister(name: str) -> None:
    """Remove a backend (tests that register a fake one)."""
    _REGISTRY.pop(name, None)


def names() -> tuple[str, ...]:
    """Every registered backend's name, in registration order (the built-ins first)."""
    return tuple(_REGISTRY)


def backends() -> tuple[Backend, ...]:
    """Every registered backend, in registration order."""
    return tuple(_REGISTRY.values())


def get(name: str) -> Backend:
    """The backend registered as ``name``; BackendUnavailable (listing the names) otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise BackendUnavailable(f"unknown backend {name!r}; choose one of {', '.join(_REGISTRY)}") from None


def by_container_name(container_name: str) -> Backend | None:
    """The backend whose engines write ``container_name`` into their containers (None if none)."""
    return next((b for b in _REGISTRY.values() if b.container_name == container_name), None)


def is_insecure(name: str | None) -> bool:
    """Whether ``name`` is a registered backend that encrypts nothing (the sim): every report of its runs
    says INSECURE. False for a secure or an unknown name."""
    b = _REGISTRY.get(name) if isinstance(name, str) else None
    return b is not None and not b.secure


def bootstrapping_backends() -> str:
    """"desilo, openfhe": the registered backends that bootstrap for real (those with a
    ``bootstrap_preset``), for messages that name the alternatives."""
    return ", ".join(b.name for b in _REGISTRY.values() if b.bootstrap_preset is not None)


def secret_part_names() -> frozenset[str]:
    """Names of container parts that hold secret-key material, of every registered backend, plus the
    generic names a secret key could be given ("secret_key", "secret")."""
    out = {"secret_key", "secret"}
    for b in _REGISTRY.values():
        out |= b.secret_parts
    return frozenset(out)


def key_part_sizes(container_name: str, parts) -> dict[str, int]:
    """Upload accounting: {label: bytes} of a public context's parts (``parts``: the container header's
    list of {"name", "size"}); parts of one label (desilo's Galois keys) are added up."""
    b = by_container_name(container_name)
    out: dict[str, int] = {}
    for p in parts:
        label = b.key_part_label(p["name"]) if b is not None else p["name"]
        out[label] = out.get(label, 0) + int(p["size"])
    return out


def backend_help() -> str:
    """The ``--backend`` help text: every registered backend with its few words."""
    return ", ".join(f"{b.name} ({b.short_help})" for b in _REGISTRY.values()) + ": see `hetrain models`"


# ---------------------------------------------------------------------- the built-in backends
_SEAL_KEYS = {"pk": "public_key", "rlk": "relin_keys", "gk": "galois_keys"}

register(Backend(
    name="seal", summary="Microsoft SEAL through TenSEAL: real encryption (the default); refresh by the client",
    short_help="real encryption, the default", secure=True, module="hetrain.ckks.seal_backend", engine="SealEngine",
    requires="tenseal", install_hint="pip install hetrain", key_parts=_SEAL_KEYS, load_options=("verify",),
    seeded_uploads=True))
register(Backend(
    name="sim", summary="NumPy simulation, INSECURE: nothing is encrypted (tests and planning only)",
    short_help="INSECURE simulation, for tests", secure=False, module="hetrain.ckks.sim_backend", engine="SimEngine",
    container_name="sim-INSECURE", key_parts={}, bootstraps=True))
register(Backend(
    name="desilo", summary="desilofhe: real encryption with bootstrapping; NON-COMMERCIAL licence, optional",
    short_help="real encryption with bootstrapping; optional extra", secure=True,
    module="hetrain.ckks.desilo_backend", engine="DesiloEngine", requires="desilofhe",
    install_hint="pip install 'hetrain[desilo]' (non-commercial licence)",
    key_parts={"pk": "public_key", "rlk": "relin_keys", "conj": "conjugation_key", "bk": "bootstrap_bk",
               "roll": "bootstrap_roll"},
    key_part_prefixes={"rot": "galois_keys"}, closed_key_parts=False, bootstraps=True,
    bootstrap_preset="desilo-boot", process_workers=False, own_presets=True, preset_needs_engine=True))
register(Backend(
    name="openfhe", summary="OpenFHE (BSD-2): real encryption with bootstrapping, training without the data owner; "
                            "optional, Python 3.10 only; presets openfhe-boot, openfhe-l10, ...",
    short_help="real encryption with bootstrapping; optional extra, Python 3.10", secure=True,
    module="hetrain.ckks.openfhe_backend", engine="OpenFHEEngine", requires="openfhe",
    install_hint="pip install 'hetrain[openfhe]'", python_versions=("3.10",),
    key_parts={"cc": "crypto_context", **_SEAL_KEYS}, bootstraps=True, bootstrap_preset="openfhe-boot",
    process_workers=False, own_presets=True, measured="hetrain.ckks.openfhe_backend:measured_bytes"))
