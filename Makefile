# Shortcuts for the commands in dev.py (which needs nothing but Python 3.11).
.PHONY: run test bench lint fuzz

run:
	python3 dev.py run

test:
	python3 dev.py test

bench:
	python3 dev.py bench

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy .

# Schemathesis against every API operation with many more cases than the test suite runs
# (docs/operations.md, "Fuzzing"); DATABASE_URL/REDIS_URL select the services as for tests.
fuzz:
	CDP_FUZZ_EXAMPLES=$${CDP_FUZZ_EXAMPLES:-500} .venv/bin/python -m pytest -q -p no:cacheprovider tests/hardening/test_fuzz.py
