"""Measurement core: regions -> per-node rows -> per-slide -> per-patient (N stage, T/MLN)."""
