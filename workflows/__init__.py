"""Temporal workflows. Deterministic code only: no I/O, no clock, no configuration imports."""
