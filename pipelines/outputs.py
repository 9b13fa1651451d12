"""Claiming an output location: the one rule every stage follows before it writes.

Each stage's output holds a record of what it is (a dataset's manifest, a training run's
config, a bulk job's identity). Running a stage again on the same output:
- with the same identity continues (or finds the work done);
- with a different identity, or into a location with files that are not ours, is refused
  unless `--overwrite`, which deletes what the stage owns there first.

While a job writes, it holds a lease on its output (`OUTPUT/_lease.json`, see `output_lease`),
so that a second identical command does not redo all the work beside it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from pipelines.storage import NotFound, Storage, absolute, basename, is_s3, join, parent
from s2s_core.errors import InputError, OutputError, S2SError

Differences = Callable[[dict, dict], list[str]]
"""(recorded identity, new identity) -> what differs, as short phrases; [] when the same."""


def differing_keys(old: dict, new: dict) -> list[str]:
    """The top-level keys whose values differ."""
    return [key for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


@dataclass(frozen=True)
class OutputKind:
    """How one stage's output is recognised and replaced."""

    what: str
    """What the output holds, for messages: 'dataset', 'training run', 'bulk job'."""
    record: str
    """The file (relative to the output) whose content is the identity."""
    owned: tuple[str, ...] = ()
    """Entries (relative names) the stage writes and `--overwrite` deletes; () means everything."""
    differences: Differences = differing_keys

    def is_owned(self, output: str, uri: str) -> bool:
        """Whether `uri` is one of the named entries (with owned=(), nothing is known to be ours
        until the record says so)."""
        return any(uri == join(output, name) or uri.startswith(join(output, name) + "/")
                                     for name in self.owned)


def check_output(storage: Storage, output: str, kind: OutputKind, identity: dict, overwrite: bool) -> dict | None:
    """Whether the stage may write to `output`: returns the recorded identity when it matches
    (continue or done), None when the output is new or may be replaced.

    Raises:
        OutputError: another identity or foreign files are there and `overwrite` is off.
    """
    storage.check_bucket(output)
    in_the_way = _file_in_the_way(storage, output)
    if in_the_way is not None:
        where = "is a file" if in_the_way == output else f"lies under the file {in_the_way}"
        raise OutputError(output, f"{where}: --output names a directory (or s3:// prefix) for the results; "
                                  "give a path that is not, and is not under, a file")
    try:
        recorded = storage.read_json(join(output, kind.record))
    except NotFound:
        recorded = None
    if recorded is None:
        foreign = [entry.uri for entry in _listing(storage, output)
                   if not kind.is_owned(output, entry.uri) and not _is_lease(output, entry.uri)]
        if foreign and not overwrite:
            raise OutputError(output, f"is not empty and holds no {kind.what} ({basename(foreign[0])}, ...); "
                                      "use another --output, or --overwrite to replace it")
        return None
    changed = kind.differences(recorded, identity)
    if not changed:
        return recorded
    if not overwrite:
        raise OutputError(output, f"holds a {kind.what} with a different {', '.join(changed[:5])}; "
                                  "use another --output, or --overwrite to replace it")
    return None


def claim_output(storage: Storage, output: str, kind: OutputKind, identity: dict, overwrite: bool,
                 write_record: bool = True, lease: Lease | None = None) -> dict | None:
    """`check_output`, then make room: unless the identity matches, delete what the stage owns
    there (leftovers of an unfinished run included). With `write_record`, record `identity`
    (a stage that writes its record last, like prepare's manifest, passes False). A `lease`
    held on the output is written again after the deletion (which may have taken it along).
    Returns the recorded identity when it matched, else None."""
    recorded = check_output(storage, output, kind, identity, overwrite)
    if recorded is None:
        for name in kind.owned or ("",):
            storage.delete(join(output, name) if name else output, recursive=True)
        if lease is not None:
            lease.renew()
    if write_record:
        storage.write_json(join(output, kind.record), identity)
    return recorded


def check_not_a_file(storage: Storage, output: str, holds: str) -> None:
    """A stage that writes a directory (of `holds`) refuses an existing file in its place, before any work.

    Raises:
        OutputError: `output` is a file.
    """
    try:
        storage.info(output)
    except NotFound:
        return
    raise OutputError(output, f"is a file: give a directory for {holds}")


def check_apart(inputs: list[str], output: str) -> None:
    """Refuse an output that is one of the inputs, lies inside one, or holds one: a rerun would
    read its own outputs (local paths and s3:// prefixes alike; URIs are compared absolute).

    Raises:
        OutputError: naming the output and the input it collides with.
    """
    out = _as_prefix(output)
    for uri in inputs:
        source = _as_prefix(uri.split("*", 1)[0] if "*" in uri else uri)  # a glob: its fixed part
        if out == source:
            raise OutputError(output, f"is also the input {uri}: give an --output of its own")
        if out.startswith(source):
            raise OutputError(output, f"is inside the input {uri}: a rerun would read its own outputs; "
                                      "give an --output outside it")
        if source.startswith(out):
            raise OutputError(output, f"holds the input {uri}: --overwrite would delete it; "
                                      "give an --output that does not contain the input")


def _as_prefix(uri: str) -> str:
    """`uri` absolute, with one trailing '/', so that prefix tests respect name boundaries."""
    return absolute(uri).rstrip("/") + "/"


def _is_lease(output: str, uri: str) -> bool:
    """The lease, or (locally) the temporary file of its next version being written."""
    name = basename(uri)
    return parent(uri) == output.rstrip("/") and (name == LEASE or name.startswith(f".{LEASE}."))


def _file_in_the_way(storage: Storage, output: str) -> str | None:
    """The file at `output` or, locally, at one of its parent directories; None if there is none."""
    uri = output
    while True:
        try:
            storage.info(uri)
            return uri
        except NotFound as missing:
            if missing.cause != "not found" or is_s3(uri) or parent(uri) in ("", uri):
                return None  # a directory (nothing above it is a file), or S3 (keys have no parents)
        uri = parent(uri)


def _listing(storage: Storage, output: str) -> list[Any]:
    try:
        return storage.list(output)
    except NotFound:
        return []


LEASE = "_lease.json"
LEASE_TTL_S = 120.0
"""How long a lease holds unless renewed: how long a job that died on ANOTHER host blocks a
rerun (on the same host a dead owner's lease is free at once). Expiry is compared with this
host's clock: hosts whose clocks differ by a good part of this would misjudge it."""
LEASE_RENEW_S = 30.0
"""How often a running job renews its lease: a few missed renewals (storage hiccups) are survived."""
LEASE_SETTLE_S = {"s3": 1.0, "local": 0.2}
"""How long a new lease must stand before it counts as taken (see `Lease.take`)."""


@dataclass
class Lease:
    """This process's hold on an output, recorded at OUTPUT/_lease.json: owner id, host, pid and
    expiry. Written through `Storage`, so it works the same locally and on S3."""

    storage: Storage
    output: str
    what: str
    """What holds it, for messages: 'bulk job'."""
    ttl_s: float = LEASE_TTL_S
    owner: str = field(default_factory=lambda: uuid.uuid4().hex)
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)

    @property
    def uri(self) -> str:
        return join(self.output, LEASE)

    def take(self) -> None:
        """Take the lease, or raise OutputError naming the job that holds it.

        S3 offers no create-if-absent through pyarrow, so a lease is taken by writing it, waiting
        LEASE_SETTLE_S and reading it back: of two jobs that both found the output free, the
        later write wins, and the earlier writer sees the other owner and gives up. The race that
        remains: if one job's read-then-write takes longer than the settle time (a stalled PUT),
        both can read back their own record and both run. They then write the same bytes (units
        are deterministic and committed one by one), so the cost is work done twice, unless one
        ran with --overwrite and deleted committed units that the other then writes again.
        """
        holder = self._holder()
        if holder is None:
            self._write()
            time.sleep(LEASE_SETTLE_S["s3" if is_s3(self.output) else "local"])
            holder = self._holder()
        if holder is not None:
            raise OutputError(self.output, _held_message(self.what, holder))

    def renew(self) -> bool:
        """Extend the lease; False (and nothing written) when another job holds it now."""
        if self._holder() is not None:
            return False
        self._write()
        return True

    def release(self) -> None:
        """Delete the lease if it is still ours."""
        record = self._read()
        if record is not None and record.get("owner") == self.owner:
            self.storage.delete(self.uri)

    def _write(self) -> None:
        now = time.time()
        self.storage.write_json(self.uri, {"owner": self.owner, "host": self.host, "pid": self.pid,
                                           "what": self.what, "renewed_at": _utc(now),
                                           "expires": now + self.ttl_s, "expires_at": _utc(now + self.ttl_s)})

    def _read(self) -> dict | None:
        try:
            record = self.storage.read_json(self.uri)
        except NotFound:
            return None
        except InputError:
            return None  # not JSON: not a lease (storage trouble is raised)
        return record if isinstance(record, dict) else None

    def _holder(self) -> dict | None:
        """The lease record when another job holds it (not expired, owner not known dead), else None."""
        record = self._read()
        if record is None or record.get("owner") == self.owner:
            return None
        expires = record.get("expires")
        if not isinstance(expires, (int, float)) or expires <= time.time():
            return None
        pid = record.get("pid")
        if record.get("host") == self.host and isinstance(pid, int) and not _process_alive(pid):
            return None  # its job died on this host (e.g. SIGKILL): no need to wait for the expiry
        return record


def _held_message(what: str, record: dict) -> str:
    left = max(0.0, float(record["expires"]) - time.time())
    return (f"another {what} is writing here (pid {record.get('pid')} on {record.get('host')}, lease "
            f"{str(record.get('owner'))[:8]}); its lease is renewed while it runs and expires at "
            f"{record.get('expires_at')} ({left:.0f} s) if it stops: wait for it to finish, or give another --output")


def _utc(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _process_alive(pid: int) -> bool:
    """Whether process `pid` of this host is running (a zombie, killed but not reaped, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True  # no /proc (not Linux): alive, as far as we can tell


@contextlib.contextmanager
def output_lease(storage: Storage, output: str, what: str) -> Iterator[Lease]:
    """Hold a lease on `output` for the duration of the block, renewed every LEASE_RENEW_S by a
    background thread; released at the end, however the block ends (a killed process's lease
    expires after LEASE_TTL_S, or at once for a rerun on the same host).

    Raises:
        OutputError: another job holds a live lease on `output` (naming it and the expiry).
    """
    lease = Lease(storage, output, what)
    lease.take()
    stop = threading.Event()
    renewer = threading.Thread(target=_keep_renewed, args=(lease, stop), name="s2s-output-lease", daemon=True)
    renewer.start()
    try:
        yield lease
    finally:
        stop.set()
        renewer.join(timeout=10)
        with contextlib.suppress(S2SError):  # storage down: the lease expires by itself
            lease.release()


def _keep_renewed(lease: Lease, stop: threading.Event) -> None:
    while not stop.wait(LEASE_RENEW_S):
        try:
            if not lease.renew():
                return  # another job took it (ours had expired): its outputs are the same bytes
        except S2SError:
            continue  # storage hiccup: the lease lasts LEASE_TTL_S, several renewals
