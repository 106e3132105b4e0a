# finhrm: two commands do all the set-up.  `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TSTAMP := $(VENV)/.installed-test
DEMO   ?= $(CURDIR)/.demo

.PHONY: demo test venv bench sample clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(TSTAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(STAMP)

venv: $(STAMP)

test: $(TSTAMP)
	$(BIN)/python -m pytest -q

# The whole pipeline on the bundled synthetic data, in a throw-away FINHRM_HOME.
demo: $(STAMP)
	rm -rf $(DEMO)
	FINHRM_HOME=$(DEMO) $(BIN)/finhrm prepare sample_data/synthetic_tradingview.csv -o $(DEMO)/prepared
	FINHRM_HOME=$(DEMO) $(BIN)/finhrm train $(DEMO)/prepared
	FINHRM_HOME=$(DEMO) $(BIN)/finhrm evaluate
	FINHRM_HOME=$(DEMO) $(BIN)/finhrm predict sample_data/synthetic_yahoo.csv
	FINHRM_HOME=$(DEMO) $(BIN)/finhrm inspect

sample: $(STAMP)
	$(BIN)/python sample_data/generate.py

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_train.py --h-cycles 1 --l-cycles 1 --seq-len 5 --batch 8
	$(BIN)/python benchmarks/bench_cli.py

clean:
	rm -rf $(VENV) $(DEMO) build *.egg-info
