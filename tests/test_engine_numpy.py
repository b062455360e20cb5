"""The reference engine passes its own contract (a sanity check of the battery itself)."""

from __future__ import annotations

import pytest

from tests.engine_contract import EngineContract


class TestNumpyEngine(EngineContract):
    @pytest.fixture
    def engine_name(self) -> str:
        return "numpy"
