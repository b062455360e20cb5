"""nnsweep's Hydra config groups: YAML files only, composed by ``app.compose``.

A package so the YAML files ship with ``pip install`` and ``app.compose`` finds them.
"""
