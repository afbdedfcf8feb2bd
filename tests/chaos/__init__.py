"""Chaos test: seeded, model-based runs of real processes against a fault-injecting endpoint."""
