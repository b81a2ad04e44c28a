"""TLS client contexts built once per process and CA file, shared by every connection that trusts that CA.

Creating an `ssl.SSLContext` per connection re-reads the CA file each time, and doing it from many threads while
others are mid-handshake has crashed OpenSSL 3.0 inside `SSL_CTX_new` on these machines. One context, made once and
then only read, is cheaper and keeps context creation off the hot path.
"""

from __future__ import annotations

import ssl
import threading
from typing import Any

import certifi
from requests.adapters import HTTPAdapter

_lock = threading.Lock()
_contexts: dict[str, ssl.SSLContext] = {}


def client_context(cafile: str | None = None) -> ssl.SSLContext:
    """A verifying client context trusting `cafile` (certifi's bundle when None)."""
    path = cafile or certifi.where()
    with _lock:
        context = _contexts.get(path)
        if context is None:
            context = _contexts[path] = ssl.create_default_context(cafile=path)
        return context


class SharedContextAdapter(HTTPAdapter):
    """A requests adapter that verifies with one shared context instead of loading the CA file per connection."""

    def __init__(self, context: ssl.SSLContext, **kwargs: Any) -> None:
        self._ssl_context = context
        super().__init__(**kwargs)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        pool_kwargs["ssl_context"] = self._ssl_context
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)

    def build_connection_pool_key_attributes(self, request, verify, cert=None):
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        # The shared context already trusts the CA; passing the file again would reload it into that context.
        pool_kwargs.pop("ca_certs", None)
        pool_kwargs.pop("ca_cert_dir", None)
        return host_params, pool_kwargs

    def cert_verify(self, conn, url, verify, cert) -> None:
        super().cert_verify(conn, url, verify, cert)
        conn.ca_certs = None
        conn.ca_cert_dir = None
