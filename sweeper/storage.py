"""Study storage: an embedded journal file by default, any Optuna RDB URL on request.

  (default)                   outputs/studies/<study>/journal.log  (Optuna's journal
                              format through sweeper.journal.JournalFile: safe for several
                              processes on one machine, resumable, repairs a torn tail)
  path/to/file.log            a journal file elsewhere
  sqlite:///path/study.db     SQLite (one machine)
  postgresql://user@host/db   PostgreSQL, mysql://... MySQL: workers on many machines

Every storage gets the same heartbeat (sweeper.claim.Heartbeat): a running trial writes a
``heartbeat`` user attr every HEARTBEAT_SECONDS; a worker that dies (kill -9, a preempted
node) stops beating, and after STALE_AFTER_SECONDS its RUNNING trial is failed and its
parameters re-queued. On the worker's own host a dead process is noticed at once. (Optuna's
built-in RDB heartbeat only runs inside ``Study.optimize``; our workers use ask/tell.)
"""

from __future__ import annotations

import contextlib
import re
import zlib
from pathlib import Path
from urllib.parse import unquote

from core.config import ConfigError

RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql")
HEARTBEAT_SECONDS = 10  # how often a running trial says it is alive
STALE_AFTER_SECONDS = 60  # no heartbeat for this long: the worker is dead


def is_rdb(url: str | None) -> bool:
    return bool(url) and url.split(":", 1)[0].split("+", 1)[0] in RDB_SCHEMES


def is_local(url: str | None) -> bool:
    """Storage on this machine's disk: a file lock can serialise claiming trials."""
    return not url or not is_rdb(url) or url.startswith("sqlite")


def describe_storage(url: str | None, study_dir: Path) -> str:
    """Where a study is kept, for a message: the URL without secrets, or the journal file."""
    return redact(url) if url else str(study_dir / "journal.log")


def open_storage(url: str | None, study_dir: Path):
    """The Optuna storage for ``url`` (None: the journal in study_dir); one clear error on a
    bad URL, before any trial starts."""
    import optuna

    if not url or not is_rdb(url):
        if url and "://" in url:
            raise ConfigError(
                f"--storage: unsupported URL '{redact(url)}'; allowed: sqlite:///file.db, "
                "postgresql://user:pass@host/db, mysql://user:pass@host/db, or a journal file path"
            )
        path = Path(url) if url else study_dir / "journal.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        from .journal import journal_storage

        return journal_storage(path)
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    except Exception as e:  # sqlalchemy/driver errors come in many types
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"--storage: cannot open {redact(url)}: {scrub(reason, url)}") from None


_ENGINES: dict[str, object] = {}


@contextlib.contextmanager
def database_lock(url: str, name: str):
    """A lock held while a worker claims a trial: pg_advisory_lock on PostgreSQL (shared by
    every machine using the database); elsewhere nothing (optimistic claiming)."""
    if not url.split(":", 1)[0].startswith("postgres"):
        yield
        return
    import sqlalchemy as sa

    engine = _ENGINES.get(url)
    if engine is None:
        engine = _ENGINES[url] = sa.create_engine(url, pool_pre_ping=True, poolclass=sa.pool.NullPool)
    key = zlib.crc32(f"nnsweep:{name}".encode())  # one lock per study
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": key})
        try:
            yield
        finally:
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            conn.commit()


def redact(url: str) -> str:
    """The storage URL for a message, with anything that may be a secret replaced by ***.

    Whatever the URL looks like (a mistyped or unsupported scheme, no ``//``, an ``@``, ``:``,
    ``/`` or ``?`` inside the password, percent-encoding), only the scheme, the user name and
    the host/path are shown: the password of ``user:password@`` is hidden, all of ``token@``,
    the whole query string and fragment (``?password=...``), and, when an ``@`` follows a
    ``?`` or ``#`` so the parts cannot be told apart, everything after the scheme. Hiding too
    much is fine; showing a password is not.
    """
    return _split_secrets(url)[0]


def scrub(text: str, url: str | None) -> str:
    """``text`` (a driver's error message) with the secrets of ``url`` replaced by ***, as
    written and percent-decoded, and also their pieces between URL delimiters: a driver that
    splits ``u:p@ss@host`` at the first ``@`` reports the host ``ss@host``. (Pieces shorter
    than 3 characters stay, or every 'p' of the message would go.)"""
    if not url:
        return text
    secrets = set(_split_secrets(url)[1])
    secrets |= {unquote(x) for x in secrets}
    secrets |= {piece for x in secrets for piece in re.split(r"[@:/?#&;=]", x) if len(piece) >= 3}
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
    return text


def _split_secrets(url: str) -> tuple[str, list[str]]:
    """(url with its secrets hidden, the hidden secrets) for redact and scrub."""
    text = str(url)
    scheme = re.match(r"[A-Za-z][A-Za-z0-9+.\-]*:/*", text)  # 'postgresql://', 'sqlite:///'
    head = scheme.group(0) if scheme else ""
    rest = text[len(head) :]
    q = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    at = rest.rfind("@")
    query = rest[q:]
    secrets = re.findall(r"[?&;#][^=&;#]*=([^&;#]*)", query) if query else []
    hidden_query = f"{query[0]}***" if query else ""
    if at > q:  # an '@' after '?' or '#': in the password or in the query, cannot tell
        return f"{head}***", [rest, *secrets]
    if at < 0 or not (scheme or ":" in rest[:at]):  # no credentials (a journal file path)
        return head + rest[:q] + hidden_query, secrets
    creds, host = rest[:at], rest[at + 1 : q]
    user, colon, password = creds.partition(":")
    if colon and "/" not in user:
        return f"{head}{user}:***@{host}{hidden_query}", [password, *secrets]
    return f"{head}***@{host}{hidden_query}", [creds, *secrets]
