"""core.shuffle.Permutations against NumPy's Generator.permutation (the reference it replays)."""

from __future__ import annotations

import numpy as np
import pytest

from core.shuffle import Permutations


@pytest.mark.parametrize("seed", [0, 1, 7, 12345, 2**40 + 3, 2**63 + 11])
def test_permutations_are_numpys_call_after_call(seed):
    """Every array equals NumPy's, across calls of mixed sizes: the generator's state and its
    kept half of a 64-bit word carry over from call to call (odd counts of draws leave one)."""
    ours, rng = Permutations(seed), np.random.default_rng(seed)
    sizes = [0, 1, 2, 3, 5, 17, 64, 65, 1000, 1222, 2000, 4097, 3]
    for n in sizes + sizes[::-1]:
        got, want = ours(n), rng.permutation(n)
        assert got.dtype == want.dtype == np.int64
        np.testing.assert_array_equal(got, want)


def test_state_after_a_call_is_numpys():
    """The PCG64 state, has_uint32 and the kept half word equal the Generator's afterwards.
    (Bounds above 2**32, where both draw whole 64-bit words, would need a permutation of
    over 4 billion items and are not exercised.)"""
    ours, rng = Permutations(3), np.random.default_rng(3)
    np.testing.assert_array_equal(ours(5), rng.permutation(5))
    state = rng.bit_generator.state
    assert (int(ours.state[0]) << 64) + int(ours.state[1]) == state["state"]["state"]
    assert int(ours.state[4]) == state["has_uint32"]
    assert int(ours.state[5]) == state["uinteger"]
