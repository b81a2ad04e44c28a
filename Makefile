# Both targets set themselves up: a fresh machine needs only Python 3.11 with pip and venv.
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed
# The agent-side Flex plugin bridge (TypeScript, built with esbuild from npm) and the browser its tests drive.
BRIDGE := agent-bridge/dist/bridge.js
BRIDGE_SOURCES := $(wildcard agent-bridge/src/*.ts) agent-bridge/package.json agent-bridge/package-lock.json agent-bridge/tsconfig.json
CHROMIUM := /usr/bin/chromium

.PHONY: run test install clean bridge chromium

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found; set PYTHON=..."; exit 1; }
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/flexsf dev

$(BRIDGE): $(BRIDGE_SOURCES)
	@command -v npm >/dev/null || { echo "npm not found: the agent bridge needs Node.js 18+ with npm"; exit 1; }
	cd agent-bridge && npm ci --no-audit --no-fund && npm run typecheck && npm run build

bridge: $(BRIDGE)

# Debian's chromium for the bridge's browser tests (Playwright's own browser download is not used).
chromium:
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get install -y chromium || { apt-get update && apt-get install -y chromium; }; \
	  elif sudo -n true 2>/dev/null; then sudo -n apt-get install -y chromium || { sudo -n apt-get update && sudo -n apt-get install -y chromium; }; \
	  else echo "$(CHROMIUM) is missing and this user cannot install it: run 'apt-get install -y chromium' as root"; exit 1; fi; }
	@test -x $(CHROMIUM) || { echo "$(CHROMIUM) is still missing after installing Debian's chromium package"; exit 1; }

test: $(STAMP) $(BRIDGE) chromium
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .flexsf agent-bridge/node_modules agent-bridge/dist
