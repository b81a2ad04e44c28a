"""An agent's desk in a real browser: the pages and servers the bridge's browser tests and `flexsf bench` share.

Salesforce's page, on one origin, frames Flex's, on another, as Lightning frames the softphone. The Flex page runs the
built bridge (agent-bridge/dist/bridge.js) on stand-ins for Flex UI and loads the Open CTI and Console API stand-ins
from the Salesforce origin at Salesforce's own script paths (tests/agent_bridge/). The browser is the system's
Chromium (`make chromium`): Playwright's own browser download is not used.
"""

from __future__ import annotations

import os
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "tests" / "agent_bridge"
BRIDGE = ROOT / "agent-bridge"
BUNDLE = BRIDGE / "dist" / "bridge.js"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


class StaticServer:
    """The harness pages and stand-ins, plus /dist/ from the built bridge, on a port of its own (an origin)."""

    def __init__(self) -> None:
        class Handler(SimpleHTTPRequestHandler):
            def translate_path(self, path: str) -> str:
                clean = path.split("?", 1)[0].split("#", 1)[0]
                if clean.startswith("/dist/"):
                    return str(BRIDGE / "dist" / Path(clean).name)
                return super().translate_path(path)

            def end_headers(self) -> None:
                self.send_header("Cache-Control", "no-store")
                super().end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(HARNESS)))
        self.server.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def flex_url(flex_origin: str, gateway: str, allowed: str, extra: str = "") -> str:
    """The Flex page; `allowed` is the Flex configuration's `allowed_origins` (comma-separated)."""
    return f"{flex_origin}/harness.html?gateway={quote(gateway)}&allowed={quote(allowed)}{extra}"


def salesforce_url(salesforce_origin: str, flex: str) -> str:
    """Salesforce's page framing the Flex page at `flex`."""
    return f"{salesforce_origin}/salesforce.html?flex={quote(flex)}"


def missing() -> str | None:
    """What a desk needs that this machine lacks (Playwright, the browser, the built bridge), else None."""
    from importlib.util import find_spec

    if find_spec("playwright") is None:
        return "Playwright is not installed (the `dev` extra)"
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing (`make chromium`)"
    if not BUNDLE.exists():
        return f"{BUNDLE.relative_to(ROOT)} is missing (`make bridge`)"
    return None
