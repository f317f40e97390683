# Goalkeeper: `make demo` runs the real code against the simulated cloud; `make test` runs every check.
# Both install what they need on a fresh Debian machine (apt packages, then a virtualenv in .venv).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# nmap: the scanner; nftables, iproute2: namespace tests; prometheus: promtool for the alert
# rules; tini, libcap2-bin: the image's signal and capability checks; postgresql: the state
# store's tests start a throwaway server; python3-venv: the venv; chromium + chromium-driver:
# the staff console's browser tests (and `make screenshots`); redis-server, memcached, vsftpd,
# rsync, dnsmasq, snmpd, snmp: the real services verification is tested against (DESIGN §7).
APT_PACKAGES := nmap nftables iproute2 prometheus tini libcap2-bin postgresql python3-venv python3-pip \
	chromium chromium-driver redis-server memcached vsftpd rsync dnsmasq snmpd snmp

.PHONY: all system venv test lint unit demo bench chart-schema screenshots lock clean

all: test

system:  ## Debian packages: nmap (the scanner), nftables + iproute2 (namespace tests), venv
	@missing=""; \
	for cmd in nmap nft ip promtool tini setcap pg_ctlcluster chromium chromedriver redis-server memcached vsftpd rsync dnsmasq snmpd snmpget; do \
		command -v $$cmd >/dev/null 2>&1 || PATH="$$PATH:/usr/sbin:/sbin" command -v $$cmd >/dev/null 2>&1 || missing=yes; \
	done; \
	$(PYTHON) -c 'import venv, ensurepip' >/dev/null 2>&1 || missing=yes; \
	if [ -n "$$missing" ]; then \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
			$(APT_PACKAGES) >/dev/null; \
	fi

# The exact versions and hashes of requirements-dev.lock (`make lock` writes both lock files from
# pyproject.toml; the image installs requirements.lock), then the package itself without deps.
$(VENV)/.installed: pyproject.toml requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q --require-hashes -r requirements-dev.lock
	$(BIN)/pip install -q --no-deps -e '.[dev,sim]'
	touch $@

LOCK := $(BIN)/uv pip compile pyproject.toml --generate-hashes --no-header --quiet \
	--python-version 3.11 --python-platform x86_64-manylinux_2_28

lock: $(VENV)/.installed  ## requirements.lock (the image) and requirements-dev.lock (venv, CI)
	$(LOCK) --extra postgres -o requirements.lock
	$(LOCK) --extra postgres --extra dev --extra sim -o requirements-dev.lock

venv: system $(VENV)/.installed

lint: venv  ## ruff, mypy --strict, import-linter layer contracts, the chart's schema is current
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m goalkeeper.chartschema --check

unit: venv
	$(BIN)/pytest

test: lint unit

demo: venv  ## one real tick against the simulated cloud on loopback
	$(BIN)/goalkeeper demo

bench: venv  ## scan speed and memory against plain nmap (see docs/performance.md)
	$(BIN)/python -m benchmarks

screenshots: venv  ## docs/console/*.png: every console page, taken by its browser test
	CONSOLE_SCREENSHOTS=$(CURDIR)/docs/console $(BIN)/pytest -q tests/test_console_browser.py

chart-schema: venv  ## regenerate the chart's values.schema.json `config` part from Settings
	$(BIN)/python -m goalkeeper.chartschema

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache demo-out
