"""The layering STYLE.md promises, read from the imports: ops never import layers or models, layers never import
models, and a model file never imports another model file's private names (shared pieces live in the models'
underscore modules, ``_contract``, ``_factory``, ``_linear_mixers``, or in ``vitzoo.layers``)."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "vitzoo"


def _imports(path: pathlib.Path) -> list[tuple[str, list[str]]]:
    """``(absolute module, imported names)`` of every import in a vitzoo source file."""
    package = ["vitzoo", *path.relative_to(PACKAGE).parent.parts]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            out.append((module, [alias.name for alias in node.names]))
    return out


def _sources(sub: str) -> list[pathlib.Path]:
    return sorted((PACKAGE / sub).rglob("*.py"))


@pytest.mark.parametrize(
    "layer, forbidden", [("ops", ("vitzoo.layers", "vitzoo.models")), ("layers", ("vitzoo.models",))]
)
def test_lower_layers_do_not_import_higher_ones(layer, forbidden):
    wrong = [
        f"{path.relative_to(PACKAGE)} imports {module}"
        for path in _sources(layer)
        for module, _ in _imports(path)
        if module.startswith(forbidden)
    ]
    assert not wrong, wrong


def test_model_files_do_not_import_each_others_private_names():
    wrong = []
    for path in _sources("models"):
        for module, names in _imports(path):
            parts = module.split(".")
            if parts[:2] != ["vitzoo", "models"] or len(parts) < 3 or parts[2].startswith("_"):
                continue  # not another model file (the underscore modules are the models' shared pieces)
            wrong += [f"{path.name} imports {module}.{name}" for name in names if name.startswith("_")]
    assert not wrong, wrong


def test_the_import_reader_sees_relative_imports():
    """The checks above would pass vacuously if relative imports were misread: the reader must resolve them."""
    modules = {module for module, _ in _imports(PACKAGE / "models" / "linear_cswin.py")}
    assert {"vitzoo.models.cswin", "vitzoo.models._contract", "vitzoo.hub"} <= modules
