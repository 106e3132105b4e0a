# finhrm: two commands do all the set-up.  `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TSTAMP := $(VENV)/.installed-test
DEMO   ?= $(CURDIR)/.demo

.PHONY: demo test test-fast venv bench sample clean

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

# The unit tests only (tests/unit): nothing trained through the CLI, no subprocesses; under a
# minute.  `make test` runs these and the end-to-end ones (tests/e2e).
test-fast: $(TSTAMP)
	$(BIN)/python -m pytest -q tests/unit

# The whole pipeline on the bundled synthetic data, in a throw-away FINHRM_HOME, with the small
# demo configuration (sample_data/demo.toml) and MLX's compiler off (MLX_DISABLE_COMPILE=1):
# a first run would otherwise spend a minute building kernels that so short a training cannot
# pay back. Real runs use neither: `finhrm train DATA`.
demo: $(STAMP)
	@rm -rf $(DEMO)
	@echo "== finhrm demo: synthetic sample data, SMALL demo model (sample_data/demo.toml), not the defaults =="
	FINHRM_HOME=$(DEMO) $(BIN)/finhrm prepare sample_data/synthetic_tradingview.csv -o $(DEMO)/prepared
	FINHRM_HOME=$(DEMO) MLX_DISABLE_COMPILE=1 $(BIN)/finhrm train $(DEMO)/prepared --config sample_data/demo.toml
	FINHRM_HOME=$(DEMO) $(BIN)/finhrm evaluate
	FINHRM_HOME=$(DEMO) $(BIN)/finhrm predict sample_data/synthetic_tradingview.csv
	FINHRM_HOME=$(DEMO) $(BIN)/finhrm inspect
	@echo "== demo done: that was the small demo model; \`finhrm train DATA\` trains the default one =="

sample: $(STAMP)
	$(BIN)/python sample_data/generate.py

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_train.py --h-cycles 1 --l-cycles 1 --seq-len 5 --batch 8
	$(BIN)/python benchmarks/bench_cli.py

clean:
	rm -rf $(VENV) $(DEMO) build *.egg-info
