"""What the entry points and scripts share: composing conf/ with Hydra (``app.compose``), the
terminal display and live curves (``app.live``), figures (``app.figures``,
``app.predict_figures``) and run.py's multirun callback (``app.multirun``).

Layering: core <- app <- sweeper <- entry points (run.py, search.py, scripts/). app imports
core and Hydra, never sweeper or Optuna. Submodules are imported where used: Hydra, pandas
and seaborn are slow to import.
"""
