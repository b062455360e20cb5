"""Hydra configuration of nnsweep: YAML option groups plus the typed schema (``conf.schema``).

A package so ``conf.schema`` is importable and the YAML files ship with ``pip install``.
"""
