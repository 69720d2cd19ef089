# `make run`: install, prepare the demo database and serve on 127.0.0.1:8000 with waitress,
# with `serva worker` beside it (stopped with the server) so demo orders reach the simulated
# provider and complete by themselves.
# `make test`: install and run the whole test suite (what .ci/run calls).
# `make serve`: production serving on every core (`serva serve`: gunicorn, one worker process
# per core, WORKERS=N THREADS=T); `make run` is single-process waitress.
# `make fuzz`: the property-based fuzz of the API (tests/test_fuzz.py) with many more examples
# than `make test` runs (HYPOTHESIS_PROFILE=fuzz; FUZZ_EXAMPLES=N per test to change it).
# `make bench`: the benchmark of every action against the bare stack (bench/README.md); not
# part of `make test`. `make bench-profile`: py-spy profiles of the hot paths (bench/results/).
# `make bench-worker`: the fulfilment worker against a provider answering in 50 ms (~1 min).
# `make bench-webhooks`: 10,000 status changes delivered to a receiver answering in 50 ms, then
# the API's ratios to the bare endpoint quiet and while deliveries run (~3 min; wrk).
# `make bench-console`: every console page's p50/p95 on 1,000,000 orders and 10,000 accounts.
# `make bench-pg`: the bench actions on PostgreSQL (SERVA_BENCH_POSTGRES_URL, default database
# `test` on 127.0.0.1:5432; a throwaway database, dropped after), one hot account and many.
# `make bench-cpu`: CPU time per request of each action, the app called in-process (no server):
# comparable between two versions of the code while the machine is busy.
# `make bench-instructions`: instructions per request of each action and of the floors, the
# app called in-process under valgrind's callgrind: exact, whatever else the machine runs.
# `make bench-ab A=dir B=dir`: two checkouts served side by side, req/s of B over A per action.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
WORKERS ?= $(shell nproc 2>/dev/null || echo 2)
THREADS ?= 8

.PHONY: run test fuzz install serve bench bench-pg bench-cpu bench-instructions bench-ab bench-profile bench-worker bench-webhooks bench-console clean

# The demo's output is kept in a variable and printed from there: `tee /dev/stderr` would
# reopen a redirected log (`make run > log 2>&1`) and truncate what came before.
# --no-clear-untrusted-proxy-headers: waitress passes X-Forwarded-* on to the app, which
# believes them only with SERVA_TRUSTED_PROXIES set (behind a reverse proxy).
run: install
	$(BIN)/serva init-db
	@DEMO=$$($(BIN)/serva demo) || exit 1; echo "$$DEMO"; KEY=$$(echo "$$DEMO" | tail -n 1); \
	  echo; echo "Try it:  curl -s http://$(HOST):$(PORT)/api/v1 -d action=balance -d key=$$KEY"; echo
	@SERVA_SYNC_INTERVAL_SECONDS=$${SERVA_SYNC_INTERVAL_SECONDS:-2} $(BIN)/serva worker & WORKER=$$!; \
	  trap 'kill -TERM $$WORKER 2>/dev/null; wait $$WORKER' EXIT INT TERM; \
	  $(BIN)/waitress-serve --listen=$(HOST):$(PORT) --no-clear-untrusted-proxy-headers wsgi:app

serve: install
	$(BIN)/serva serve --host $(HOST) --port $(PORT) --workers $(WORKERS) --threads $(THREADS)

bench: install
	$(BIN)/python bench/run.py

bench-pg: install
	$(BIN)/python bench/postgres.py

bench-cpu: install
	$(BIN)/python bench/cpu.py

bench-instructions: install
	$(BIN)/python bench/cpu.py --instructions

bench-ab: install
	$(BIN)/python bench/ab.py $(A) $(B) $(ACTIONS)

bench-worker: install
	$(BIN)/python bench/worker.py

bench-webhooks: install
	$(BIN)/python bench/webhooks.py --with-api

bench-console: install
	$(BIN)/python bench/console.py

bench-profile: install
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python bench/profile.py

test: install
	$(BIN)/python -m pytest

fuzz: install
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest -q tests/test_fuzz.py

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info
