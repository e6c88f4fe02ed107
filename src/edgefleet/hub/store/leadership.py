"""Which hub process runs the controllers, when several share one PostgreSQL."""

from __future__ import annotations

import contextlib

from sqlalchemy import Connection, Engine, func, select

_LEADER_LOCK = 0x6564676566  # "edgef": the advisory lock the controller leader holds


class Leadership:
    """Which hub process runs the controllers.

    On PostgreSQL, several hub processes may share one database; the leader is the one holding a
    session advisory lock on a connection of its own. If that connection dies, the server drops
    the lock and another hub takes over. A SQLite file serves one hub, which always leads.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._conn: Connection | None = None

    def try_acquire(self) -> bool:
        """Take or keep the lead; False if another hub holds it or the database is away."""
        if self._engine.dialect.name != "postgresql":
            return True
        try:
            if self._conn is not None:
                self._conn.execute(select(1))  # still ours if the session still lives
                return True
            conn = self._engine.connect()
            held = conn.execute(select(func.pg_try_advisory_lock(_LEADER_LOCK))).scalar()
            conn.commit()
            if held:
                self._conn = conn
                return True
            conn.close()
            return False
        except Exception:
            self.release()
            return False

    def release(self) -> None:
        """Give up the lead (closing the session frees the lock)."""
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.invalidate()
            self._conn = None
