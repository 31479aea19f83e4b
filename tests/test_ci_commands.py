"""CI runs exactly README's test commands (README "Tests", .ci/run), and `pytest` leaves out the slow tests."""
from __future__ import annotations

import pathlib
import re
import shlex
import sys

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_ci_runs_the_readmes_test_commands():
    readme = (ROOT / "README.md").read_text()
    tests = readme[readme.index("## Tests"):]
    tests = tests[:tests.index("\n## ", 1)]
    documented = re.findall(r"```bash\n(.+?)\n```", tests)
    ci = re.findall(r'^suite 3\.1[01] \S+ "(.+)" \|\| status=1$', (ROOT / ".ci" / "run").read_text(), re.M)
    assert len(documented) == 2 and ci == documented
    assert all(c.endswith("&& pytest && pytest -m slow") for c in ci)


def test_pytest_deselects_slow_tests_by_default():
    opts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    args = shlex.split(opts["addopts"])
    assert args[args.index("-m") + 1] == "not slow"
    assert any(m.startswith("slow:") for m in opts["markers"])
