"""Installing syncsmtp as the docs say: from a checkout, or from a wheel built from it.

Every ``pip install`` in README.rst and docs/ must name the checkout (``.``,
``'.[extra]'``) or the wheel that ``python -m pip wheel --no-deps -w dist .``
builds (``dist/syncsmtp-<version>-py3-none-any.whl``, with or without
``[extra]``), never a package index name: syncsmtp is not on one. The wheel
is then built from a copy of the source, installed with an extra into a fresh
virtual environment (which sees this one's packages, so nothing is downloaded
for the extra), and run there: imported, and ``python -m syncsmtp demo``.
"""

from __future__ import annotations

import configparser
import importlib.metadata
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Each step (a build, a venv, an install, a run) gets this long at most.
_STEP_TIMEOUT = 300.0
_SOURCE_FILES = ("setup.cfg", "setup.py", "pyproject.toml", "README.rst")


def _metadata() -> tuple[str, set[str]]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg", encoding="utf-8")
    return config["metadata"]["version"], set(config["options.extras_require"])


VERSION, EXTRAS = _metadata()
WHEEL = f"syncsmtp-{VERSION}-py3-none-any.whl"
_WHEEL_TARGET = re.compile(rf"^dist/{re.escape(WHEEL)}(\[(?P<extras>[a-z,]+)\])?$")
_CHECKOUT_TARGET = re.compile(r"^\.(\[(?P<extras>[a-z,]+)\])?$")


def _doc_files() -> list[Path]:
    docs = ROOT / "docs"
    return [ROOT / "README.rst", *sorted(docs.glob("*.rst")), *sorted(docs.glob("*.ipynb"))]


def _install_commands() -> list[tuple[str, str]]:
    """(file, the arguments of ``pip install``) for each install in the docs."""
    found = []
    for path in _doc_files():
        for line in path.read_text(encoding="utf-8").splitlines():
            for match in re.finditer(r"pip install (.*)", line):
                # The command ends with an inline literal, a chained command or a comment.
                arguments = re.split(r"``|&&|\s#|\\n|\"$|\",$", match.group(1))[0]
                found.append((path.name, arguments.strip()))
    return found


def _targets(arguments: str) -> list[str]:
    """What ``pip install`` is given to install, its options (-e, -c FILE) checked."""
    words, targets = shlex.split(arguments), []
    while words:
        word = words.pop(0)
        if word == "-e":
            continue
        if word == "-c":
            constraints = words.pop(0)
            assert (ROOT / constraints).is_file(), constraints
            continue
        assert not word.startswith("-"), f"unexpected option {word}"
        targets.append(word)
    return targets


def test_every_install_line_names_the_checkout_or_the_built_wheel() -> None:
    commands = _install_commands()
    assert len(commands) >= 10  # README and the guides: found, not silently skipped
    seen_wheel = seen_checkout = False
    for name, arguments in commands:
        targets = _targets(arguments)
        assert targets, (name, arguments)
        for target in targets:
            match = _WHEEL_TARGET.match(target) or _CHECKOUT_TARGET.match(target)
            assert match is not None, f"{name}: pip install {arguments} installs neither the checkout " \
                f"nor dist/{WHEEL}"
            extras = set((match.group("extras") or "").split(",")) - {""}
            assert extras <= EXTRAS, f"{name}: unknown extras {extras - EXTRAS}"
            seen_wheel |= target.startswith("dist/")
            seen_checkout |= target.startswith(".")
    assert seen_wheel and seen_checkout


def test_the_wheel_is_built_as_the_quick_start_says() -> None:
    quickstart = (ROOT / "docs" / "quickstart.rst").read_text(encoding="utf-8")
    readme = (ROOT / "README.rst").read_text(encoding="utf-8")
    for text in (quickstart, readme):
        assert "python -m pip wheel --no-deps -w dist .\n" in text


def _copy_source(folder: Path) -> Path:
    """The files a wheel is built from, copied (the build leaves its own files beside them)."""
    source = folder / "source"
    source.mkdir()
    for name in _SOURCE_FILES:
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "syncsmtp", source / "syncsmtp",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".mypy_cache"))
    return source


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=_STEP_TIMEOUT)
    assert done.returncode == 0, f"{shlex.join(command)}\n{done.stdout}\n{done.stderr}"
    return done


def _release(package: str) -> tuple[int, int]:
    """The major and minor version of an installed package (read without importing it)."""
    numbers = [int(number) for number in re.findall(r"\d+", importlib.metadata.version(package))]
    return numbers[0], numbers[1] if len(numbers) > 1 else 0


def _builds_without_isolation() -> bool:
    """True when this environment can build the wheel itself (bdist_wheel available): then
    the build needs no download of setuptools and wheel into an isolated environment."""
    if importlib.util.find_spec("wheel") is not None:
        return True
    return _release("setuptools") >= (70, 1)


def _pip_runs_other_interpreters() -> bool:
    """pip 22.3 and later install into another environment with ``--python``."""
    return _release("pip") >= (22, 3)


_CHECK_INSTALLED = """
import importlib.metadata, json, sys
import syncsmtp, syncsmtp.flask, syncsmtp.testing.pytest_plugin
distribution = importlib.metadata.distribution("syncsmtp")
print(json.dumps({
    "prefix": sys.prefix,
    "module": syncsmtp.__file__,
    "version": distribution.version,
    "files": [str(path) for path in distribution.files or []],
    "pytest11": [entry.value for entry in distribution.entry_points if entry.group == "pytest11"],
    "scripts": [entry.name for entry in distribution.entry_points if entry.group == "console_scripts"],
}))
"""


@pytest.mark.timeout(6 * _STEP_TIMEOUT)
def test_the_wheel_installs_with_an_extra_into_a_fresh_environment(tmp_path: Path) -> None:
    source = _copy_source(tmp_path)
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", "dist", "."]
    if _builds_without_isolation():
        build.insert(4, "--no-build-isolation")
    _run(build, cwd=source)
    assert [path.name for path in (source / "dist").iterdir()] == [WHEEL]

    environment = tmp_path / "env"
    python = environment / "bin" / "python"
    # It sees this interpreter's packages: the extra's requirements are there already.
    if _pip_runs_other_interpreters():
        venv.create(environment, system_site_packages=True, with_pip=False)
        pip = [sys.executable, "-m", "pip", "--python", str(python)]
    else:
        venv.create(environment, system_site_packages=True, with_pip=True)
        pip = [str(python), "-m", "pip"]
    # As the guides write it, from the folder that holds dist/; nothing from an index.
    _run([*pip, "install", "--no-index", f"dist/{WHEEL}[flask]"], cwd=source)

    report = json.loads(_run([str(python), "-c", _CHECK_INSTALLED], cwd=tmp_path).stdout)
    # Imported from the new environment, not from this checkout.
    assert Path(report["module"]).is_relative_to(environment), report["module"]
    assert report["version"] == VERSION
    assert "syncsmtp/py.typed" in report["files"]
    assert report["pytest11"] == ["syncsmtp.testing.pytest_plugin"]
    assert report["scripts"] == ["syncsmtp"]

    demo = _run([str(python), "-m", "syncsmtp", "demo", "--timeout", "60", "--output", str(tmp_path / "mail"),
                 "--color", "never"], cwd=tmp_path)
    assert "250" in demo.stdout and list((tmp_path / "mail").iterdir()), demo.stdout
