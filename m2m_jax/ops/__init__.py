"""Shared math: optimizers and schedules, metrics."""
