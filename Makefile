# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt
STAMP := $(VENV)/.installed
OUT ?= runs/demo
THREADS ?= 1

.PHONY: install demo test bench lint clean

$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) torch==2.13.0
	$(PIP) -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The demo: build the fp32 latency table of the default space on this machine's CPU,
# validate it end to end, and print the figures.
demo: $(STAMP)
	$(BIN)/edgenas lut build --space mbv3 --device local-cpu --precision fp32 --threads $(THREADS) --out $(OUT)/lut_mbv3_fp32.json
	$(BIN)/edgenas lut validate $(OUT)/lut_mbv3_fp32.json --n 60 --out $(OUT)/lut_mbv3_fp32_validation.json
	$(BIN)/edgenas lut show $(OUT)/lut_mbv3_fp32.json

test: $(STAMP)
	$(BIN)/python -m pytest -q -x tests; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 1; fi; exit $$rc

bench: $(STAMP)
	$(BIN)/python bench/lut_accuracy.py

lint: $(STAMP)
	$(BIN)/ruff check edgenas tests bench

clean:
	rm -rf $(VENV) build *.egg-info
