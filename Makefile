# Shortcuts for the commands in dev.py (which needs nothing but Python 3.11).
.PHONY: run test bench lint

run:
	python3 dev.py run

test:
	python3 dev.py test

bench:
	python3 dev.py bench

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy .
