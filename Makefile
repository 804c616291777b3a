# Two commands on a fresh machine:
#   make run   - the main job: a real retrieval evaluation on the bundled benchmark
#   make test  - the test suite (CI runs exactly this through .ci/run)
PYTHON ?= python3
RUN_VENV := .venv-run
TEST_VENV := .venv

.PHONY: run test test-busy lint chromium bench clean

# The compiled kernels (setup.py, src/dehub/engine/_*_kernel.c) are built by the editable
# install; a change to them rebuilds them in place (numpy is used where they are not built).
KERNEL := setup.py src/dehub/engine/_topk_kernel.c src/dehub/engine/_cluster_kernel.c

$(RUN_VENV)/.installed: pyproject.toml $(KERNEL)
	$(PYTHON) -m venv $(RUN_VENV)
	$(RUN_VENV)/bin/pip install --quiet --upgrade pip
	$(RUN_VENV)/bin/pip install --quiet -e '.[plot]'
	touch $@

# torch is pinned to the local CPU wheel first, so nothing pulls a CUDA build.
$(TEST_VENV)/.installed: pyproject.toml $(KERNEL)
	$(PYTHON) -m venv $(TEST_VENV)
	$(TEST_VENV)/bin/pip install --quiet --upgrade pip
	$(TEST_VENV)/bin/pip install --quiet torch==2.13.0
	$(TEST_VENV)/bin/pip install --quiet -e '.[test,faiss,plot,embed,serve,ray,io,stores,pgvector,langchain,ot,onnx,browser,dev]' \
		nnn-retrieval ranx schemathesis torch==2.13.0
	# kiez 0.5.0 (the cross-checks in tests/methods) pins numpy<2 and pandas<2, though the
	# hubness code the tests call runs on today's: installed without its pins.
	$(TEST_VENV)/bin/pip install --quiet --no-deps kiez==0.5.0 class-resolver==0.8.2
	# clip-retrieval's client only (its own deps pull a CUDA torch): the ClipClient tests
	$(TEST_VENV)/bin/pip install --quiet --no-deps clip-retrieval==2.45.0
	touch $@

# The browser tests drive Debian's chromium through Playwright (no browser download).
# Installed here when missing and we may (root with apt-get); otherwise those tests skip
# with the reason.
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
		&& (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
		|| echo "chromium not installed: browser tests will skip"; }

lint: $(TEST_VENV)/.installed
	$(TEST_VENV)/bin/ruff check src tests benchmarks examples scripts
	$(TEST_VENV)/bin/ruff format --check src tests benchmarks examples scripts
	$(TEST_VENV)/bin/mypy
	cd src && ../$(TEST_VENV)/bin/lint-imports --no-cache --config ../.importlinter

run: $(RUN_VENV)/.installed
	$(RUN_VENV)/bin/dehub eval

test: $(TEST_VENV)/.installed chromium
	$(TEST_VENV)/bin/python -m pytest -q

# The same suite with a CPU-burning neighbour process on every core (run by hand, not by
# .ci/run: 15-25 min on two cores): no test may depend on the machine's speed. Stops at the
# first failure.
test-busy: $(TEST_VENV)/.installed chromium
	$(TEST_VENV)/bin/python scripts/busy.py -- $(TEST_VENV)/bin/python -m pytest -q -x

bench: $(TEST_VENV)/.installed
	$(TEST_VENV)/bin/python benchmarks/bench_core.py

clean:
	rm -rf $(RUN_VENV) $(TEST_VENV) .pytest_cache .hypothesis build src/dehub/engine/*.so
