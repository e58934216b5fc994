"""The gateway installed as a wheel, away from the checkout: it ships the policy (policies/ at the top of
the repository, inside the package once installed) and reads it, its lexicons, models and templates,
through importlib.resources."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.support.paths import ROOT

MEMO = (b"From: alice@example.gov\r\nTo: bob@example.org\r\nSubject: merger memo\r\n\r\n"
        b"CONFIDENTIAL\r\n\r\nThe merger terms are below. Do not distribute.\r\n")

# Not part of the package: the venv, build leftovers, caches, version control.
_NOT_SOURCES = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".hypothesis",
                                      ".ruff_cache", ".pytest_cache", "results", "corpus")


def _clean_env() -> dict[str, str]:
    drop = ("PYTHONPATH", "GATEWAY_CONFIG", "VIRTUAL_ENV", "PYTHONHOME")
    return {k: v for k, v in os.environ.items() if k not in drop}


def _run(args: list[str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{args}: {result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result


def test_every_package_is_listed_for_the_wheel():
    """pyproject.toml lists the packages by name (policies/ is mapped in): a new one must be added there."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.relative_to(ROOT).parts) for p in (ROOT / "gateway").rglob("*")
               if p.is_dir() and any(p.glob("*.py"))} | {"gateway"}
    assert on_disk <= listed, sorted(on_disk - listed)


@pytest.mark.slow
def test_wheel_installed_elsewhere_holds_a_confidential_memo_with_the_shipped_policy(tmp_path):
    source = tmp_path / "source"          # a copy: building in the checkout would leave build/ there
    shutil.copytree(ROOT, source, ignore=_NOT_SOURCES)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(source), "-w", str(tmp_path / "wheels")],
         tmp_path)
    [wheel] = (tmp_path / "wheels").glob("gateway-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {"gateway/policies/" + p.relative_to(ROOT / "policies").as_posix()
               for p in (ROOT / "policies").rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    review = {"gateway/review/" + p.relative_to(ROOT / "gateway/review").as_posix()
              for p in (ROOT / "gateway/review").rglob("*") if p.suffix in (".html", ".css")}
    assert shipped and shipped <= names, sorted(shipped - names)
    assert review and review <= names, sorted(review - names)

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    _run([str(venv / "bin/python"), "-m", "pip", "install", "-q", str(wheel)], tmp_path, timeout=600)

    work = tmp_path / "elsewhere"           # neither the checkout nor the venv
    work.mkdir()
    (work / "memo.eml").write_bytes(MEMO)
    gateway = str(venv / "bin/gateway")
    result = _run([gateway, "check", "--json", "memo.eml"], work)
    verdict = json.loads(result.stdout)
    assert (verdict["verdict"], verdict["rule"]) == ("quarantine", "outbound/confidential"), verdict
    assert any(f["kind"].startswith("confidential.") for f in verdict["findings"])

    lint = _run([gateway, "policy", "lint"], work)
    site_packages = str(venv / "lib")
    assert "policy ok:" in lint.stdout and f"{site_packages}" in lint.stdout and str(ROOT) not in lint.stdout

    # every shipped resource is found inside the installed package, none in the checkout
    probe = _run([str(venv / "bin/python"), "-c", """
import json
from gateway import config
from gateway.review import app
from gateway.notify import compose, notifier
compose.environment(notifier.SHIPPED_TEMPLATES).get_template("held.txt.j2")
print(json.dumps({"policy": str(config.SHIPPED_POLICY_DIR), "review": str(app.HERE),
                  "templates": str(notifier.SHIPPED_TEMPLATES),
                  "lexicon": (config.SHIPPED_POLICY_DIR / "lexicons" / "abusive.txt").is_file(),
                  "model": (config.SHIPPED_POLICY_DIR / "models" / "commercial.json").is_file(),
                  "notice": (config.SHIPPED_POLICY_DIR / "templates" / "held.txt.j2").is_file(),
                  "page": (app.HERE / "templates" / "login.html").is_file(),
                  "css": (app.HERE / "static" / "review.css").is_file()}))
"""], work)
    found = json.loads(probe.stdout)
    assert all(found[k].startswith(site_packages) for k in ("policy", "review", "templates")), found
    assert all(found[k] for k in ("lexicon", "model", "notice", "page", "css")), found
