"""The shape of the tree: which trained models it carries, and rooms small enough to read."""

import subprocess
import tomllib

from tests.conftest import ROOT
from web.config import DEFAULT_MODEL_DIR

WEIGHTS = "worker/classifier/weights"
LONGEST_SOURCE_FILE = 400


def _tracked(*paths: str) -> list[str]:
    return subprocess.run(["git", "ls-files", *paths], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.splitlines()


def test_only_the_packaged_models_are_tracked_and_the_default_is_one_of_them():
    tracked = {path.split("/")[3] for path in _tracked(WEIGHTS)}
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    packaged = {pattern.split("/")[1] for pattern in package_data["worker.classifier"]}
    assert tracked == packaged
    assert DEFAULT_MODEL_DIR.name in tracked
    assert len(tracked) <= 2, f"{len(tracked)} model directories tracked: keep the champion and the one it replaced"


def test_no_source_file_is_too_long_to_read_as_one_room():
    long = {path: lines for path in _tracked("*.py")
            if not path.startswith("migrations/versions/")
            and (lines := len((ROOT / path).read_text().splitlines())) > LONGEST_SOURCE_FILE}
    assert not long, f"split these by what changes them: {long}"


def test_the_classifier_wall_names_every_other_module_of_the_worker():
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    wall = next(contract for contract in contracts if contract.get("source_modules") == ["worker.classifier"])
    others = {f"worker.{path.stem}" for path in (ROOT / "worker").glob("*.py") if path.stem != "__init__"}
    assert others <= set(wall["forbidden_modules"]), "a new worker module must be forbidden to the classifier"


def test_the_readme_tables_every_setting_and_stays_short():
    import re

    readme = (ROOT / "README.md").read_text()
    settings = set(re.findall(r'environ\.get\("([A-Z_]+)"', (ROOT / "web" / "config.py").read_text()))
    assert settings and not {name for name in settings if f"`{name}`" not in readme}
    assert len(readme.splitlines()) <= 150, "details belong in docs/"
