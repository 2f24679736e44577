"""A small HashiCorp Vault KV version 2 HTTP server for tests (no Vault is installable here).

It speaks the subset of Vault's HTTP API that hvac's ``secrets.kv.v2`` calls use, with Vault's JSON shapes:

- ``POST|PUT /v1/<mount>/data/<path>``: body ``{"data": {...}, "options": {"cas": n}}``; returns the new version's
  metadata. A check-and-set mismatch is a 400 with Vault's own text.
- ``GET /v1/<mount>/data/<path>[?version=N]``: ``{"data": {"data": {...}, "metadata": {...}}}``.
- ``GET /v1/<mount>/metadata/<path>``: ``current_version``, ``versions`` map, ...; ``?list=true`` lists instead.
- ``LIST /v1/<mount>/metadata/<path>``: ``{"data": {"keys": [...]}}`` (folders end in ``/``).
- ``DELETE /v1/<mount>/metadata/<path>``: every version and the metadata (204).
- ``GET /v1/sys/health``: unauthenticated, for readiness checks.

Every other request needs ``X-Vault-Token`` equal to the server's token, else 403 ``{"errors": ["permission denied"]}``
(what Vault answers for a bad token). Unknown secrets are 404 ``{"errors": []}``, unknown mounts 404 with Vault's
"no handler for route" text. Only the mounts given are KV v2 engines. State is in memory.

Use :func:`start` (a background thread, stopped by ``server.stop()``) or run ``python tests/vault_server.py`` to
serve on a free port and print its address.
"""

from __future__ import annotations

import json
import secrets
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

CAS_MISMATCH = "check-and-set parameter did not match the current version"


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class _Version:
    data: dict[str, Any]
    created_time: str = field(default_factory=_now)
    deletion_time: str = ""
    destroyed: bool = False

    def metadata(self, number: int) -> dict[str, Any]:
        return {
            "created_time": self.created_time,
            "custom_metadata": None,
            "deletion_time": self.deletion_time,
            "destroyed": self.destroyed,
            "version": number,
        }


@dataclass
class _Secret:
    versions: dict[int, _Version] = field(default_factory=dict)
    created_time: str = field(default_factory=_now)
    updated_time: str = field(default_factory=_now)

    @property
    def current(self) -> int:
        return max(self.versions, default=0)


class _State:
    def __init__(self, token: str, mounts: tuple[str, ...]) -> None:
        self.token = token
        self.mounts = mounts
        self.secrets: dict[tuple[str, str], _Secret] = {}
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request, for tests


class _Handler(BaseHTTPRequestHandler):
    server_version = "FakeVault/1.0"
    protocol_version = "HTTP/1.1"

    @property
    def state(self) -> _State:
        return self.server.state  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's signature
        pass  # quiet: tests read self.state.requests instead

    # --- responses ------------------------------------------------------------------------------------------------
    def _send(self, status: int, body: dict[str, Any] | None = None) -> None:
        payload = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Cache-Control", "no-store")
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    def _ok(self, data: dict[str, Any]) -> None:
        self._send(200, {
            "request_id": str(uuid.uuid4()),
            "lease_id": "",
            "renewable": False,
            "lease_duration": 0,
            "data": data,
            "wrap_info": None,
            "warnings": None,
            "auth": None,
            "mount_type": "kv",
        })

    def _error(self, status: int, *errors: str) -> None:
        self._send(status, {"errors": list(errors)})

    # --- dispatch -------------------------------------------------------------------------------------------------
    def _body(self) -> dict[str, Any] | None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return {}
        try:
            body = json.loads(raw)
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        query = parse_qs(split.query)
        path = split.path
        while "//" in path:
            path = path.replace("//", "/")
        self.state.requests.append((method, path))
        body = self._body()  # always drain the body: the connection is kept alive
        if body is None and method in ("POST", "PUT"):
            return self._error(400, "failed to parse JSON input")
        if path == "/v1/sys/health" and method == "GET":
            return self._ok_raw({"initialized": True, "sealed": False, "standby": False, "version": "1.15.0-fake"})
        if self.headers.get("X-Vault-Token") != self.state.token:
            return self._error(403, "permission denied")
        if not path.startswith("/v1/"):
            return self._error(404)
        rest = path[len("/v1/"):].strip("/")
        for mount in self.state.mounts:
            prefix = mount + "/"
            if rest.startswith(prefix):
                kind, _, secret_path = rest[len(prefix):].partition("/")
                return self._kv(method, mount, kind, secret_path.strip("/"), query, body or {})
        return self._error(404, f'no handler for route "{rest}". route entry not found.')

    def _ok_raw(self, body: dict[str, Any]) -> None:
        self._send(200, body)

    def _kv(self, method: str, mount: str, kind: str, path: str, query: dict[str, list[str]],
            body: dict[str, Any]) -> None:
        if method == "GET" and query.get("list", [""])[0] == "true":
            method = "LIST"
        with self.state.lock:
            if kind == "data" and path:
                if method in ("POST", "PUT"):
                    return self._write(mount, path, body)
                if method == "GET":
                    return self._read(mount, path, query)
            if kind == "metadata":
                if method == "LIST":
                    return self._list(mount, path)
                if method == "GET" and path:
                    return self._read_metadata(mount, path)
                if method == "DELETE" and path:
                    self.state.secrets.pop((mount, path), None)
                    return self._send(204)
        return self._error(405, "unsupported operation")

    # --- KV v2 ----------------------------------------------------------------------------------------------------
    def _write(self, mount: str, path: str, body: dict[str, Any]) -> None:
        data = body.get("data")
        if not isinstance(data, dict):
            return self._error(400, "no data provided")
        options = body.get("options") or {}
        secret = self.state.secrets.get((mount, path))
        current = secret.current if secret else 0
        cas = options.get("cas")
        if cas is not None and (not isinstance(cas, int) or cas != current):
            return self._error(400, CAS_MISMATCH)
        if secret is None:
            secret = self.state.secrets[(mount, path)] = _Secret()
        number = current + 1
        secret.versions[number] = version = _Version(data=dict(data))
        secret.updated_time = version.created_time
        return self._ok(version.metadata(number))

    def _read(self, mount: str, path: str, query: dict[str, list[str]]) -> None:
        secret = self.state.secrets.get((mount, path))
        if secret is None:
            return self._error(404)
        raw = query.get("version", ["0"])[0]
        try:
            number = int(raw)
        except ValueError:
            return self._error(400, f"invalid version: {raw}")
        number = number or secret.current
        version = secret.versions.get(number)
        if version is None:
            return self._error(404)
        if version.deletion_time or version.destroyed:
            # Vault answers 404 but still includes the version's metadata
            return self._send(404, {"data": {"data": None, "metadata": version.metadata(number)}})
        return self._ok({"data": dict(version.data), "metadata": version.metadata(number)})

    def _read_metadata(self, mount: str, path: str) -> None:
        secret = self.state.secrets.get((mount, path))
        if secret is None:
            return self._error(404)
        versions = {
            str(n): {"created_time": v.created_time, "deletion_time": v.deletion_time, "destroyed": v.destroyed}
            for n, v in sorted(secret.versions.items())
        }
        return self._ok({
            "cas_required": False,
            "created_time": secret.created_time,
            "current_version": secret.current,
            "custom_metadata": None,
            "delete_version_after": "0s",
            "max_versions": 0,
            "oldest_version": min(secret.versions, default=0),
            "updated_time": secret.updated_time,
            "versions": versions,
        })

    def _list(self, mount: str, path: str) -> None:
        prefix = f"{path}/" if path else ""
        keys: set[str] = set()
        for m, p in self.state.secrets:
            if m == mount and p.startswith(prefix):
                head, sep, _ = p[len(prefix):].partition("/")
                keys.add(head + sep)
        if not keys:
            return self._error(404)
        return self._ok({"keys": sorted(keys)})

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def do_LIST(self) -> None:  # noqa: N802
        self._dispatch("LIST")


class VaultServer:
    """A running fake Vault: ``url``, ``token``, ``requests`` (method and path of each request), ``stop()``."""

    def __init__(self, token: str | None = None, mounts: tuple[str, ...] = ("secret",)) -> None:
        self.token = token or f"hvs.{secrets.token_urlsafe(18)}"
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.state = _State(self.token, mounts)  # type: ignore[attr-defined]
        host, port = self._httpd.server_address[:2]
        self.url = f"http://{host}:{port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-vault", daemon=True)

    @property
    def requests(self) -> list[tuple[str, str]]:
        return self._httpd.state.requests  # type: ignore[attr-defined]

    def start(self) -> VaultServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> VaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start(token: str | None = None, mounts: tuple[str, ...] = ("secret",)) -> VaultServer:
    """Start a fake Vault on 127.0.0.1 on a free port, in a background thread."""
    return VaultServer(token, mounts).start()


if __name__ == "__main__":
    server = VaultServer()
    print(f"VAULT_ADDR={server.url}\nVAULT_TOKEN={server.token}", flush=True)
    try:
        server._httpd.serve_forever()
    except KeyboardInterrupt:
        pass
