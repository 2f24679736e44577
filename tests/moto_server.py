"""A local S3 for tests and benchmarks: moto's server as a subprocess on 127.0.0.1, stopped by PID afterwards.

    from tests.moto_server import moto_s3          # in a test module: a module-scoped fixture
    with running_moto_server() as endpoint: ...    # anywhere else (benchmarks)

The fixture yields the endpoint URL (``http://127.0.0.1:<port>``); ``s3_env`` sets the environment s3fs reads
(``AWS_ENDPOINT_URL``, dummy ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, a region) for one test.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

#: the environment a client of the moto server needs (values are dummies: moto accepts any credentials)
DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _command(port: int) -> list[str]:
    script = Path(sys.executable).with_name("moto_server")
    if script.exists():
        return [str(script), "-H", "127.0.0.1", "-p", str(port)]
    found = shutil.which("moto_server")
    if found:
        return [found, "-H", "127.0.0.1", "-p", str(port)]
    return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server's process group by PID and wait until it is gone."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


@contextmanager
def running_moto_server(timeout: float = 30.0) -> Iterator[str]:
    """Start ``moto_server`` on a free port of 127.0.0.1, wait until it answers, yield its URL, stop it."""
    port = _free_port()
    log = tempfile.TemporaryFile()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = subprocess.Popen(_command(port), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"moto_server exited ({proc.returncode}):\n{log.read().decode(errors='replace')}")
            try:
                with urllib.request.urlopen(endpoint + "/moto-api/", timeout=1):
                    break
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not answer on {endpoint} within {timeout:.0f} s") from None
                time.sleep(0.1)
        yield endpoint
    finally:
        _stop(proc)
        log.close()


def reset(endpoint: str) -> None:
    """Forget every bucket and object (moto's reset API)."""
    urllib.request.urlopen(urllib.request.Request(endpoint + "/moto-api/reset", method="POST"), timeout=10).close()


@pytest.fixture(scope="module")
def moto_s3() -> Iterator[str]:
    """A moto S3 server for the test module: its endpoint URL."""
    with running_moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_env(moto_s3: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The environment s3fs reads pointed at the moto server (dummy credentials); yields the endpoint URL."""
    for key, value in DUMMY_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_s3)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # an instance cached under another endpoint must not be reused
    return moto_s3
