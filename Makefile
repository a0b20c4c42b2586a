# The two commands a new user types: `make demo` and `make test`. Both set up .venv first (idempotent).
PY := .venv/bin/python

.PHONY: setup test demo bench
setup:
	bash tools/setup_env.sh

test: setup
	$(PY) -m pytest tests

demo: setup
	$(PY) tools/demo.py

bench: setup
	$(PY) benchmarks/ops.py
	$(PY) benchmarks/models.py
	$(PY) benchmarks/san_inference.py
