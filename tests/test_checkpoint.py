"""core.checkpoint.load: every damaged field is one CheckpointError line, never a traceback.

A checkpoint is built here from a hand-made spec (no training), saved, and then written back
with one field replaced, as a damaged or hand-edited file would be.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core import checkpoint as C
from core.network import LayerSpec, NetworkSpec
from tests.helpers import load_script


def make(loss: str = "cross_entropy", n_out: int = 3, classes=("a", "b", "c")) -> C.Checkpoint:
    spec = NetworkSpec(2, (LayerSpec(4, "tanh"), LayerSpec(n_out, "linear")), loss)
    params = np.random.default_rng(0).normal(size=spec.n_params).astype(np.float32)
    task = "regression" if loss == "mse" and classes is None else "classification"
    return C.Checkpoint(
        params,
        spec,
        np.zeros(2),
        np.ones(2),
        task,
        None if classes is None else np.array(classes),
        {"dataset": "moons"},
    )


def rewrite(path: Path, **fields) -> Path:
    """The saved checkpoint with ``fields`` replaced (None: removed)."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    for key, value in fields.items():
        if value is None:
            arrays.pop(key, None)
        else:
            arrays[key] = value
    out = path.with_name("damaged.npz")
    np.savez(out, **arrays)
    return out


@pytest.fixture
def saved(tmp_path) -> Path:
    return C.save(tmp_path / "model.npz", make())


def test_a_good_checkpoint_loads(saved):
    ckpt = C.load(saved)
    assert list(ckpt.classes) == ["a", "b", "c"] and ckpt.meta == {"dataset": "moons"}
    bce = C.load(C.save(saved.with_name("bce.npz"), make("bce", 1, (0, 1))))
    assert list(bce.classes) == [0, 1]  # one sigmoid output tells two classes apart
    reg = C.load(C.save(saved.with_name("reg.npz"), make("mse", 1, None)))
    assert reg.task == "regression" and reg.classes is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"meta": np.array("{not json")}, r"has a corrupt meta \(not JSON: "),
        ({"meta": np.array("[1, 2]")}, r"has a corrupt meta \(a JSON list, expected an object\)"),
        ({"classes": np.array(["a", "b"])}, r"has 2 class labels; its network tells 3 classes"),
        ({"classes": np.array(["a", "b", "c", "d"])}, r"has 4 class labels; .* tells 3 classes"),
        ({"classes": np.array([["a", "b", "c"]])}, r"has 3 class labels; .* tells 3 classes"),
        ({"classes": None}, r"has no class labels; its network tells 3 classes apart"),
        ({"task": np.array("clustering")}, r"has task 'clustering'; expected classification or"),
        ({"std": np.array([1.0, 0.0])}, r"normalization is corrupt"),
        ({"mean": np.array([np.nan, 0.0])}, r"normalization is corrupt"),
        ({"std": np.array(["a", "b"])}, r"normalization is corrupt"),
        ({"params": np.zeros(27, dtype=np.int64)}, r"params have dtype int64; expected float32"),
    ],
)
def test_damaged_field_is_one_clear_line(saved, fields, message):
    damaged = rewrite(saved, **fields)
    with pytest.raises(C.CheckpointError, match=f"^checkpoint: '{damaged}' {message}") as info:
        C.load(damaged)
    assert "\n" not in str(info.value)
    assert C.load(saved).params.size == 27  # the good file is untouched


def test_predict_script_reports_a_damaged_checkpoint_in_one_line(saved, capsys):
    module = load_script("predict")
    assert module.main([str(rewrite(saved, meta=np.array("{oops")))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("predict: error: checkpoint: ") and err.count("\n") == 1


def test_save_writes_the_bytes_np_savez_writes(saved, tmp_path):
    """save() builds the archive in memory: the file is byte for byte what ``np.savez``
    writes to a file of the same arrays, and no temporary file is left."""
    with np.load(saved, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(tmp_path / "reference.npz", **arrays)
    assert saved.read_bytes() == (tmp_path / "reference.npz").read_bytes()
    assert sorted(p.name for p in saved.parent.iterdir()) == ["model.npz", "reference.npz"]
