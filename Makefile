# The two commands a new user needs:
#   make demo   set up, generate Massachusetts, analyse it ZIP by ZIP, write reports/
#   make test   set up, lint, run the test suite
# Both install what is missing (Debian packages, .venv, Python packages) first.

SHELL := /bin/bash
PY := .venv/bin/python
BUILDINGS ?= 2000000
SEED ?= 42
STATE ?= MA
STRATEGY ?= sweep
export DATABASE_URL

.PHONY: setup demo data analyze notebooks test lint test-postgis test-newest bench bench-generate bench-loaders bench-per-zip bench-postgis bench-scale memory-demo format clean fresh-check

setup:
	@bash scripts/bootstrap.sh

# `make demo STATE=RI` generates, analyses and reports Rhode Island instead of Massachusetts;
# a database that already holds other states stops with a message saying what to do.
data: setup
	$(PY) manage.py migrate --no-input -v 0
	$(PY) manage.py generate_buildings --states $(STATE) --buildings $(BUILDINGS) --seed $(SEED) --if-missing

NOTEBOOK_PARAMETERS ?=
export NOTEBOOK_PARAMETERS

notebooks: data
	$(PY) scripts/run_notebooks.py --output-dir reports -p state $(STATE) -p strategy $(STRATEGY)

STATE_LC = $(shell echo $(STATE) | tr '[:upper:]' '[:lower:]')
TENTH_DATABASE_URL ?= spatialite:///$(CURDIR)/data/buildings_tenth.sqlite3

analyze: data
	$(PY) manage.py analyze_buildings --state $(STATE) --strategy $(STRATEGY) \
		--out reports/$(STATE_LC)_by_zip.csv --map reports/$(STATE_LC)_buildings_per_km2.png

demo: data notebooks analyze

bench-per-zip: data
	DATABASE_URL=$(TENTH_DATABASE_URL) $(PY) manage.py migrate --no-input -v 0
	DATABASE_URL=$(TENTH_DATABASE_URL) $(PY) manage.py generate_massachusetts \
		--buildings $$(( $(BUILDINGS) / 10 )) --seed $(SEED) --if-missing
	$(PY) benchmarks/bench_per_zip.py \
		--db full=$${DATABASE_URL:-spatialite:///$(CURDIR)/data/buildings.sqlite3} \
		--db tenth=$(TENTH_DATABASE_URL) --out reports/bench_per_zip.md

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: setup lint
	$(PY) -m pytest -q

test-postgis: setup
	bash scripts/postgis.sh run -- $(PY) -m pytest -q

# The whole suite on the newest supported stack: pyenv's Python 3.13, pandas 3, pyarrow 26,
# Django 6, SpatiaLite through the pysqlite3 fallback (.venv-newest; scripts/test_newest.sh).
test-newest:
	bash scripts/test_newest.sh

bench-generate: setup
	$(PY) benchmarks/bench_generate.py

bench-loaders: setup
	$(PY) benchmarks/bench_loaders.py

BENCH_SQLITE ?= $(CURDIR)/data/bench.sqlite3
bench-postgis: setup
	DATABASE_URL=spatialite:///$(BENCH_SQLITE) $(PY) manage.py migrate --no-input -v 0
	DATABASE_URL=spatialite:///$(BENCH_SQLITE) $(PY) manage.py generate_massachusetts --buildings $(BUILDINGS) --seed $(SEED) --if-missing
	bash scripts/postgis.sh run -- bash -c '$(PY) manage.py migrate --no-input -v 0 && $(PY) manage.py generate_massachusetts --buildings $(BUILDINGS) --seed $(SEED) --no-progress && $(PY) benchmarks/bench_postgis.py --spatialite spatialite:///$(BENCH_SQLITE)'

# Issue 16's scale benchmark: 0.2M/2M/20M buildings x 494 ZIPs and 2M x ~30,000 ZIPs, each in a
# fresh process; the databases go to $(BENCH_DATA_DIR) (outside the repository; the 20M file is
# about 5 GB and takes a few minutes) and are reused. BENCH_SCALE_ARGS=--dask adds a DaskSweep run.
BENCH_DATA_DIR ?= $(abspath $(CURDIR)/../bench-data)
BENCH_SCALE_ARGS ?=
bench-scale: setup
	$(PY) benchmarks/bench_scale.py --data-dir $(BENCH_DATA_DIR) $(BENCH_SCALE_ARGS)

memory-demo: setup
	$(PY) benchmarks/memory_demo.py

bench: bench-generate bench-loaders bench-per-zip memory-demo

format: setup
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean:
	rm -rf reports/ .pytest_cache .ruff_cache

# Not part of .ci/run: `make test` and `make demo` in a throwaway clone after removing what the
# project installs on a machine, Debian packages included (scripts/fresh_machine_check.sh).
# It refuses to run without one of: FRESH_CHECK_ARGS=--yes | --dry-run | "--yes --keep-packages".
FRESH_CHECK_ARGS ?=
fresh-check:
	bash scripts/fresh_machine_check.sh $(FRESH_CHECK_ARGS)
