# Two commands set everything up from nothing: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CORES ?= all

.PHONY: install run test rehearse dry-run clean

install: $(STAMP)

$(STAMP): requirements.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip 'setuptools<81' wheel
	$(PY) -m pip install --quiet -r requirements.txt -c constraints.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/snakemake --cores $(CORES)

dry-run: $(STAMP)
	$(VENV)/bin/snakemake -n

test: $(STAMP)
	$(PY) -m pytest -q tests

# The unit tests only (tests/unit/; markers by folder: unit, workflow, faults, see tests/conftest.py).
.PHONY: test-unit
test-unit: $(STAMP)
	$(PY) -m pytest -q -m unit tests

# Every paper config in configs/ end to end on this machine, shrunk in size only
# (tests/rehearsal/<config>.yaml), on inputs made in their real on-disk formats; prints per
# config the jobs, wall time and largest peak memory against its declaration.
# `make rehearse DEVICE=cuda` runs the same on a GPU machine.
DEVICE ?=
rehearse: $(STAMP)
	$(PY) tests/rehearsal/rehearse.py $(if $(DEVICE),--device $(DEVICE))

# The tiny study through profiles/slurm on a one-node SLURM cluster started on this machine,
# compared with a local run (needs root or sudo: installs slurm-wlm and munge, runs the daemons).
.PHONY: test-slurm
test-slurm: $(STAMP)
	SNAKEMAKE=$(CURDIR)/$(VENV)/bin/snakemake tests/slurm/run.sh

# Mutation testing of the numerical modules with mutmut (not part of `make test`; slow: about
# 1 mutant per second per core). `make mutation MODULES="attacks stats"` runs some; the counts
# per module are what tests/MUTATION.md records.
MODULES ?=
.PHONY: mutation
mutation: $(STAMP)
	$(PY) -m pip install --quiet 'mutmut==3.8.1'
	$(PY) tests/mutation/run.py $(MODULES)

clean:
	rm -rf results logs .snakemake .mutation
