"""govgym: governed reinforcement-learning environments.

Every action passes through a policy kernel before it reaches the world and every
outcome after it; the kernel's decision can block, replace or end, reshapes the reward,
adds a constraint cost, and is written to a hash-chained audit log. Importing govgym
registers the env specs in ``envs/`` with Gymnasium.
"""

from govgym.kernel import (
    Context,
    Decision,
    Kernel,
    Outcome,
    Policy,
    PolicyError,
    Proposal,
    Severity,
    Verdict,
    Violation,
    available_policies,
    load_policy,
)
from govgym.registration import ENV_SPECS, make, register_env_specs
from govgym.shaping import Shaping
from govgym.wrappers import GovernedEnv

__version__ = "0.1.0"

__all__ = [
    "ENV_SPECS",
    "Context",
    "Decision",
    "GovernedEnv",
    "Kernel",
    "Outcome",
    "Policy",
    "PolicyError",
    "Proposal",
    "Severity",
    "Shaping",
    "Verdict",
    "Violation",
    "__version__",
    "available_policies",
    "load_policy",
    "make",
]

register_env_specs()
