"""Helpers shared by tests: loading the models/ gallery by path."""

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_gallery(name: str):
    """Import ``models/<name>.py`` as a module (the gallery is scripts, not a package)."""
    path = REPO / "models" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"gallery_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
