# kvmshim: `make run` boots the hello guest, `make test` runs the test suite.
PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-stamp

SEABIOS := /usr/share/seabios/bios-256k.bin
SUDO    := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: all install guests run test bench clean

all: install guests

# Create or reuse the virtualenv and install the project (building the cffi binding of linux/kvm.h).
$(STAMP): pyproject.toml setup.py $(wildcard kvm/_build.py)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(STAMP)

# Debian's SeaBIOS, the default BIOS of `kvmshim run --machine pc`, installed only where missing.
$(SEABIOS):
	$(SUDO) apt-get install -y --no-install-recommends seabios || \
	  { $(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends seabios; }

guests: $(STAMP)
	$(PY) -m guests build

run: install guests $(SEABIOS)
	$(VENV)/bin/kvmshim run hello

test: install guests $(SEABIOS)
	$(PY) -m pytest -q

bench: install guests
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) build guests/build bench/build kvm/_kvm_cffi.* *.egg-info .pytest_cache .hypothesis
