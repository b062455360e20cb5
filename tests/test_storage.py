"""sweeper.storage: no message ever shows a password, whatever the storage URL looks like."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest

from core.config import ConfigError
from sweeper.storage import describe_storage, open_storage, redact, scrub

SECRET = "s3cr3t-Pw"


def leaks(text: str, secret: str = SECRET) -> bool:
    """Does ``text`` show the secret, as written or percent-encoded?"""
    return any(s in text for s in (secret, quote(secret, safe=""), secret[2:-2]))


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"postgresql://u:{SECRET}@db/x", "postgresql://u:***@db/x"),
        (f"postgressql://u:{SECRET}@db/x", "postgressql://u:***@db/x"),  # mistyped scheme
        (f"redis://u:{SECRET}@cache:6379/0", "redis://u:***@cache:6379/0"),  # unsupported
        (
            f"postgresql+psycopg://u:{SECRET}@[::1]:5432/x",
            "postgresql+psycopg://u:***@[::1]:5432/x",
        ),
        (f"mysql://u:{SECRET}@db:3306/x", "mysql://u:***@db:3306/x"),
        (f"postgresql://u:{quote(SECRET, safe='')}@db/x", "postgresql://u:***@db/x"),
        (f"postgresql://u:{quote('a@b:c/d', safe='')}@db/x", "postgresql://u:***@db/x"),
        (f"postgresql:/u:{SECRET}@db/x", "postgresql:/u:***@db/x"),  # one slash
        (f"u:{SECRET}@db/x", "u:***@db/x"),  # no scheme at all
        (f"postgresql://{SECRET}@db/x", "postgresql://***@db/x"),  # a token as the user
        (f"postgresql://:{SECRET}@db/x", "postgresql://:***@db/x"),
        (f"postgresql://db/x?user=u&password={SECRET}", "postgresql://db/x?***"),
        (f"postgresql://u@db/x?sslmode=require&sslpassword={SECRET}", "postgresql://***@db/x?***"),
        (f"sqlite:///studies.db?password={SECRET}", "sqlite:///studies.db?***"),
        (f"postgresql://db/x#{SECRET}", "postgresql://db/x#***"),
    ],
)
def test_redact_hides_the_password_and_keeps_the_host(url: str, shown: str) -> None:
    assert redact(url) == shown
    assert not leaks(redact(url))


@pytest.mark.parametrize(
    "password",
    ["p@ss", "pa:ss", "pa/ss", "pa?ss", "pa#ss", "p@ss@w:rd", "a&b=c", "@@@@", "s p a c e"],
)
@pytest.mark.parametrize(
    "template",
    [
        "postgresql://u:{}@db/x",
        "postgressql://u:{}@db:5432/x?sslmode=require",
        "mysql+pymysql://u:{}@db/x?charset=utf8mb4&x=a@b",
        "postgresql://db/x?password={}",
        "//u:{}@db:5432",  # no scheme
    ],
)
def test_redact_never_shows_a_password_with_special_characters(template, password) -> None:
    """Unencoded characters that end a URL part (@ : / ? # &) inside the password."""
    url = template.format(password)
    assert password not in redact(url), redact(url)


def test_plain_urls_and_journal_paths_are_shown_as_written() -> None:
    for url in [
        "sqlite:///studies.db",
        "sqlite:////abs/x.db",
        "postgresql://db/x",
        "outputs/studies/s/journal.log",
        "/data/runs@2024/journal.log",
    ]:
        assert redact(url) == url
    assert describe_storage(None, Path("outputs/studies/s")) == str(Path("outputs/studies/s/journal.log"))


def test_scrub_hides_the_password_in_a_drivers_message() -> None:
    url = f"postgresql://u:{quote(SECRET, safe='')}@db/x?sslpassword=other-{SECRET}"
    message = f"could not connect with password {SECRET!r} (dsn {url}), sslpassword other-{SECRET}"
    assert not leaks(scrub(message, url))
    assert scrub("connection refused", url) == "connection refused"


@pytest.mark.parametrize(
    "url",
    [
        f"postgressql://u:{SECRET}@db/x",  # a mistyped scheme: 'unsupported URL'
        f"redis://u:{SECRET}@127.0.0.1:1/0",
        f"ftp://u:p@ss{SECRET}@127.0.0.1/x",
        f"postgresql://u:{SECRET}@127.0.0.1:1/db",  # nobody listens on port 1
        f"postgresql://u:p@ss{SECRET}@127.0.0.1:1/db",
        f"postgresql://u@127.0.0.1:1/db?password={SECRET}",
        f"mysql://u:{SECRET}@127.0.0.1:1/db",  # driver not installed
    ],
)
def test_storage_errors_never_show_the_password(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError) as info:
        open_storage(url, tmp_path / "study")
    message = str(info.value)
    assert message.startswith("--storage: ") and "\n" not in message
    assert not leaks(message), message
