"""One writer per storage root: a lease taken by put-if-absent on the root, with an expiry.

The lease is a sequence of small JSON records under `<root>/_grasp_lease/`, one per
generation (`00000000000000000042.json`), written only with put-if-absent
(`objectstore.ObjectLocation.put_if_absent`: an exclusive create on local disks, a
conditional `If-None-Match` write on S3) — the same protocol Delta uses for its log, so it
needs no lock service and works wherever the tables do. The newest generation says who
holds the root and until when. Taking the lease, renewing it (a heartbeat every third of
its time to live) and releasing it each write the next generation; of two writers racing
for one generation exactly one wins. A holder that dies stops renewing and its lease
expires, so a crash never locks a root for good.

Writers (`grasp run`, `grasp select`, `grasp mixture`, every Dagster step) hold the lease
while they write, and every commit checks it first (`storage.guarded_commits`), so a second
writer waits or stops with a message naming the holder, and a writer that lost its lease
commits nothing. Steps of one `grasp run` share its lease (its owner id is a run tag).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from typing import Iterator

from .objectstore import ObjectLocation
from .storage import guarded_commits, storage_options_from_env

LEASE_FOLDER = "_grasp_lease"
DEFAULT_TTL_SECONDS = 60.0
KEEP_GENERATIONS = 20  # older records are deleted (best effort): the newest one is the state


class LeaseHeld(RuntimeError):
    """Another writer holds the storage root; nothing was written."""


class RootLease:
    """The writer lease of one storage root, for one `owner` (e.g. `grasp-run:<uuid>`)."""

    def __init__(self, root: str, owner: str | None = None, purpose: str = "", ttl: float | None = None,
                 storage_options: dict | None = None):
        self.root = root
        self.owner = owner or f"writer:{uuid.uuid4().hex[:12]}"
        self.purpose = purpose or self.owner
        self.ttl = float(ttl if ttl is not None else os.environ.get("GRASP_LEASE_TTL", DEFAULT_TTL_SECONDS))
        options = storage_options if storage_options is not None else storage_options_from_env(root)
        self.location = ObjectLocation(f"{root.rstrip('/')}/{LEASE_FOLDER}", options)
        self._heartbeat: threading.Thread | None = None
        self._stop = threading.Event()

    def __repr__(self) -> str:
        return f"RootLease({self.root!r}, owner={self.owner!r})"

    # ------------------------------------------------------------------ state

    def latest(self) -> tuple[int, dict | None]:
        """(newest generation, its record), (-1, None) when the root was never leased."""
        names = [n for n, _ in self.location.list() if n.endswith(".json") and n[:-5].isdigit()]
        if not names:
            return -1, None
        name = max(names)
        data = self.location.get(name)
        return int(name[:-5]), (json.loads(data) if data else None)

    def holder(self) -> dict | None:
        """The record of whoever holds the root now (None when it is free: released or expired)."""
        _, record = self.latest()
        if record is None or record.get("state") != "held" or record.get("expires_at", 0) <= time.time():
            return None
        return record

    def _record(self, state: str) -> bytes:
        now = time.time()
        return json.dumps({"owner": self.owner, "purpose": self.purpose, "host": socket.gethostname(),
                           "pid": os.getpid(), "state": state, "at": now, "expires_at": now + self.ttl}).encode()

    # ------------------------------------------------------------------ taking, keeping, giving back

    def ensure(self, root: str | None = None) -> None:
        """Makes sure this owner holds the root: renews its lease, or takes a free one; raises LeaseHeld
        naming the holder when another writer has it. Used before every commit."""
        for _ in range(20):  # a generation lost to a racing writer is re-read; 20 races in a row is a bug
            generation, record = self.latest()
            if record is not None and record.get("state") == "held" and record.get("owner") != self.owner \
                    and record.get("expires_at", 0) > time.time():
                raise LeaseHeld(self._held_message(record))
            if self.location.put_if_absent(f"{generation + 1:020d}.json", self._record("held")) \
                    and self.latest()[0] == generation + 1:  # (not an old generation already cleaned up)
                self._forget_before(generation + 1)
                return
        raise LeaseHeld(f"storage root {self.root}: could not take the writer lease after 20 racing attempts")

    def acquire(self, wait: float = 0.0, poll: float = 1.0) -> "RootLease":
        """Takes the lease, waiting up to `wait` seconds for the holder to finish; returns self, or
        raises LeaseHeld naming the holder."""
        deadline = time.monotonic() + wait
        while True:
            try:
                self.ensure()
                return self
            except LeaseHeld:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(min(poll, max(0.0, deadline - time.monotonic())))

    def release(self) -> None:
        """Gives the lease back (if this owner still holds it) and stops the heartbeat."""
        self.stop_heartbeat()
        generation, record = self.latest()
        if record is not None and record.get("owner") == self.owner and record.get("state") == "held":
            self.location.put_if_absent(f"{generation + 1:020d}.json", self._record("released"))

    def start_heartbeat(self) -> None:
        """Renews the lease every third of its time to live, in a daemon thread, until released."""
        self._stop.clear()

        def beat():
            while not self._stop.wait(self.ttl / 3):
                try:
                    self.ensure()
                except Exception:  # lost or unreachable: the next commit's check says so by name
                    pass

        self._heartbeat = threading.Thread(target=beat, name=f"lease-heartbeat-{self.owner}", daemon=True)
        self._heartbeat.start()

    def stop_heartbeat(self) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=5)
            self._heartbeat = None

    @contextmanager
    def held(self, wait: float = 0.0) -> Iterator["RootLease"]:
        """Holds the lease for the block (heartbeat running, every commit checked), then releases it."""
        self.acquire(wait)
        self.start_heartbeat()
        try:
            with self.guarding():
                yield self
        finally:
            self.release()

    @contextmanager
    def guarding(self) -> Iterator[None]:
        """Within the block, every Delta commit to this root first checks that this owner holds it."""
        def guard(root: str) -> None:
            if root.rstrip("/") == self.root.rstrip("/"):
                self.ensure()

        with guarded_commits(guard):
            yield

    # ------------------------------------------------------------------ helpers

    def _held_message(self, record: dict) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.get("at", 0)))
        left = record.get("expires_at", 0) - time.time()
        return (f"storage root {self.root} is in use by another writer: {record.get('purpose') or record.get('owner')} "
                f"(pid {record.get('pid')} on {record.get('host')}, lease renewed {since}, expires in {left:.0f} s "
                "unless renewed). Nothing was written. Wait for it to finish (grasp --wait SECONDS, or "
                "GRASP_LEASE_WAIT for Dagster steps), or use another root")

    def _forget_before(self, generation: int) -> None:
        old = generation - KEEP_GENERATIONS
        if old >= 0 and generation % KEEP_GENERATIONS == 0:
            for name, _ in self.location.list():
                if name.endswith(".json") and name[:-5].isdigit() and int(name[:-5]) < old:
                    self.location.delete(name)
