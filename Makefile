# Both targets set themselves up: a fresh machine needs only Python 3.11 with pip and venv.
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed
# Generated from pyproject.toml by `make lock`: the image installs the runtime set, `make test`/`make run` the test set
# (runtime + dev + test extras, at the same versions).
RUNTIME_LOCK := requirements/runtime.txt
TEST_LOCK := requirements/test.txt
# The lock tool, pinned so a refresh only moves what the registry moved.
UV_VERSION := 0.13.9
# Universal: one lock for Linux, macOS and Windows; hashes: pip refuses any file that differs from the locked one.
LOCK_FLAGS := --universal --python-version 3.11 --generate-hashes --quiet --custom-compile-command 'make lock'
# The agent-side Flex plugin bridge (TypeScript, built with esbuild from npm) and the browser its tests drive.
BRIDGE := agent-bridge/dist/bridge.js
BRIDGE_SOURCES := $(wildcard agent-bridge/src/*.ts) $(wildcard agent-bridge/flex-types/*.ts) agent-bridge/package.json agent-bridge/package-lock.json agent-bridge/tsconfig.json
CHROMIUM := /usr/bin/chromium

.PHONY: run test install lock docs clean bridge chromium flex-types

# phonenumberslite replaced phonenumbers and installs the same module files: where the old distribution is left from
# an earlier install, both go and the lock brings phonenumberslite back whole.
$(STAMP): pyproject.toml $(RUNTIME_LOCK) $(TEST_LOCK)
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found; set PYTHON=..."; exit 1; }
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	@! $(VENV)/bin/python -m pip show --quiet phonenumbers 2>/dev/null || $(VENV)/bin/python -m pip uninstall --quiet --yes phonenumbers phonenumberslite
	$(VENV)/bin/python -m pip install --quiet --require-hashes --no-deps -r $(TEST_LOCK)
	$(VENV)/bin/python -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

install: $(STAMP)

# Re-resolve both locks from pyproject.toml, keeping every pin that still fits (`make lock LOCK_ARGS=--upgrade` moves
# everything to the newest allowed). The runtime lock is constrained by the test lock, so what ships is what is tested.
lock:
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet uv==$(UV_VERSION)
	$(VENV)/bin/uv pip compile pyproject.toml --extra test $(LOCK_FLAGS) $(LOCK_ARGS) -o $(TEST_LOCK)
	$(VENV)/bin/uv pip compile pyproject.toml -c $(TEST_LOCK) $(LOCK_FLAGS) -o $(RUNTIME_LOCK)

run: $(STAMP)
	$(VENV)/bin/flexsf dev

docs: $(STAMP)
	$(VENV)/bin/python -m devtools.config_docs

$(BRIDGE): $(BRIDGE_SOURCES)
	@command -v npm >/dev/null || { echo "npm not found: the agent bridge needs Node.js 18+ with npm"; exit 1; }
	cd agent-bridge && npm ci --no-audit --no-fund && npm run typecheck && npm run build

bridge: $(BRIDGE)

# The bridge's type check holds it against Flex UI's declarations extracted into agent-bridge/flex-types/flex-ui.d.ts
# (committed, so `make test` needs no Flex UI). This re-extracts them from npm @twilio/flex-ui (FLEX_UI_VERSION, default
# the pinned one): it installs the package, about 750 MB and a minute, into a temporary directory it then removes.
flex-types: $(BRIDGE)
	cd agent-bridge && node flex-types/extract.mjs $(FLEX_UI_VERSION) && npm run typecheck

# Debian's chromium for the bridge's browser tests (Playwright's own browser download is not used).
chromium:
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get install -y chromium || { apt-get update && apt-get install -y chromium; }; \
	  elif sudo -n true 2>/dev/null; then sudo -n apt-get install -y chromium || { sudo -n apt-get update && sudo -n apt-get install -y chromium; }; \
	  else echo "$(CHROMIUM) is missing and this user cannot install it: run 'apt-get install -y chromium' as root"; exit 1; fi; }
	@test -x $(CHROMIUM) || { echo "$(CHROMIUM) is still missing after installing Debian's chromium package"; exit 1; }

# Lint and format checks first (cheap, and config in pyproject.toml); tests/test_packaging.py installs the runtime
# lock with no extras into a fresh environment and runs the production commands there.
test: $(STAMP) $(BRIDGE) chromium
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .flexsf agent-bridge/node_modules agent-bridge/dist
