"""Wrappers that govern worlds: Gymnasium now; PettingZoo parallel/AEC in a later issue."""

from govgym.wrappers.governed import GovernedEnv
from govgym.wrappers.info import StepInfo

__all__ = ["GovernedEnv", "StepInfo"]
