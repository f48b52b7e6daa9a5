"""Harnesses for Malle's own tests and benchmarks; not used by the engine or the dashboard."""
