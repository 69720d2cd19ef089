# `make run`: install, prepare the demo database and serve on 127.0.0.1:8000 with waitress.
# `make test`: install and run the whole test suite (what .ci/run calls).
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test install serve clean

run: install
	$(BIN)/serva init-db
	@KEY=$$($(BIN)/serva demo | tee /dev/stderr | tail -n 1); \
	  echo; echo "Try it:  curl -s http://$(HOST):$(PORT)/api/v1 -d action=balance -d key=$$KEY"; echo
	$(BIN)/waitress-serve --listen=$(HOST):$(PORT) wsgi:app

serve: install
	$(BIN)/waitress-serve --listen=$(HOST):$(PORT) wsgi:app

test: install
	$(BIN)/python -m pytest

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info
