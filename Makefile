# The two commands a new user types: `make demo` and `make test`. Both set up .venv first (idempotent).
PY := .venv/bin/python

# Our suite in two pytest-xdist workers, a test file per worker at a time (module fixtures built once): most of its
# time is the real tools' interpreter start-up and imports, single-threaded (19.5 -> 13 min on 2 cores).
SUITE_WORKERS := -n 2 --dist loadfile

# timm's own model suite (tests/test_models.py of the installed timm's sdist, unmodified) on our models, part of
# `make test`; two workers of one thread each (its TorchScript / FX work is single-threaded Python).
TIMM_CACHE := $(or $(LOCALATTN_CACHE_DIR),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/localattn)/timm-sdist

.PHONY: setup test demo bench timm-suite
setup:
	bash tools/setup_env.sh

test: setup
	$(PY) -m pytest $(SUITE_WORKERS) tests
	$(MAKE) --no-print-directory timm-suite

timm-suite: setup
	@version=$$($(PY) -c "import timm; print(timm.__version__)"); src=$(TIMM_CACHE)/timm-$$version; \
	if [ ! -f $$src/tests/test_models.py ]; then \
		$(PY) -m pip download -q --no-deps --no-binary :all: timm==$$version -d $(TIMM_CACHE) && \
		tar -xzf $(TIMM_CACHE)/timm-$$version.tar.gz -C $(TIMM_CACHE); fi; \
	OMP_NUM_THREADS=1 PYTHONPATH=tests/timm_suite $(PY) -m pytest -n 2 -p localattn_timm_plugin -p no:cacheprovider -q \
		$$src/tests/test_models.py

demo: setup
	$(PY) tools/demo.py

bench: setup
	$(PY) benchmarks/ops.py
	$(PY) benchmarks/models.py
	$(PY) benchmarks/san_inference.py
	$(PY) benchmarks/pointwise.py
