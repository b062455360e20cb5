"""sweeper.journal.JournalFile against Optuna's own journal reader: same format, torn tails
cut (with a copy kept), damage refused in one line, appends from several processes whole."""

from __future__ import annotations

import json
import multiprocessing as mp
import os

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from core.config import ConfigError
from sweeper.journal import DURABLE_OPS, JournalFile, journal_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)


def fill(path, trials=5, name="s"):
    study = optuna.create_study(storage=journal_storage(path), study_name=name,
                                sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(trials):
        t = study.ask()
        x = t.suggest_float("x", 0, 1)
        t.report(x, 1)
        t.set_user_attr("run", {"dir": "d", "n": 3})
        study.tell(t, x)
    return study


def optuna_reader(path, name="s"):
    return optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(path))))


def test_durable_op_codes_are_optunas():
    from optuna.storages.journal._storage import JournalOperation as Op

    assert DURABLE_OPS == {Op.CREATE_STUDY.value, Op.SET_TRIAL_STATE_VALUES.value}


def test_optunas_own_reader_sees_the_same_study(tmp_path):
    ours = fill(tmp_path / "journal.log")
    theirs = optuna_reader(tmp_path / "journal.log")
    assert [(t.number, t.state, t.value, t.params, t.user_attrs, t.intermediate_values)
            for t in theirs.trials] == [
        (t.number, t.state, t.value, t.params, t.user_attrs, t.intermediate_values) for t in ours.trials]


def test_torn_tail_is_cut_with_a_copy_and_the_study_goes_on(tmp_path):
    path = tmp_path / "journal.log"
    fill(path, 3)
    whole = path.read_bytes()
    with open(path, "r+b") as fh:  # a process killed mid-append: `truncate -s -7`
        fh.truncate(len(whole) - 7)
    study = optuna.load_study(study_name="s", storage=journal_storage(path))
    backups = list(tmp_path.glob("journal.log.torn-*"))
    assert len(backups) == 1 and backups[0].read_bytes() == whole[:-7]
    assert path.read_bytes() == whole[: whole[:-7].rfind(b"\n") + 1]
    assert len(study.trials) == 3 and study.trials[-1].state.name == "RUNNING"  # its tell was torn
    t = study.ask()  # writing after the repair: the file stays whole
    study.tell(t, 0.5)
    assert [t.state.name for t in optuna_reader(path).trials] == ["COMPLETE"] * 2 + ["RUNNING", "COMPLETE"]


def test_damage_in_the_middle_is_one_line_naming_the_file(tmp_path):
    path = tmp_path / "journal.log"
    fill(path, 2)
    lines = path.read_bytes().splitlines(keepends=True)
    lines[3] = lines[3][:-9] + lines[4]  # an older writer appended onto a torn line
    path.write_bytes(b"".join(lines))
    with pytest.raises(ConfigError, match=r"journal.log: line 4 is not a journal entry"):
        optuna.load_study(study_name="s", storage=journal_storage(path))


def test_a_line_being_written_waits_for_its_newline(tmp_path):
    path = tmp_path / "journal.log"
    backend = JournalFile(path)
    backend.append_logs([{"op_code": 2, "a": 1}])
    assert list(backend.read_logs(0)) == [{"op_code": 2, "a": 1}]
    with open(path, "ab") as fh:  # another process's append, half done
        fh.write(b'{"op_code":2,"b"')
    assert list(backend.read_logs(1)) == []
    with open(path, "ab") as fh:
        fh.write(b':2}\n')
    assert list(backend.read_logs(1)) == [{"op_code": 2, "b": 2}]


def _append(path, worker, n):
    backend = JournalFile(path)
    for i in range(n):
        backend.append_logs([{"op_code": 8, "worker": worker, "i": i, "pad": "x" * (i % 300)}])


def test_appends_from_several_processes_never_interleave(tmp_path):
    path = tmp_path / "journal.log"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_append, args=(path, w, 300)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    logs = [json.loads(line) for line in path.read_bytes().splitlines()]
    assert len(logs) == 900
    for w in range(3):
        assert [log["i"] for log in logs if log["worker"] == w] == list(range(300))


def test_a_pickled_backend_reopens_its_file(tmp_path):
    import pickle

    path = tmp_path / "journal.log"
    backend = JournalFile(path)
    backend.append_logs([{"op_code": 2}])
    clone = pickle.loads(pickle.dumps(backend))
    assert list(clone.read_logs(0)) == [{"op_code": 2}]
    assert os.path.samefile(clone.path, path)
