"""Every public function, class, method and property of ckks, circuits, protocol and models has a docstring
(issue 18 item 5: shapes, units, errors raised, sources).

A module is checked by importing it and asking ``inspect.getdoc`` (so an overriding method inherits its base
method's docstring). A module that cannot be imported here (an optional backend whose library is missing)
is read with ``ast`` instead: it is checked, never skipped. A class must carry its own docstring: getdoc
would otherwise hand back a base class's text (``Exception``'s) or the signature that ``dataclasses`` and
``NamedTuple`` write in place of a missing one.
"""
from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import pathlib
import textwrap

import pytest

import hetrain

SRC = pathlib.Path(hetrain.__file__).resolve().parent
PACKAGES = ("ckks", "circuits", "protocol", "models")
# packages whose docstrings are still being written: their cases are xfail(strict=False) until then
PENDING: dict[str, str] = {}


def _modules() -> list[tuple[str, pathlib.Path]]:
    """(dotted module name, file) of every module in PACKAGES, found on disk (not by importing)."""
    out = []
    for pkg in PACKAGES:
        for f in sorted((SRC / pkg).glob("*.py")):
            name = f"hetrain.{pkg}" if f.stem == "__init__" else f"hetrain.{pkg}.{f.stem}"
            out.append((name, f))
    return out


def _signature_doc(cls: type, doc: str | None) -> bool:
    """Whether ``doc`` is the one-line ``Name(field, ...)`` that dataclasses/NamedTuple generate."""
    return (doc is not None and (dataclasses.is_dataclass(cls) or issubclass(cls, tuple))
            and "\n" not in doc.strip() and doc.strip().startswith(cls.__name__ + "(")
            and doc.strip().endswith(")"))


def _member(attr):
    """The function behind a class attribute (method, static/class method, property, cached_property),
    or None for data attributes."""
    if isinstance(attr, (staticmethod, classmethod)):
        return attr.__func__
    if isinstance(attr, property):
        return attr
    if inspect.isfunction(attr) or hasattr(attr, "func") and inspect.isfunction(attr.func):
        return attr
    return None


def _undocumented_class(cls: type, prefix: str, out: list[str]) -> None:
    doc = cls.__dict__.get("__doc__")
    if not (doc and doc.strip()) or _signature_doc(cls, doc):
        out.append(prefix + cls.__name__)
    for name, attr in vars(cls).items():
        if name.startswith("_"):
            continue
        if inspect.isclass(attr) and attr.__module__ == cls.__module__:
            _undocumented_class(attr, f"{prefix}{cls.__name__}.", out)
        elif _member(attr) is not None and not inspect.getdoc(
                attr if isinstance(attr, property) else getattr(cls, name)):
            out.append(f"{prefix}{cls.__name__}.{name}")


def undocumented_imported(module) -> list[str]:
    """Public functions, classes, methods and properties defined in ``module`` without a docstring."""
    out: list[str] = []
    for name, obj in vars(module).items():
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(obj):
            _undocumented_class(obj, "", out)
        elif inspect.isfunction(obj) and not inspect.getdoc(obj):
            out.append(name)
    return out


def _imported_names(tree: ast.Module, module: str) -> dict[str, tuple[str, str]]:
    """name -> (absolute module, attribute) for the module's ``from hetrain... import`` statements."""
    package = module.rsplit(".", 1)[0]
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                src = f"{base}.{node.module}" if node.module else base
            else:
                src = node.module or ""
            if src.startswith("hetrain"):
                for a in node.names:
                    names[a.asname or a.name] = (src, a.name)
    return names


def _base_documents(bases: list[ast.expr], imported: dict, method: str) -> bool:
    """Whether a base class (one imported from hetrain) documents ``method``: the same inheritance
    inspect.getdoc gives an imported module."""
    for b in bases:
        if isinstance(b, ast.Name) and b.id in imported:
            mod, attr = imported[b.id]
            try:
                base = getattr(importlib.import_module(mod), attr)
            except (ImportError, AttributeError):
                continue
            member = inspect.getattr_static(base, method, None)
            if member is not None and inspect.getdoc(member.__func__ if isinstance(
                    member, (staticmethod, classmethod)) else member):
                return True
    return False


def undocumented_ast(path: pathlib.Path, module: str) -> list[str]:
    """As :func:`undocumented_imported`, from the source text (for a module that cannot be imported)."""
    tree = ast.parse(path.read_text())
    imported = _imported_names(tree, module)
    out: list[str] = []

    def visit(body, prefix, bases):
        for node in body:
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            if node.name.startswith("_"):
                continue
            if not ast.get_docstring(node) and not (
                    prefix and not isinstance(node, ast.ClassDef) and _base_documents(bases, imported, node.name)):
                out.append(prefix + node.name)
            if isinstance(node, ast.ClassDef):
                visit(node.body, f"{prefix}{node.name}.", node.bases)

    visit(tree.body, "", [])
    return out


def undocumented(module: str, path: pathlib.Path) -> list[str]:
    """Import ``module`` and inspect it; read it with ast when it cannot be imported here."""
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return undocumented_ast(path, module)
    return undocumented_imported(mod)


def _params():
    for name, path in _modules():
        pkg = name.split(".")[1]
        marks = [pytest.mark.xfail(reason=PENDING[pkg], strict=False)] if pkg in PENDING else []
        yield pytest.param(name, path, id=name, marks=marks)


@pytest.mark.parametrize("module,path", list(_params()))
def test_public_api_has_docstrings(module, path):
    missing = undocumented(module, path)
    assert not missing, f"{module}: no docstring on " + ", ".join(missing)


@pytest.mark.parametrize("module", ["hetrain.ckks.openfhe_backend", "hetrain.ckks.desilo_backend"])
def test_optional_backends_read_from_source_agree(module):
    """The optional backends are what the ast path exists for: it must find them documented too."""
    path = dict(_modules())[module]
    assert undocumented_ast(path, module) == []


def test_every_package_is_scanned():
    names = [n for n, _ in _modules()]
    for pkg in PACKAGES:
        assert sum(n.startswith(f"hetrain.{pkg}.") for n in names) >= 5, pkg
    assert "hetrain.ckks.openfhe_backend" in names and "hetrain.protocol.client" in names


_SAMPLE = textwrap.dedent('''
    import dataclasses
    from hetrain.ckks.engine import Engine


    def bare(x):
        return x


    def told(x):
        """Documented."""
        return x


    @dataclasses.dataclass
    class Record:
        a: int

        @property
        def double(self):
            return 2 * self.a


    class Error(ValueError):
        pass


    class Told:
        """Documented."""

        def method(self):
            pass

        @staticmethod
        def helper():
            pass

        def _private(self):
            pass


    class Eng(Engine):
        """An engine."""

        def rotate(self, ct, k):
            return ct
''')


@pytest.fixture
def sample_module(tmp_path, monkeypatch):
    path = tmp_path / "hetrain_docs_sample.py"
    path.write_text(_SAMPLE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return path


EXPECTED = ["bare", "Record", "Record.double", "Error", "Told.method", "Told.helper"]


def test_checker_finds_what_is_missing(sample_module):
    mod = importlib.import_module("hetrain_docs_sample")
    # the dataclass's generated signature and ValueError's inherited text do not count as documentation;
    # Eng.rotate inherits Engine.rotate's docstring
    assert sorted(undocumented_imported(mod)) == sorted(EXPECTED)


def test_ast_checker_finds_the_same(sample_module):
    assert sorted(undocumented_ast(sample_module, "hetrain_docs_sample")) == sorted(EXPECTED)


def test_a_module_that_cannot_import_is_read_from_source(sample_module, monkeypatch):
    """What happens to openfhe_backend where openfhe is missing: checked with ast, not skipped."""
    real = importlib.import_module

    def no_import(name, *a, **k):
        if name == "hetrain_docs_sample":
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real(name, *a, **k)  # the base classes still import (hetrain.ckks.engine)

    monkeypatch.setattr(importlib, "import_module", no_import)
    assert sorted(undocumented("hetrain_docs_sample", sample_module)) == sorted(EXPECTED)
