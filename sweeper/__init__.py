"""nnsweep's Hydra and Optuna side: multirun results (``sweeper.multirun``), search (later).

Submodules are imported where used: pandas, seaborn and optuna are slow to import.
"""
