"""nnsweep's Hydra sweeper (``hydra/sweeper=nnsweep``): a thin shim over ``sweeper/``."""
