#!/usr/bin/env python3
"""The README's two commands, with nothing but Python 3.11 and pip on the machine.

    python3 dev.py run    install, migrate, load demo data, serve on http://127.0.0.1:8000
    python3 dev.py test   install, lint (ruff), type-check (mypy), run the test suite,
                          audit the pinned dependencies (pip-audit; needs PyPI)
    python3 dev.py bench  install, run the benchmarks (needs PostgreSQL; see docs/benchmarks.md)

Everything is installed into ./.venv from requirements.lock (pinned versions).
"""

from __future__ import annotations

import hashlib
import json
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
    audit()


def audit() -> None:
    """Known vulnerabilities in the pinned packages (pip-audit, PyPI's advisory data, then
    OSV's). A vulnerability fails the run; a vulnerability with no fixed release yet goes
    in AUDIT_IGNORED with its reason. Packages that could not be looked up (the advisory
    service unreachable, as on machines whose PyPI proxy lacks the per-version JSON API)
    are listed in a loud banner: an audit that could not run never reads as a clean one."""
    if os.environ.get("CDP_SKIP_PIP_AUDIT") == "1":
        print("\n*** pip-audit SKIPPED (CDP_SKIP_PIP_AUDIT=1): dependencies NOT audited ***\n")
        return
    ignored = [arg for vuln in AUDIT_IGNORED for arg in ("--ignore-vuln", vuln)]
    skipped: list[str] = []
    failures: list[str] = []
    for service in ("pypi", "osv"):
        report = VENV / f"pip-audit-{service}.json"
        args = [BIN / "pip-audit", "-r", LOCK, "--no-deps", "--disable-pip", "-s", service]
        args += ["--progress-spinner", "off", "-f", "json", "-o", report, *ignored]
        print("+", " ".join(str(a) for a in args), flush=True)
        result = subprocess.run([str(a) for a in args], cwd=ROOT, capture_output=True, text=True)
        try:
            found = json.loads(report.read_text())["dependencies"]
        except (OSError, ValueError, KeyError):
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            failures.append(f"{service}: {last[:200]}")
            continue
        vulnerable = [d for d in found if d.get("vulns")]
        if vulnerable:
            for dep in vulnerable:
                ids = ", ".join(
                    v["id"] + " (fixed in " + ",".join(v.get("fix_versions") or ["-"]) + ")"
                    for v in dep["vulns"]
                )
                print(f"VULNERABLE {dep['name']} {dep.get('version', '')}: {ids}", flush=True)
            sys.exit(
                "pip-audit: pinned packages have known vulnerabilities; raise their pins in "
                "requirements.lock (docs/operations.md, Security)."
            )
        skipped = [d["name"] for d in found if d.get("skip_reason")]
        if not skipped:
            print(f"pip-audit ({service}): {len(found)} pinned packages, no known vulnerabilities")
            return
    print(
        "\n" + "*" * 78 + "\n*** DEPENDENCIES NOT FULLY AUDITED: "
        f"{len(skipped)} pinned package(s) could not be looked up\n*** (no advisory "
        "service answered from this machine): "
        + ", ".join(skipped[:8])
        + (" …" if len(skipped) > 8 else "")
        + "".join(f"\n*** {f}" for f in failures)
        + "\n"
        + "*" * 78
        + "\n",
        flush=True,
    )


# Vulnerability id -> why it is accepted for now (only ones without a fixed release).
AUDIT_IGNORED: dict[str, str] = {}


def bench() -> None:
    install()
    sh(PY, "benchmarks/run.py", *sys.argv[2:])


COMMANDS = {"run": run, "test": test, "bench": bench}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    COMMANDS[sys.argv[1]]()
