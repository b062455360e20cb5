"""search.py: every flag at its edges, bad storage, spaces and overrides stop it with one line."""

from __future__ import annotations

import os

import pytest

from core.config import ConfigError
from tests.studies import flag_error, search_py, settings


def test_bad_storage_url_is_one_clear_line(tmp_path):
    out, err = search_py(tmp_path, "--trials", "1", "--storage", "postgresql://u:secret@127.0.0.1:1/db").communicate(timeout=120)
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "--storage" in lines[0] and "secret" not in err
    _out, err = search_py(tmp_path, "--trials", "1", "--storage", "redis://x").communicate(timeout=120)
    assert "error: --storage: unsupported URL" in err


def test_bad_space_fails_before_the_first_trial(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("params:\n  optimizer.lrr: interval(0.1, 0.2)\n")
    proc = search_py(tmp_path, "--trials", "2", "--space", str(bad))
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert "optimizer.lrr" in err and err.count("error:") == 1
    assert not (tmp_path / "bad" / "trials").exists()
    with pytest.raises(ConfigError, match="--sampler"):
        settings(tmp_path, 2, sampler="bayes")


# ---------------------------------------------------------------- search.py flags at their edges

CORES = os.cpu_count() or 1


MAX_JOBS = f"auto or 1 <= --jobs <= {4 * CORES}"  # four worker processes per core


MAX_SEED = "0 <= --seed <= 4294967295"  # 2**32 - 1


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--trials", "0"], "error: --trials: 0 is out of range; allowed: 1 <= --trials"),
        (["--trials", "-3"], "error: --trials: -3 is out of range"),
        (["--trials", "1e6"], "error: --trials: invalid int value: '1e6'"),
        (["--jobs", "0"], "error: --jobs: 0 is out of range; allowed: auto or 1 <= --jobs <= "),
        (["--jobs", "two"], "error: --jobs: 'two' is not allowed; allowed: auto or a whole number"),
        (["--cv", "0"], "error: --cv: '0' is not allowed; allowed: auto or a whole number 1..20"),
        (["--jobs", "99999"], f"error: --jobs: 99999 is out of range; allowed: {MAX_JOBS}"),
        (["--timeout", "-5"], "error: --timeout: -5.0 is out of range; allowed: 0.0 < --timeout"),
        (["--timeout", "0"], "error: --timeout: 0.0 is out of range"),
        (["--timeout", "nan"], "error: --timeout: nan is not a finite number"),
        (["--timeout", "inf"], "error: --timeout: inf is not a finite number"),
        (["--seed", "-1"], f"error: --seed: -1 is out of range; allowed: {MAX_SEED}\n"),
        (["--seed", str(2**32)], "error: --seed: 4294967296 is out of range"),
        (["--study", "../../x"], "error: --study: '../../x' is not a study name; allowed: "),
        (["--study", "a/b"], "error: --study: 'a/b' is not a study name"),
        (["--study", ".."], "error: --study: '..' is not a study name"),
        (["--study", ""], "error: --study: '' is not a study name"),
        (["--study", ".hidden"], "error: --study: '.hidden' is not a study name"),
        (["--study", "x" * 129], "error: --study: 'xxxx"),
        (["--study", "a b"], "error: --study: 'a b' is not a study name"),
        (["--space", "...yaml"], "error: --study: '..' (the default, from --space ...yaml) is"),
        (["--out", ""], "error: --out: empty; allowed: a folder"),
        (["--sampler", "bayes"], "error: --sampler: invalid choice: 'bayes'"),
        (["--bogus"], "error: unrecognized arguments: --bogus"),
    ],
)
def test_bad_flag_is_one_line_and_status_2(tmp_path, monkeypatch, capsys, flags, expected):
    err = flag_error(tmp_path, monkeypatch, capsys, flags)
    assert err.startswith(expected), err
    assert not any(tmp_path.iterdir())  # nothing created


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    from search import parse_args

    (tmp_path / "file").write_text("keep me")
    with pytest.raises(SystemExit):
        parse_args(["--out", str(tmp_path / "file")])
    assert capsys.readouterr().err.startswith("error: --out: ")
    assert (tmp_path / "file").read_text() == "keep me"


@pytest.mark.parametrize(
    "flags",
    [
        ["--study", "big_run-2.v1"],
        ["--study", "x" * 128],
        ["--seed", str(2**32 - 1), "--jobs", "2"],  # sessions seed from (seed, session)
        ["--jobs", "auto", "--cv", "20"],
        ["--timeout", "0.5", "--jobs", str(4 * CORES), "--trials", str(10**9)],
    ],
)
def test_good_flags_at_their_edges_pass(flags):
    from search import parse_args

    parse_args(flags)


def test_help_does_not_print_the_storage_password(monkeypatch, capsys):
    from search import parse_args

    monkeypatch.setenv("NNSWEEP_STORAGE", "postgresql://u:hunter2@db/x")
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    assert "hunter2" not in capsys.readouterr().out
    assert parse_args([]).storage == "postgresql://u:hunter2@db/x"  # still the default
    assert parse_args(["--storage", "sqlite:///x.db"]).storage == "sqlite:///x.db"


def test_study_name_cannot_leave_out(tmp_path):
    out = tmp_path / "a" / "b"
    proc = search_py(out, "--trials", "1", "--study", "../../x", "data=moons", cwd=tmp_path)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and err.count("\n") == 1
    assert err.startswith("error: --study: '../../x' is not a study name")
    assert not (tmp_path / "x").exists() and not out.exists()


def test_mistyped_storage_scheme_never_shows_the_password(tmp_path):
    proc = search_py(tmp_path, "--trials", "1", "--storage", "postgressql://u:hunter2@db/x")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "hunter2" not in err
    assert "error: --storage: unsupported URL 'postgressql://u:***@db/x'" in err


@pytest.mark.parametrize("text", ["", "params:\n  - optimizer\n"])
def test_empty_or_malformed_space_stops_search_py_with_one_line(tmp_path, text):
    space = tmp_path / "space.yaml"
    space.write_text(text)
    proc = search_py(tmp_path / "studies", "--trials", "3", "--space", str(space))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and err.startswith("error: search.params: ") and err.count("\n") == 1
    assert not (tmp_path / "studies").exists()


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("trainer.seed=-1", "error: trainer.seed: -1 is out of range; allowed: 0 <= trainer.seed"),
        ("optimizer.lr=inf", "error: optimizer.lr: inf is not a finite number"),
        ("=3", "error: Config group override must be a string or a list"),
    ],
)
def test_bad_override_stops_search_py_with_one_line(tmp_path, override, expected):
    proc = search_py(tmp_path / "studies", "--trials", "2", "--space", "quick", override)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and err.startswith(expected) and err.count("\n") == 1, err
    assert not (tmp_path / "studies").exists()
