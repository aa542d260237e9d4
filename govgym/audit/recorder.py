"""The flight recorder: an append-only JSON Lines log of every decision, hash-chained.

Each line is one record. Its ``hash`` is the SHA-256 of the line's own text up to the
``hash`` field, which includes ``prev``, the previous record's hash: changing, removing
or reordering any record breaks the chain from there on, and :func:`govgym.audit.read`
names the first broken record.

Appending only stores a tuple; serialising and hashing happen in :meth:`Recorder.flush`,
which runs every ``flush_every`` records, at episode end (the wrappers call it), on
:meth:`Recorder.close`, and when the recorder is garbage-collected or the interpreter
exits. A file that already holds records is continued: its chain goes on unbroken.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
import weakref
from pathlib import Path
from typing import IO, Any

__all__ = ["GENESIS", "Recorder", "summarize_action"]

GENESIS = "0" * 64
_MAX_SUMMARY = 256


def summarize_action(action: Any) -> Any:
    """A bounded, JSON-ready copy of an action, always of the same type for one space:
    a list for numbers and arrays (a scalar becomes ``[x]``), a (truncated) string for
    text, ``None`` for no action.
    """
    kind = type(action)
    if kind is int or kind is float or kind is bool:
        return [action]  # checked first: getattr(int, "tolist") misses slowly (~250 ns)
    if action is None:
        return None
    if isinstance(action, str):
        return action if len(action) <= _MAX_SUMMARY else action[:_MAX_SUMMARY] + "…"
    tolist = getattr(action, "tolist", None)
    if tolist is not None:
        value = tolist()
        if not isinstance(value, list):
            return [value]
        return value if len(value) <= 64 else [*value[:64], "…"]
    if isinstance(action, int | float):
        return [action]
    text = repr(action)
    return text if len(text) <= _MAX_SUMMARY else text[:_MAX_SUMMARY] + "…"


def _last_record(path: Path) -> tuple[int, str]:
    """(seq, hash) of the last complete record in an existing log, or (-1, GENESIS)."""
    if not path.is_file() or path.stat().st_size == 0:
        return -1, GENESIS
    with path.open("rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        chunk = 1 << 16
        while True:
            start = max(0, size - chunk)
            fh.seek(start)
            lines = fh.read(size - start).split(b"\n")
            for raw in reversed(lines[1:] if start else lines):
                try:
                    record = json.loads(raw)
                    return int(record["seq"]), str(record["hash"])
                except (ValueError, KeyError, TypeError):
                    continue
            if start == 0:
                return -1, GENESIS
            chunk *= 4


_encode_loose = json.JSONEncoder(ensure_ascii=False, default=str).encode


def _make_encode() -> Any:
    """``json.dumps(o, ensure_ascii=False)`` without building an encoder on every call
    (``json.dumps`` with any keyword builds a ``JSONEncoder`` per call: ~2 us here)."""
    from json.encoder import c_make_encoder, encode_basestring

    if c_make_encoder is None:  # no C accelerator: the plain encoder
        return json.JSONEncoder(ensure_ascii=False).encode

    def not_serializable(o: Any) -> Any:
        raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")

    encoder = c_make_encoder(None, not_serializable, encode_basestring, None, ": ", ", ",
                             False, False, True)
    return lambda o: "".join(encoder(o, 0))


_encode = _make_encode()


def _flush_buffer(fh: IO[str], buffer: list[tuple[Any, ...]], state: list[Any]) -> None:
    """Serialise, chain and write buffered records. ``state`` is ``[seq, prev, run]``."""
    if not buffer:
        return
    seq, prev, run = state
    sha256 = hashlib.sha256
    run_part = f',"run":{json.dumps(run)},"episode":'
    out = []
    for t, episode, step, agent, proposal, verdict, violations, cost, delta, extra in buffer:
        seq += 1
        # byte-identical to json.dumps: fast paths for the common values
        kind = type(proposal)
        if kind is list and len(proposal) == 1 and type(proposal[0]) is int:
            proposal_json = f"[{proposal[0]}]"  # a Discrete action, as GovernedEnv summarises it
        elif kind is int:
            proposal_json = str(proposal)
        else:
            proposal_json = _encode_loose(proposal)
        body = (
            f'{{"seq":{seq},"time":{t:.6f}{run_part}{episode},"step":{step},'
            f'"agent":{"null" if agent is None else _encode(agent)},"proposal":{proposal_json},'
            f'"verdict":"{verdict}","violations":{_encode(violations) if violations else "[]"},'
            f'"cost":{cost!r},"reward_delta":{delta!r}'
        )
        if extra:
            body += f',"extra":{_encode_loose(extra)}'
        body += f',"prev":"{prev}"'
        prev = sha256(body.encode()).hexdigest()
        out.append(f'{body},"hash":"{prev}"}}\n')
    fh.write("".join(out))
    fh.flush()
    buffer.clear()
    state[0], state[1] = seq, prev


def _finalize(fh: IO[str], buffer: list[tuple[Any, ...]], state: list[Any]) -> None:
    if not fh.closed:
        _flush_buffer(fh, buffer, state)
        fh.close()


class Recorder:
    """Append decisions to a hash-chained JSON Lines file.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "audit.jsonl"
    >>> rec = Recorder(path, run_id="doc")
    >>> rec.append(episode=0, step=0, proposal=1, verdict="allow")
    >>> rec.close()
    >>> from govgym.audit import read
    >>> log = read(path)
    >>> log.ok, len(log.records), log.records[0]["verdict"]
    (True, 1, 'allow')
    """

    def __init__(self, path: str | os.PathLike[str], run_id: str | None = None,
                 flush_every: int = 1024) -> None:
        if flush_every < 1:
            raise ValueError(f"flush_every must be >= 1, got {flush_every}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.flush_every = flush_every
        seq, prev = _last_record(self.path)
        self._fh = self.path.open("a", encoding="utf-8")
        if self._fh.tell() > 0 and not self._ends_with_newline():
            self._fh.write("\n")  # terminate a torn line so the chain resumes on its own line
        self._buffer: list[tuple[Any, ...]] = []
        self._state: list[Any] = [seq, prev, self.run_id]
        self._finalizer = weakref.finalize(self, _finalize, self._fh, self._buffer, self._state)

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) == b"\n"

    def append(self, episode: int, step: int, proposal: Any, verdict: str,
               violations: list[dict[str, Any]] | None = None, cost: float = 0.0,
               reward_delta: float = 0.0, agent: str | None = None,
               extra: dict[str, Any] | None = None) -> None:
        """Buffer one decision record (``proposal`` should already be bounded)."""
        self._buffer.append((time.time(), episode, step, agent, proposal, verdict,
                             violations or [], float(cost), float(reward_delta), extra))
        if len(self._buffer) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        if self._fh.closed:
            raise ValueError(f"recorder for {self.path} is closed")
        _flush_buffer(self._fh, self._buffer, self._state)

    @property
    def records_written(self) -> int:
        """Sequence number of the last record written, plus one (file-wide)."""
        return self._state[0] + 1

    @property
    def closed(self) -> bool:
        return self._fh.closed

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
