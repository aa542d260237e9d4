"""Wrappers that govern worlds: Gymnasium now; PettingZoo parallel/AEC in a later issue."""

from govgym.wrappers.governed import GovernedEnv

__all__ = ["GovernedEnv"]
