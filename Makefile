# kvmshim: `make run` boots the hello guest, `make test` runs the gates and the test suite.
PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-stamp
SUDO    := $(if $(filter 0,$(shell id -u)),,sudo)
SHELL   := /bin/bash

# Debian packages, each installed only by the targets that use it and only where it is missing.
SEABIOS := /usr/share/seabios/bios-256k.bin
NASM    := /usr/bin/nasm
GRUB    := /usr/lib/grub/i386-pc/boot.img
QEMU    := /usr/bin/qemu-system-x86_64
TEST_TOOLS := $(SEABIOS) $(NASM) $(GRUB) $(QEMU)

define apt_install
	@echo "make $@: installing Debian's $(1) (needed by $(MAKECMDGOALS))"
	$(SUDO) apt-get install -y --no-install-recommends $(1) || \
	  { $(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends $(1); }
endef

.PHONY: all install guests run shell lint test bench clean

all: install

# Create or reuse the virtualenv and install the project with its extras (the cffi binding of
# linux/kvm.h is compiled, and kvm/_header.py generated, on the way).
$(STAMP): pyproject.toml setup.py kvm/_build.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,plots,lint]'
	touch $@

install: $(STAMP)

# Assemble every bundled guest into the build cache (kvmshim also does it on demand).
guests: install
	$(PY) -m guests build

run: install
	$(VENV)/bin/kvmshim run hello

# A shell with .venv/bin on PATH (`kvmshim`, `kvmshim-qemu`, `pytest` ...); exit to leave it.
shell: install
	@echo "kvmshim's virtualenv is active in this shell; 'exit' leaves it"
	@bash --rcfile <(printf '%s\n' '[ -f ~/.bashrc ] && . ~/.bashrc' '. $(VENV)/bin/activate')

# The gates, as pyproject.toml configures them: ruff over the whole tree, mypy --strict over the packages.
lint: install
	$(VENV)/bin/ruff check
	$(VENV)/bin/mypy

# The gates first: a lint or type error fails the run before the first test.
test: lint $(TEST_TOOLS)
	$(PY) -m pytest -q

# Figures and ratios against a C loop and QEMU in the same run (about 7 minutes here), PNGs in bench/build.
bench: install $(SEABIOS) $(QEMU) $(GRUB)
	$(PY) bench/run_all.py

$(SEABIOS):
	$(call apt_install,seabios)
$(NASM):
	$(call apt_install,nasm)
$(GRUB):
	$(call apt_install,grub-pc-bin grub-common)
$(QEMU):
	$(call apt_install,qemu-system-x86)

clean:
	rm -rf $(VENV) build bench/build kvm/_kvm_cffi.* kvm/_header.py *.egg-info .pytest_cache .hypothesis
