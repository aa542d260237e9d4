"""The audit record: recorder, reader with chain check, and summaries."""

from govgym.audit.reader import AuditLog, read, summarize
from govgym.audit.recorder import GENESIS, Recorder, strict_json, summarize_action, summarize_meaning

__all__ = ["GENESIS", "AuditLog", "Recorder", "read", "strict_json", "summarize", "summarize_action",
           "summarize_meaning"]
