"""One writer per storage root: a lease taken by put-if-absent on the root, with an expiry.

The lease is a sequence of small JSON records under `<root>/_grasp_lease/`, one per
generation (`00000000000000000042.json`), written only with put-if-absent
(`objectstore.ObjectLocation.put_if_absent`: an exclusive create on local disks, a
conditional `If-None-Match` write on S3) — the same protocol Delta uses for its log, so it
needs no lock service and works wherever the tables do. The newest generation lists who
holds the root and until when. Taking the lease, renewing it (a heartbeat every third of
its time to live) and releasing it each write the next generation; of two writers racing
for one generation exactly one wins, and the other re-reads and retries. A holder that dies
stops renewing and its hold expires, so a crash never locks a root for good.

Holds are `exclusive` (a `grasp run`, `grasp select`, a stage writing whole tables) or
`shared` (steps writing disjoint partitions of one table, e.g. the shard runs of a backfill
on many workers: Delta commits those safely side by side). Shared holders exclude only
exclusive ones. Every commit checks the hold first (`commits.guarded_commits`), so a second
writer waits or stops with a message naming the holder, and a writer that lost its hold
commits nothing. Steps of one `grasp run` share its hold (its owner id is a run tag).
"""

from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from .commits import guarded_commits
from .objectstore import ObjectLocation
from .storage import storage_options_from_env

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
        # a view of a hold taken elsewhere (a `grasp run` step checking the CLI's lease) names no
        # purpose: renewing keeps the holder's own, so a refused writer still reads "grasp run ..."
        self._keeps_purpose = not purpose
        self.ttl = float(ttl if ttl is not None else os.environ.get("GRASP_LEASE_TTL", DEFAULT_TTL_SECONDS))
        options = storage_options if storage_options is not None else storage_options_from_env(root)
        self.location = ObjectLocation(f"{root.rstrip('/')}/{LEASE_FOLDER}", options)
        self._heartbeat: threading.Thread | None = None
        self._stop = threading.Event()

    def __repr__(self) -> str:
        return f"RootLease({self.root!r}, owner={self.owner!r})"

    # ------------------------------------------------------------------ state

    def latest(self) -> tuple[int, dict]:
        """(newest generation, its record {"holders": {owner: hold}}), (-1, no holders) when never leased."""
        names = [n for n, _ in self.location.list() if n.endswith(".json") and n[:-5].isdigit()]
        if not names:
            return -1, {"holders": {}}
        name = max(names)
        data = self.location.get(name)
        return int(name[:-5]), (json.loads(data) if data else {"holders": {}})

    def holders(self) -> dict[str, dict]:
        """Every live hold on the root now: {owner: {mode, purpose, host, pid, at, expires_at}}."""
        return _live(self.latest()[1])

    # ------------------------------------------------------------------ taking, keeping, giving back

    def ensure(self, mode: str | None = None) -> None:
        """Makes sure this owner holds the root (renewing its hold, or taking a free one) in `mode`
        ("exclusive" or "shared"; default: the mode it holds, else exclusive); raises LeaseHeld naming
        the holder when another writer's hold excludes it. Used before every commit."""
        for attempt in range(50):  # a generation lost to a racing writer is re-read
            generation, record = self.latest()
            live = _live(record)
            mode = mode or live.get(self.owner, {}).get("mode", "exclusive")
            others = {o: h for o, h in live.items() if o != self.owner}
            blocking = [h for h in others.values() if mode == "exclusive" or h.get("mode") == "exclusive"]
            if blocking:
                raise LeaseHeld(self._held_message(blocking[0]))
            hold = self._hold(mode)
            if self._keeps_purpose and self.owner in live:
                hold["purpose"] = live[self.owner].get("purpose", hold["purpose"])
            holders = {**others, self.owner: hold}
            if self._write(generation + 1, holders):
                return
            time.sleep(random.uniform(0.0, 0.05) * (1 + attempt % 5))
        raise LeaseHeld(f"storage root {self.root}: could not write the writer lease after 50 racing attempts")

    def acquire(self, wait: float = 0.0, poll: float = 1.0, mode: str = "exclusive") -> RootLease:
        """Takes the lease in `mode`, waiting up to `wait` seconds for the holder to finish; returns
        self, or raises LeaseHeld naming the holder."""
        deadline = time.monotonic() + wait
        while True:
            try:
                self.ensure(mode)
                return self
            except LeaseHeld:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(min(poll, max(0.0, deadline - time.monotonic())))

    def release(self) -> None:
        """Gives this owner's hold back and stops the heartbeat."""
        self.stop_heartbeat()
        for _ in range(50):
            generation, record = self.latest()
            live = _live(record)
            if self.owner not in live:
                return
            if self._write(generation + 1, {o: h for o, h in live.items() if o != self.owner}):
                return

    def _hold(self, mode: str) -> dict:
        now = time.time()
        return {"mode": mode, "purpose": self.purpose, "host": socket.gethostname(), "pid": os.getpid(),
                "at": now, "expires_at": now + self.ttl}

    def _write(self, generation: int, holders: dict) -> bool:
        """Writes generation `generation` if nobody has; True when it is then the newest one (an old
        generation already cleaned up does not count)."""
        data = json.dumps({"holders": holders}, sort_keys=True).encode()
        if self.location.put_if_absent(f"{generation:020d}.json", data) and self.latest()[0] == generation:
            self._forget_before(generation)
            return True
        return False

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
    def held(self, wait: float = 0.0, mode: str = "exclusive") -> Iterator[RootLease]:
        """Holds the lease for the block (heartbeat running, every commit checked), then releases it."""
        self.acquire(wait, mode=mode)
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

    def _held_message(self, hold: dict) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(hold.get("at", 0)))
        left = hold.get("expires_at", 0) - time.time()
        return (f"storage root {self.root} is in use by another writer: {hold.get('purpose')} "
                f"(pid {hold.get('pid')} on {hold.get('host')}, lease renewed {since}, expires in {left:.0f} s "
                "unless renewed). Nothing was written. Wait for it to finish (grasp --wait SECONDS, or "
                "GRASP_LEASE_WAIT for Dagster steps), or use another root")

    def _forget_before(self, generation: int) -> None:
        old = generation - KEEP_GENERATIONS
        if old >= 0 and generation % KEEP_GENERATIONS == 0:
            for name, _ in self.location.list():
                if name.endswith(".json") and name[:-5].isdigit() and int(name[:-5]) < old:
                    self.location.delete(name)


def _live(record: dict) -> dict[str, dict]:
    """The holds of a lease record that have not expired."""
    now = time.time()
    return {o: h for o, h in (record or {}).get("holders", {}).items() if h.get("expires_at", 0) > now}
