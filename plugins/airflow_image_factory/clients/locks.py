"""The promotion lock for workers on several machines: a PostgreSQL advisory lock.

An ``flock`` file (:class:`PromotionLock`) only serialises the workers of
one machine. With PostgreSQL at hand, the lock is held there instead: ``pg_try_advisory_lock`` on a key
made from (registry, repository, branch), on a connection of its own that stays open while the
promotion runs. The server drops a session's advisory locks when the session ends, so a killed worker
frees the lock as soon as its connection closes.

:func:`promotion_lock` picks the lock from the ``promotion_lock`` setting; :class:`PostgresPromotionLock`
is a plain client (psycopg2 only, imported when the lock is taken).

The database comes from an Airflow Connection (``promotion_lock_database``), not from the worker's
``[database] sql_alchemy_conn``: Airflow 3 runs tasks with that setting replaced (the task SDK blocks
metadata database access from task code), and a remote worker may not have it at all. With a PostgreSQL
metadata database, that Connection names it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from airflow_image_factory.exceptions import PromotionLockTimeout, PromotionLockUnavailable, SettingsError

LOCK_MODES = ("auto", "postgres", "file")
# Prefixed, so the keys cannot meet another application's advisory locks on a shared database
# (Airflow's own are small integers).
_KEY_NAMESPACE = b"airflow-image-factory promotion lock\0"
_APPLICATION_NAME_BYTES = 63  # PostgreSQL keeps the first NAMEDATALEN - 1 bytes
# libpq parameters a Connection's extra may set for the lock's session.
_LIBPQ_EXTRAS = ("sslmode", "sslrootcert", "sslcert", "sslkey", "connect_timeout", "target_session_attrs")


def _gave_up(purpose: str) -> str:
    return "latest was not changed by this run" if purpose == "promotion" else f"this run's {purpose} did not start"


def default_lock_dir() -> str:
    return os.path.join(tempfile.gettempdir(), "airflow-image-factory-locks")


def lock_path(lock_dir: str, registry: str, repository: str, branch: str) -> str:
    """One lock file per (registry, repository, branch): readable name plus a hash against collisions."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{registry}/{repository}/{branch}")[:100]
    # Hashed with a separator no field can hold, so ("a/b", "c") and ("a", "b/c") get different locks.
    digest = hashlib.sha256("\0".join((registry, repository, branch)).encode()).hexdigest()[:12]
    return os.path.join(lock_dir or default_lock_dir(), f"{readable}-{digest}.lock")


class PromotionLock:
    """``flock(2)`` on a file, so two promotions of one branch never interleave their re-tags.

    Works for every worker process on one machine (and on a shared filesystem whose flock is
    coherent across machines; otherwise :class:`PostgresPromotionLock` holds it in PostgreSQL).
    The kernel drops the lock when the holder dies, so a killed worker never leaves it stuck.
    Waiting is polled so it can time out and tell who holds the lock.
    """

    def __init__(
        self, path: str, *, owner: str, timeout: float = 1800, poll: float = 1.0,
        on_wait: Callable[[str], None] | None = None, purpose: str = "promotion",
    ):
        self.path = path
        self.purpose = purpose
        self.name = path  # as the PostgreSQL lock (locks.py) names itself in messages
        self.owner = owner
        self.timeout = timeout
        self.poll = poll
        self.on_wait = on_wait
        self.waited = 0.0

    @contextlib.contextmanager
    def hold(self) -> Iterator[PromotionLock]:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            started = time.monotonic()
            told = False
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    holder = self._holder(fd)
                    if time.monotonic() - started > self.timeout:
                        raise PromotionLockTimeout(
                            f"{self.purpose} lock {self.path} is still held by {holder or 'another process'} after "
                            f"{self.timeout:.0f}s; {_gave_up(self.purpose)}"
                        ) from None
                    if not told and self.on_wait:
                        self.on_wait(f"waiting for {self.purpose} lock {self.path}, held by "
                                     f"{holder or 'another process'}")
                        told = True
                    time.sleep(self.poll)
            self.waited = time.monotonic() - started
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{self.owner} (pid {os.getpid()})\n".encode(), 0)
            try:
                yield self
            finally:
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @staticmethod
    def _holder(fd: int) -> str:
        with contextlib.suppress(OSError):
            return os.pread(fd, 300, 0).decode(errors="replace").strip()
        return ""



def advisory_key(registry: str, repository: str, branch: str) -> int:
    """The lock's 64-bit key: the same on every machine and Python (no ``hash()``), distinct per field.

    NUL separates the fields: ``/`` cannot, as a repository ``a/b`` with branch ``c`` would meet
    repository ``a`` with branch ``b/c``."""
    digest = hashlib.sha256(_KEY_NAMESPACE + "\0".join((registry, repository, branch)).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)  # the range of PostgreSQL's bigint


def choose_lock_mode(setting: str, *, connection_id: str, connection_exists: bool) -> str:
    """``postgres`` or ``file``. ``auto``: PostgreSQL when the Connection ``promotion_lock_database``
    exists, else the file lock. ``postgres`` without it is an error, never a silent file lock: that would
    let two machines promote one branch at once."""
    if setting not in LOCK_MODES:
        raise SettingsError(f"promotion_lock must be one of {', '.join(LOCK_MODES)}, got {setting!r}")
    if setting == "file":
        return "file"
    if connection_exists:
        return "postgres"
    if setting == "postgres":
        raise SettingsError(
            f"promotion_lock is postgres, but there is no Connection {connection_id or '(none named)'} "
            "(promotion_lock_database) to hold it in"
        )
    return "file"


class PostgresPromotionLock:
    """A session-level advisory lock, so two promotions of one branch never interleave their re-tags.

    ``connect`` holds psycopg2.connect's keyword arguments (a ``dsn`` and/or host, port, user, password,
    dbname); ``where`` says which database in messages, without credentials. Waiting is polled with
    ``pg_try_advisory_lock`` so it can time out and name the holder: the holding session's
    ``application_name`` is the owner.
    """

    def __init__(
        self, key: int, *, connect: Mapping[str, Any], where: str, owner: str, timeout: float = 1800,
        poll: float = 1.0, on_wait: Callable[[str], None] | None = None, label: str = "", purpose: str = "promotion",
    ):
        self.key = key
        self.purpose = purpose
        self.connect = dict(connect)
        self.owner = owner
        self.timeout = timeout
        self.poll = poll
        self.on_wait = on_wait
        self.waited = 0.0
        self.name = f"PostgreSQL advisory lock {key}{f' ({label})' if label else ''} on {where}"

    def _connect(self) -> Any:
        try:
            import psycopg2
        except ImportError as exc:
            raise PromotionLockUnavailable(
                "the PostgreSQL promotion lock needs psycopg2 (pip install 'airflow-image-factory[postgres]'), "
                "or set promotion_lock = \"file\" on a single machine"
            ) from exc
        owner = self.owner.encode()[:_APPLICATION_NAME_BYTES].decode(errors="ignore")
        try:
            # Client keepalives notice a dead server; the session settings below, a dead worker machine.
            conn = psycopg2.connect(**{"connect_timeout": 10, **self.connect}, application_name=owner,
                                    keepalives=1, keepalives_idle=30, keepalives_interval=10, keepalives_count=3)
        except psycopg2.Error as exc:
            raise PromotionLockUnavailable(f"cannot open {self.name}: {str(exc).strip()}") from None
        conn.autocommit = True  # no transaction stays open while the lock is held
        with conn.cursor() as cursor:
            # The server frees the lock of a worker whose machine vanished within about a minute, and no
            # idle timeout of the server's may end the session (and the lock) while the promotion runs.
            cursor.execute("SET tcp_keepalives_idle = 30; SET tcp_keepalives_interval = 10; "
                           "SET tcp_keepalives_count = 3")
            if conn.server_version >= 140000:
                cursor.execute("SET idle_session_timeout = 0")
        return conn

    @contextlib.contextmanager
    def hold(self) -> Iterator[PostgresPromotionLock]:
        conn = self._connect()
        try:
            with conn.cursor() as cursor:
                started = time.monotonic()
                told = False
                while True:
                    cursor.execute("SELECT pg_try_advisory_lock(%s)", (self.key,))
                    if cursor.fetchone()[0]:
                        break
                    holder = self._holder(cursor)
                    if time.monotonic() - started > self.timeout:
                        raise PromotionLockTimeout(
                            f"{self.purpose} lock {self.name} is still held by {holder or 'another session'} after "
                            f"{self.timeout:.0f}s; {_gave_up(self.purpose)}"
                        )
                    if not told and self.on_wait:
                        self.on_wait(f"waiting for {self.purpose} lock {self.name}, held by "
                                     f"{holder or 'another session'}")
                        told = True
                    time.sleep(self.poll)
                self.waited = time.monotonic() - started
            yield self
            self._release(conn)
        finally:
            conn.close()  # ends the session: the server drops the lock if the release did not run

    def _release(self, conn: Any) -> None:
        """Unlock after a promotion that went through. A lock no longer held means the session died on
        the way (a server restart): another run may have promoted meanwhile, so the task must not pass."""
        import psycopg2

        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
                released = cursor.fetchone()[0]
        except psycopg2.Error as exc:
            raise PromotionLockUnavailable(f"{self.name} was lost while promoting: {str(exc).strip()}") from None
        if not released:
            raise PromotionLockUnavailable(f"{self.name} was no longer held when the promotion ended")

    def _holder(self, cursor: Any) -> str:
        """Who holds the key now (pg_locks shows a bigint key as its high and low 32 bits)."""
        unsigned = self.key & 0xFFFF_FFFF_FFFF_FFFF
        cursor.execute(
            "SELECT a.application_name, a.pid, host(a.client_addr), a.backend_start "
            "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND l.classid::bigint = %s AND l.objid::bigint = %s",
            (unsigned >> 32, unsigned & 0xFFFF_FFFF),
        )
        row = cursor.fetchone()
        if row is None:
            return ""
        name, pid, address, since = row
        origin = f", from {address}" if address else ""
        connected = since.isoformat(timespec="seconds")
        return f"{name or 'an unnamed session'} (backend pid {pid}{origin}, connected {connected})"


# ----------------------------------------------------------------------------- choosing the lock in a task


def promotion_lock(
    settings: Any, *, registry: str, repository: str, branch: str, owner: str,
    find_connection: Callable[[str], Any | None], on_wait: Callable[[str], None] | None = None,
    purpose: str = "promotion",
) -> PromotionLock | PostgresPromotionLock:
    """The lock a promotion of (registry, repository, branch) holds, as the settings say. ``find_connection``
    looks an Airflow Connection up by id (None when nobody defined it); it is called at run time only.

    Other one-at-a-time publications take the same kind of lock under another ``purpose`` (named in its
    messages) and a key of their own in ``branch`` (the compiled UI: its content key)."""
    connection_id = settings.promotion_lock_database
    conn = None if settings.promotion_lock == "file" or not connection_id else find_connection(connection_id)
    mode = choose_lock_mode(settings.promotion_lock, connection_id=connection_id, connection_exists=conn is not None)
    if mode == "file":
        return PromotionLock(lock_path(settings.promotion_lock_dir, registry, repository, branch), owner=owner,
                             timeout=settings.promotion_lock_timeout, on_wait=on_wait, purpose=purpose)
    connect, where = connection_parameters(conn, connection_id)
    return PostgresPromotionLock(
        advisory_key(registry, repository, branch), connect=connect, where=where, owner=owner,
        timeout=settings.promotion_lock_timeout, on_wait=on_wait, label=f"{registry}/{repository} {branch}",
        purpose=purpose,
    )


def connection_parameters(conn: Any, connection_id: str) -> tuple[dict[str, Any], str]:
    """psycopg2 arguments from a ``postgres`` Airflow Connection, and a credential-free description."""
    if conn.conn_type not in ("postgres", "postgresql"):
        raise SettingsError(
            f"promotion_lock_database: Connection {connection_id} is of type {conn.conn_type!r}, not postgres"
        )
    extra = conn.extra_dejson or {}
    parameters = {
        "host": conn.host or "localhost",
        "port": conn.port or 5432,
        "user": conn.login or None,
        "password": conn.password or None,
        "dbname": conn.schema or None,
        **{key: extra[key] for key in _LIBPQ_EXTRAS if key in extra},
    }
    where = f"{parameters['host']}:{parameters['port']}/{conn.schema or '(default database)'} " \
            f"(Connection {connection_id})"
    return {k: v for k, v in parameters.items() if v is not None}, where
