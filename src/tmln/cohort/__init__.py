"""Cohort runs: the slides table, per-slide jobs and state, resume, executors, the run directory."""
