"""One writer per dataset: a lease in MongoDB with an owner and an expiry.

Every multi-step change this plugin makes to a dataset (a run's write-back, a comparison
with confident learning, the review desk's cutoff and relabels, deleting or renaming a
run) runs while its process holds the dataset's lease, and so does the repair of what a
killed writer left behind. FiftyOne saves a dataset's document (its field declarations,
saved views and runs) whole from the copy a process holds in memory, so two processes
writing at once lose each other's declarations; under the lease the holder reloads the
dataset first and nobody else writes.

The lease is one document of the collection ``sei.leases`` in FiftyOne's database, keyed
by the dataset's sample collection, holding an owner token (a random id per holder, never
a pid), the holder's host and pid (for messages only) and an expiry set from the
server's clock. A thread renews it every ``LEASE_TTL_S / 4`` seconds while it is held,
so a live writer is never overtaken; a dead writer's lease lapses after ``LEASE_TTL_S``
seconds (at once when its pid no longer runs on this host). A second writer waits, saying
whom it waits for, and raises :class:`DatasetBusyError` after ``wait`` seconds
(``SEI_FIFTYONE_LEASE_WAIT``, default 600). Before each step that switches data in, the
holder checks it still holds the lease (:meth:`Lease.check`), so a writer that was
paused past its expiry stops instead of writing over a newer one.

Cost: one small document per dataset being written, one update every few seconds.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import socket
import threading
import time
import uuid

import pymongo.errors

from sei.process import pid_alive

logger = logging.getLogger(__name__)

LEASE_COLLECTION = "sei.leases"
LEASE_TTL_S = 60.0
WAIT_ENV = "SEI_FIFTYONE_LEASE_WAIT"
DEFAULT_WAIT_S = 600.0
_POLL_S = 0.5


class DatasetBusyError(RuntimeError):
    """Another process holds the dataset's write lease (and kept it for the whole wait)."""


class LeaseLostError(RuntimeError):
    """This process no longer holds the write lease it took (paused past its expiry)."""


def _collection():
    import fiftyone.core.odm as foo

    return foo.get_db_conn()[LEASE_COLLECTION]


def _default_wait():
    value = os.environ.get(WAIT_ENV)
    if value is None:
        return DEFAULT_WAIT_S
    try:
        wait = float(value)
    except ValueError:
        raise ValueError(f"{WAIT_ENV} must be a number of seconds, got {value!r}") from None
    if not wait >= 0:
        raise ValueError(f"{WAIT_ENV} must be a number of seconds >= 0, got {value!r}")
    return wait


class Lease:
    """The write lease of one dataset, held by this process (see the module docstring)."""

    def __init__(self, name, ttl=LEASE_TTL_S):
        self.name = name  # the dataset's sample collection name
        self.ttl = float(ttl)
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread = None
        self._lost = False

    # ------------------------------------------------------------------ taking and giving back
    def _try_take(self):
        coll = _collection()
        ttl_ms = int(self.ttl * 1000)
        stamp = {"owner": self.token, "host": socket.gethostname(), "pid": os.getpid()}
        try:  # free: create it (the expiry is then set from the server's clock)
            coll.insert_one({"_id": self.name, **stamp, "expires": datetime.datetime.utcnow()})
            return self._renew()
        except pymongo.errors.DuplicateKeyError:
            pass
        # held: take it over only when its expiry passed (or it is already ours)
        res = coll.update_one(
            {"_id": self.name, "$or": [{"owner": self.token}, {"$expr": {"$lt": ["$expires", "$$NOW"]}}]},
            [{"$set": {**stamp, "expires": {"$add": ["$$NOW", ttl_ms]}}}])
        return res.matched_count == 1

    def _drop_if_dead(self, doc):
        """Free a lease whose holder ran on this host and is gone (no need to wait for expiry)."""
        if doc is None or doc.get("host") != socket.gethostname():
            return False
        pid = int(doc.get("pid", -1))
        if pid == os.getpid() or pid_alive(pid):
            return False  # alive (or a reused pid: then the expiry decides)
        return _collection().delete_one({"_id": self.name, "owner": doc.get("owner")}).deleted_count == 1

    def acquire(self, wait=None, *, label=""):
        """Take the lease, waiting up to ``wait`` seconds; raises :class:`DatasetBusyError`."""
        wait = _default_wait() if wait is None else float(wait)
        deadline = time.monotonic() + wait
        told = False
        while not self._try_take():
            doc = _collection().find_one({"_id": self.name})
            if self._drop_if_dead(doc):
                continue
            who = "another process" if doc is None else f"process {doc.get('pid')} on host {doc.get('host')}"
            if time.monotonic() >= deadline:
                raise DatasetBusyError(
                    f"Dataset{label} is being written by {who} (an SEI run, comparison or review); waited "
                    f"{wait:.0f} s. Retry when it has finished, or wait longer ({WAIT_ENV}=<seconds>). A "
                    f"writer that was killed frees the dataset within {self.ttl:.0f} s")
            if not told:
                logger.warning("Dataset%s is being written by %s; waiting up to %.0f s for it to finish",
                               label, who, wait)
                told = True
            time.sleep(_POLL_S)
        self._stop.clear()
        self._thread = threading.Thread(target=self._renew_loop, name=f"sei-lease-{self.name}", daemon=True)
        self._thread.start()
        return self

    def _renew(self):
        ttl_ms = int(self.ttl * 1000)
        res = _collection().update_one({"_id": self.name, "owner": self.token},
                                       [{"$set": {"expires": {"$add": ["$$NOW", ttl_ms]}}}])
        if res.matched_count != 1:
            self._lost = True
        return not self._lost

    def _renew_loop(self):
        while not self._stop.wait(self.ttl / 4):
            try:
                if not self._renew():
                    return
            except Exception:  # the database is unreachable for a moment: try again
                logger.debug("renewing the lease of %s failed", self.name, exc_info=True)

    def check(self):
        """Renew now; raise :class:`LeaseLostError` if another writer took over meanwhile."""
        if self._lost or not self._renew():
            raise LeaseLostError(
                "This process lost the dataset's write lease (it was paused longer than "
                f"{self.ttl:.0f} s and another writer took over); nothing more is written. Run again")

    def release(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with contextlib.suppress(Exception):
            _collection().delete_one({"_id": self.name, "owner": self.token})


# -------------------------------------------------------------------------- per process
_HELD = {}  # (sample collection name, thread id) -> Lease: a key is only ever touched by its own thread


def _key(dataset):
    return dataset._sample_collection_name, threading.get_ident()


def held(dataset):
    """This thread's lease on the dataset, or None."""
    return _HELD.get(_key(dataset))


@contextlib.contextmanager
def writing(dataset, wait=None):
    """Hold the dataset's write lease for the block (re-entrant within a thread; another
    thread of the process waits like another process).

    On taking it, the dataset is reloaded, so the block sees every declaration the
    previous writer made. Yields the :class:`Lease`.
    """
    key = _key(dataset)
    if key in _HELD:  # re-entered: the outermost block gives the lease back
        yield _HELD[key]
        return
    lease = Lease(key[0]).acquire(wait, label=f" '{dataset.name}'")
    _HELD[key] = lease
    try:
        dataset.reload()
        yield lease
    finally:
        _HELD.pop(key, None)
        lease.release()
