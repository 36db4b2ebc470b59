#!/usr/bin/env python3
"""The README's two commands, with nothing but Python 3.11 and pip on the machine.

    python3 dev.py run    install, migrate, load demo data, serve on http://127.0.0.1:8000
    python3 dev.py test   install, lint (ruff), type-check (mypy), run the test suite
    python3 dev.py bench  install, run the benchmarks (needs PostgreSQL; see docs/benchmarks.md)

Everything is installed into ./.venv from requirements.lock (pinned versions).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"
LOCK = ROOT / "requirements.lock"
STAMP = VENV / ".lock-sha256"


def sh(*args: str | Path, env: dict[str, str] | None = None) -> None:
    print("+", " ".join(str(a) for a in args), flush=True)
    result = subprocess.run([str(a) for a in args], cwd=ROOT, env=env)
    if result.returncode != 0:
        sys.exit(result.returncode)


def install() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 (this file runs on the system python)
        sys.exit(f"Python 3.11 or newer is needed; this is {sys.version.split()[0]}")
    if not PY.exists():
        print(f"creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    digest = hashlib.sha256(LOCK.read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == digest:
        return
    sh(PY, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", LOCK)
    STAMP.write_text(digest)


def run() -> None:
    install()
    env = {**os.environ}
    sh(PY, "manage.py", "migrate", "--noinput", env=env)
    sh(PY, "manage.py", "seed_demo", env=env)
    print(
        "\nCDP is running (Ctrl+C stops it):\n"
        "  demo shop        http://127.0.0.1:8000/demo/\n"
        "  admin            http://127.0.0.1:8000/admin/   (user admin, password admin)\n"
        "  API docs         http://127.0.0.1:8000/api/docs/\n"
        "  OpenAPI schema   http://127.0.0.1:8000/api/schema/\n"
        "  health           http://127.0.0.1:8000/healthz\n",
        flush=True,
    )
    sh(PY, "manage.py", "runserver", "127.0.0.1:8000", env=env)


def js_install() -> None:
    """The browser libraries the e2e tests load from disk (analytics.js), pinned by
    tests/e2e/js/package-lock.json; without Node.js those tests skip and say so."""
    folder = ROOT / "tests" / "e2e" / "js"
    lock = folder / "package-lock.json"
    stamp = folder / "node_modules" / ".lock-sha256"
    if shutil.which("npm") is None:
        print("npm not found: the analytics.js browser test will skip", flush=True)
        return
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    sh("npm", "ci", "--prefix", folder, "--no-audit", "--no-fund", "--ignore-scripts")
    stamp.write_text(digest)


def test() -> None:
    install()
    js_install()
    sh(BIN / "ruff", "check", ".")
    sh(BIN / "ruff", "format", "--check", ".")
    sh(BIN / "mypy", ".")
    # Models and migrations agree (checked without touching the test database).
    sh(
        PY,
        "manage.py",
        "makemigrations",
        "--check",
        "--dry-run",
        env={**os.environ, "DATABASE_URL": "sqlite://:memory:"},
    )
    sh(PY, "-m", "pytest", *sys.argv[2:])


def bench() -> None:
    install()
    sh(PY, "benchmarks/run.py", *sys.argv[2:])


COMMANDS = {"run": run, "test": test, "bench": bench}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    COMMANDS[sys.argv[1]]()
