"""Conversations that survive a restart: one SQLite file in WAL mode, one row per session.

A session's state is the chat session's plain data (`ChatSession.state()`) as JSON. Every write
is its own committed transaction, so a server killed at any moment (SIGKILL included) restarts
with every answered turn. A turn of a stored session only updates its row: a session deleted while
the turn ran stays deleted. The store keeps the `max_sessions` most recently used sessions (OpenAI
clients start a new one with every request that has no `session_id`); older ones are dropped.
"""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
import threading
import time
from pathlib import Path

from itemlm.errors import InputError

SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class SessionStore:
    def __init__(self, path: str | Path, max_sessions: int = 10_000):
        if max_sessions < 1:
            raise InputError(f"--max-sessions must be at least 1, got {max_sessions}")
        self.path = Path(path)
        self.max_sessions = max_sessions
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InputError(f"cannot create the session database's folder ({error.strerror})", path=self.path.parent) from None
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: nothing committed is lost when the process dies
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, state TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL)"
            )
            self._db.execute("CREATE INDEX IF NOT EXISTS sessions_by_use ON sessions (updated)")
        except sqlite3.DatabaseError as error:
            raise InputError(f"not a usable session database ({error})", path=self.path) from None

    def new_id(self) -> str:
        return secrets.token_urlsafe(16)

    def get(self, session_id: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT state FROM sessions WHERE id = ?", (session_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def create(self, session_id: str, state: dict) -> None:
        """Store a new session; the least recently used beyond `max_sessions` are dropped."""
        if not SESSION_ID.match(session_id):
            raise ValueError(f"bad session id {session_id!r}")
        now = time.time()
        with self._lock:
            self._db.execute("INSERT INTO sessions (id, state, created, updated) VALUES (?, ?, ?, ?)",
                             (session_id, json.dumps(state), now, now))
            self._db.execute("DELETE FROM sessions WHERE id IN (SELECT id FROM sessions ORDER BY updated DESC LIMIT -1 OFFSET ?)",
                             (self.max_sessions,))

    def update(self, session_id: str, state: dict) -> bool:
        """Replace a stored session's state; False (nothing written) when it is no longer there."""
        with self._lock:
            return self._db.execute("UPDATE sessions SET state = ?, updated = ? WHERE id = ?",
                                    (json.dumps(state), time.time(), session_id)).rowcount > 0

    def delete(self, session_id: str) -> bool:
        with self._lock:
            return self._db.execute("DELETE FROM sessions WHERE id = ?", (session_id,)).rowcount > 0

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
