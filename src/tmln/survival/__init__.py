"""Survival statistics for a prognostic marker (T/MLN) against covariates such as N stage.

Modules: ``table`` (read + validate), ``kaplan_meier`` (KM, log-rank, trend), ``cutpoint``
(maxstat + Lausen–Schumacher / permutation p), ``cox`` (Cox models, PH check, nested test),
``concordance`` (Harrell, Uno, time-dependent AUC), ``plots``, ``report`` (HTML fragment),
``analysis`` (``run_survival``: everything, written to a folder).
"""

from tmln.survival.analysis import run_survival

__all__ = ["run_survival"]
