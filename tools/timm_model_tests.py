"""Run timm's own model test suite (``tests/test_models.py``) against vitzoo's models.

    python tools/timm_model_tests.py [--models GLOB] [-k EXPR] [--sdist PATH] [--keep DIR] [-- PYTEST_ARGS...]

timm's test file is not part of this repository: it is taken from the source distribution of the installed timm
release (so the tests match the timm code they exercise), which is, in order of preference, the archive given with
``--sdist``, a copy cached as ``~/.cache/vitzoo/timm-<version>.tar.gz`` (``$XDG_CACHE_HOME`` is honoured), or a fresh
``pip download`` (then cached). Only ``tests/test_models.py``, and any module of timm's ``tests`` package it imports,
is extracted, into a temporary directory (or ``--keep DIR``, which is left in place for inspection).

A generated ``conftest.py`` imports vitzoo and wraps timm's ``list_models`` / ``list_pretrained`` so that they only
return vitzoo models matching ``--models`` (repeatable, fnmatch globs, default ``vitzoo_*``). It must be loaded before
the test file, because timm builds its parametrize lists at import time; the wrappers call timm's own listing first,
so timm's exclusion filters, ``name_matches_cfg`` and pretrained-tag listing still apply. Tests parametrized with
hard-coded timm model names, or not over models at all, are deselected.

pytest runs with the temporary directory as rootdir and its own ini file (so this repository's pytest settings do
not apply), with ``-p no:randomly -p no:cacheprovider -ra``; ``-k`` and everything after ``--`` are passed through.
The exit status is pytest's. Examples:

    python tools/timm_model_tests.py --models 'vitzoo_van_b0' -k 'test_model_forward and not torchscript and not fx'
    python tools/timm_model_tests.py --models 'vitzoo_van_*' -k 'torchscript or fx' -- -x -q
"""

from __future__ import annotations

import argparse
import ast
import importlib.metadata
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
TEST_FILE = "test_models.py"

CONFTEST = '''\
"""Limits timm's model listing to the vitzoo models under test; written by tools/timm_model_tests.py."""

import fnmatch
import functools

import pytest
import timm
import timm.models
import timm.models._registry as timm_registry

import vitzoo  # noqa: F401  (registers the vitzoo models with timm)

MODEL_GLOBS = {globs!r}

_original = {{name: getattr(timm_registry, name) for name in ("list_models", "list_pretrained")}}

# Only models that vitzoo registered count, so a broad glob cannot pull in timm's own models.
SELECTED = frozenset(
    name for name in _original["list_models"]()
    if timm.models.model_entrypoint(name).__module__.split(".")[0] == "vitzoo"
    and any(fnmatch.fnmatchcase(name, glob) for glob in MODEL_GLOBS)
)
if not SELECTED:
    raise pytest.UsageError(f"no vitzoo model matches {{MODEL_GLOBS}}")


# vitzoo's plain ViTs (the DeiT hosts) have no NCHW feature pyramid: timm tests such models, its own ``deit*`` among
# them, with its non-standard checks, which it selects by listing with its NON_STD_FILTERS (and excludes from the
# standard checks with the same list). vitzoo's names do not match those globs, so the listings are told here.
NON_STD_MARKER = "deit*"
NON_STANDARD = frozenset(name for name in SELECTED if "_deit_" in name)


def _as_list(filters):
    return [filters] if isinstance(filters, str) else list(filters or [])


def _restricted(list_fn):
    # Run timm's listing with the caller's arguments, then drop other models; pretrained listings carry tags
    # ("model.tag"), so the architecture part of each name is what is matched.
    @functools.wraps(list_fn)
    def restricted(filter="", *args, **kwargs):
        names = [name for name in list_fn(filter, *args, **kwargs) if name.split(".")[0] in SELECTED]
        if NON_STD_MARKER in _as_list(kwargs.get("exclude_filters")):
            names = [name for name in names if name.split(".")[0] not in NON_STANDARD]
        if NON_STD_MARKER in _as_list(filter) and NON_STANDARD:
            names += [name for name in list_fn(sorted(NON_STANDARD), *args, **kwargs) if name not in names]
        return names

    return restricted


# test_models.py does ``from timm import list_models, list_pretrained``; the other namespaces are patched too so a
# test importing them from timm.models (or the registry) sees the same restriction.
for _module in (timm, timm.models, timm_registry):
    for _name, _fn in _original.items():
        setattr(_module, _name, _restricted(_fn))


def pytest_report_header(config):
    return f"vitzoo models under test ({{len(SELECTED)}}, matching {{', '.join(MODEL_GLOBS)}})"


def pytest_collection_modifyitems(config, items):
    # Tests parametrized with fixed timm model names (or not over models at all) check timm itself, not vitzoo.
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        model_name = callspec.params.get("model_name") if callspec else None
        selected = isinstance(model_name, str) and model_name.split(".")[0] in SELECTED
        (keep if selected else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
'''


def cache_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache") / "vitzoo"


def get_sdist(version: str, sdist: str | None) -> pathlib.Path:
    """Path of timm's source archive for ``version``: the given one, the cached one, or a fresh download."""
    if sdist:
        return pathlib.Path(sdist)
    cached = cache_dir() / f"timm-{version}.tar.gz"
    if cached.is_file():
        return cached
    with tempfile.TemporaryDirectory(prefix="timm-sdist-") as download_dir:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"timm=={version}",
                "-d",
                download_dir,
            ],
            check=True,
        )
        downloaded = pathlib.Path(download_dir) / cached.name
        if not downloaded.is_file():
            sys.exit(f"pip download did not produce {cached.name}")
        cached.parent.mkdir(parents=True, exist_ok=True)
        # Copy to a temporary name first so an interrupted copy is never mistaken for a complete archive.
        partial = cached.with_suffix(".partial")
        shutil.copyfile(downloaded, partial)
        partial.replace(cached)
    return cached


def imported_test_modules(source: str) -> set[str]:
    """Modules of timm's ``tests`` package that ``source`` imports (as dotted names below ``tests``)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("tests."))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "tests":
                # ``from tests import helpers``: each imported name may be a module of the package.
                found.update(f"tests.{alias.name}" for alias in node.names)
            elif node.module.startswith("tests."):
                found.add(node.module)
    return {name.removeprefix("tests.") for name in found}


def extract_tests(archive: pathlib.Path, version: str, dest: pathlib.Path) -> pathlib.Path:
    """Write test_models.py (and the tests-package modules it needs) into ``dest``; returns the test file.

    Also writes the ``dest / "pytest.ini"`` the run uses, so no other pytest configuration is picked up.
    """
    prefix = f"timm-{version}/"
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        if prefix + "tests/" + TEST_FILE not in names:
            sys.exit(f"{archive} has no {prefix}tests/{TEST_FILE}; it must be the sdist of timm {version}")

        def read(member: str) -> str:
            return tar.extractfile(prefix + member).read().decode()

        test_source = read("tests/" + TEST_FILE)
        (dest / TEST_FILE).write_text(test_source)

        # Helpers go into dest/tests/, which is on sys.path first because dest is the rootdir of the test file.
        pending, done = list(imported_test_modules(test_source)), set()
        while pending:
            module = pending.pop()
            if module in done:
                continue
            done.add(module)
            for member in (f"tests/{module.replace('.', '/')}.py", f"tests/{module.replace('.', '/')}/__init__.py"):
                if prefix + member in names:
                    source = read(member)
                    (dest / member).parent.mkdir(parents=True, exist_ok=True)
                    (dest / member).write_text(source)
                    pending.extend(imported_test_modules(source))
                    break
        if done:
            # The package's own __init__ too: ``from tests import name`` may refer to something defined there.
            package_init = "tests/__init__.py"
            (dest / package_init).write_text(read(package_init) if prefix + package_init in names else "")

    # timm registers its marks (forward, torchscript, fxforward, ...) in its own pyproject.toml, which is not used
    # here; they still select with -m, only the unknown-mark warnings are noise.
    (dest / "pytest.ini").write_text("[pytest]\nfilterwarnings =\n    ignore::pytest.PytestUnknownMarkWarning\n")
    return dest / TEST_FILE


def run(args: argparse.Namespace, pytest_args: list[str], workdir: pathlib.Path) -> int:
    version = importlib.metadata.version("timm")
    archive = get_sdist(version, args.sdist)
    test_file = extract_tests(archive, version, workdir)
    globs = args.models or ["vitzoo_*"]
    (workdir / "conftest.py").write_text(CONFTEST.format(globs=globs))

    command = [
        sys.executable,
        "-m",
        "pytest",
        str(test_file),
        "-c",
        str(workdir / "pytest.ini"),
        "--rootdir",
        str(workdir),
        "-p",
        "no:randomly",
        "-p",
        "no:cacheprovider",
        "-ra",
    ]
    if args.k:
        command += ["-k", args.k]
    command += pytest_args

    # The checkout this script belongs to is the vitzoo under test, whatever else is installed.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    print(
        f"timm {version} tests/{TEST_FILE} on vitzoo models {', '.join(globs)}"
        + (f" -k {args.k!r}" if args.k else "")
        + (f" with {' '.join(pytest_args)}" if pytest_args else "")
        + f" (from {archive}, in {workdir})",
        flush=True,
    )
    return subprocess.run(command, cwd=workdir, env=env).returncode


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Everything after "--" belongs to pytest, even options this parser would otherwise claim.
    if "--" in argv:
        split = argv.index("--")
        argv, pytest_args = argv[:split], argv[split + 1 :]
    else:
        pytest_args = []
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--models",
        action="append",
        metavar="GLOB",
        help="vitzoo model names to test (fnmatch, repeatable; default vitzoo_*)",
    )
    parser.add_argument("-k", metavar="EXPR", help="pytest -k expression selecting timm's tests")
    parser.add_argument("--sdist", metavar="PATH", help="timm source archive to take the tests from")
    parser.add_argument("--keep", metavar="DIR", help="write the test directory here and leave it in place")
    args = parser.parse_args(argv)

    if args.keep:
        workdir = pathlib.Path(args.keep).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        return run(args, pytest_args, workdir)
    with tempfile.TemporaryDirectory(prefix="timm-model-tests-") as tmp:
        return run(args, pytest_args, pathlib.Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
