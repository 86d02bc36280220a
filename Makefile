# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt
STAMP := $(VENV)/.installed
OUT ?= runs/lut-demo
THREADS ?= 1

.PHONY: install sysdeps demo lut-demo test bench lint docs clean

$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) torch==2.13.0
	$(PIP) -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Debian packages: Fashion-MNIST (the demo's data), Chromium (report PNGs and the browser
# test) and PostgreSQL (the multi-worker search test starts a server on loopback). Installed when missing and apt-get can be used; otherwise a warning, and the parts
# that need them say so.
sysdeps:
	@missing=""; \
	[ -d /usr/share/datasets/fashion-mnist ] || missing="$$missing dataset-fashion-mnist"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) >/dev/null \
	      || echo "warning: could not install$$missing"; \
	  else echo "warning: missing Debian packages:$$missing (sudo apt-get install$$missing)"; fi; \
	fi

# The demo: configs/demo.yaml end to end (latency table -> validation -> supernet -> search ->
# finalize -> report) on this machine's CPU; prints where the report is.
demo: $(STAMP) sysdeps
	$(BIN)/edgenas run configs/demo.yaml

# The fp32 latency table of the default space (mbv3, every resolution and width), validated.
lut-demo: $(STAMP)
	$(BIN)/edgenas lut build --space mbv3 --device local-cpu --precision fp32 --threads $(THREADS) --out $(OUT)/lut_mbv3_fp32.json
	$(BIN)/edgenas lut validate $(OUT)/lut_mbv3_fp32.json --n 60 --out $(OUT)/lut_mbv3_fp32_validation.json
	$(BIN)/edgenas lut show $(OUT)/lut_mbv3_fp32.json

test: $(STAMP) sysdeps lint docs
	$(BIN)/python -m pytest -q -x --durations=25 tests; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 1; fi; exit $$rc

bench: $(STAMP)
	$(BIN)/python bench/lut_accuracy.py

# ruff owns the layout: a file it would reformat, or a noqa it finds unused, fails the build
lint: $(STAMP)
	$(BIN)/ruff check --extend-select RUF100 edgenas tests bench
	$(BIN)/ruff format --check edgenas tests bench

# The documentation under docs/ as a site in build/site; strict: a broken link or anchor fails
docs: $(STAMP)
	$(BIN)/mkdocs build --quiet

clean:
	rm -rf $(VENV) build *.egg-info
