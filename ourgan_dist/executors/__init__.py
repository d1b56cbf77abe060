"""Executors: thin adapters that run a plan's tasks. ``local`` is the in-process reference."""
