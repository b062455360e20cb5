"""nnsweep's Optuna side: search spaces, trials, study workers, storage, tables and plots.

Submodules are imported where used: pandas, seaborn and optuna are slow to import.
"""
