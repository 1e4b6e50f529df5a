"""The build's map of the checkout: one importable name, every package listed, the symlinks
that let a checkout import and type-check the same names."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]


def _packages_on_disk() -> set[str]:
    found = set()
    for name, folder in SETUPTOOLS["package-dir"].items():
        root = ROOT / folder
        for directory in [root, *(p for p in root.rglob("*") if p.is_dir() and not p.is_symlink())]:
            if "__pycache__" in directory.parts or "node_modules" in directory.parts or directory.name == "results":
                continue
            if any(directory.glob("*.py")):
                assert (directory / "__init__.py").exists(), f"{directory} has modules but no __init__.py"
                relative = directory.relative_to(root).parts
                found.add(".".join((name, *relative)))
    return found


def test_every_package_of_the_checkout_is_in_the_wheel() -> None:
    assert set(SETUPTOOLS["packages"]) == _packages_on_disk()


def test_one_importable_name() -> None:
    assert {name.split(".")[0] for name in SETUPTOOLS["packages"]} == {"devtrail"}


def test_each_mapped_folder_is_linked_where_its_name_says() -> None:
    for name, folder in SETUPTOOLS["package-dir"].items():
        if name == "devtrail":
            continue
        link = ROOT / name.replace(".", "/")
        assert link.is_symlink(), f"{link} should be a symlink to ../{folder}"
        assert link.resolve() == (ROOT / folder).resolve()


def test_the_sdk_depends_on_what_emitting_needs_only() -> None:
    names = {
        dep.split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip()
        for dep in PYPROJECT["project"]["dependencies"]
    }
    assert names == {"aiokafka", "pydantic", "pydantic-settings", "orjson"}
    assert "faust-streaming>=0.15.3,<0.16" in PYPROJECT["project"]["optional-dependencies"]["pipeline"]
