"""Thin adapters to learners. Each module imports its optional dependency itself, so
``import govgym`` never imports torch, SB3, agentlightning or ray."""

__all__: list[str] = []
