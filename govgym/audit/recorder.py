"""The flight recorder: an append-only JSON Lines log of every decision, hash-chained.

Each line is one record: a JSON object without spaces, keys in this order (one line in
the file; wrapped here)::

    {"seq":7,"time":1795319450267144e-6,"run":"3f2a9c1b7d4e","episode":0,"step":7,
     "agent":null,"proposal":[1],"verdict":"warn","cost":1.0,"reward_delta":-0.5,
     "violations":[{"rule":"envelope","code":"out_of_bounds","severity":"high","cost":1.0,
     "stage":"post","executed":true,"message":"pole_angle=0.1312 outside [-0.12, 0.12]"}],
     "prev":"<64 hex digits>","hash":"<64 hex digits>"}

- ``time`` is Unix time in seconds, written as whole microseconds times ``e-6``: a plain
  JSON number that every parser reads as seconds (``1795319450.267144``).
- ``cost``, ``reward_delta`` and each violation's ``cost`` are written as floats (a zero
  as ``0.0``). A violation given as the
  kernel's five keys or GovernedEnv's seven comes with its keys in the order above,
  whatever the order of the dict; any other dict keeps its own order.
- Every line is strict JSON (RFC 8259), readable by any tool: a NaN or an infinity
  anywhere is written as the string ``"NaN"``, ``"Infinity"`` or ``"-Infinity"``, an
  int too long to print as ``"<int of N bits>"``.
- An ``"extra"`` object (for example the action actually executed) goes before ``"prev"``
  when there is one. Text is UTF-8, not ``\\u``-escaped.
- ``hash`` is the SHA-256 (hex) of the line's own UTF-8 text up to the ``,"hash":`` that
  ends it, which includes ``prev``, the hash of the record before (``GENESIS`` for the
  first): changing, removing or reordering any record breaks the chain from there on,
  and :func:`govgym.audit.read` names the first broken record.

A recorder's decisions are one *session*, which its close record ends:
``{"seq":..,"time":..,"run":..,"event":"close","decisions":N,"by":"close","govgym":"0.1.0",
"prev":..,"hash":..}``, written by :meth:`Recorder.close` (``"by":"exit"``: by the garbage
collector or at interpreter exit, without a ``close()``); ``N`` counts the session's
decisions, so the reader knows where the session began. Decisions that no close record
ends come from a recorder that ended otherwise (a crash, a killed vector-env worker) or
is still writing, and the ones after its last flush may be missing:
:func:`govgym.audit.read` lists them in ``AuditLog.unclosed``, and ``govgym audit
verify`` fails on them. A recorder that records no decision writes nothing.

:meth:`Recorder.append` serialises and hashes the record at once (so the line holds the
values as they were at that step, even if the caller changes them later) and buffers the
line; :meth:`Recorder.flush` writes the buffered lines and flushes the file. Flushes
happen every ``flush_every`` records, at episode end (the wrappers call it), on
:meth:`Recorder.close`, and when the recorder is garbage-collected or the interpreter
exits. A file that already holds records is continued: its chain goes on unbroken.

Speed: measured by ``benchmarks/audit.py``, results (per record, without and with a
violation, writing included) in ``benchmarks/results/audit.md``; SHA-256 is about 0.5 us
of it. The values that repeat from
step to step (verdicts, costs, a Discrete action's summary, a violation's rule, code,
severity and stage) are encoded once and looked up after that, in bounded caches;
anything else takes the general JSON encoder, and produces the same text.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import operator
import os
import re
import uuid
import weakref
from collections.abc import Mapping
from hashlib import sha256
from itertools import islice
from json.encoder import c_make_encoder, encode_basestring
from pathlib import Path
from time import time_ns
from typing import IO, Any

import numpy as np

try:
    import fcntl
except ImportError:  # Windows: no advisory lock
    fcntl = None  # type: ignore[assignment]

__all__ = ["GENESIS", "Recorder", "strict_json", "summarize_action", "summarize_meaning"]

GENESIS = "0" * 64
_MAX_TEXT = 4096  # characters of a string kept (the SQL rule's default max_length)
_MAX_SUMMARY = 256  # characters of the repr of any other value
_MAX_VALUES = 64  # numbers of a summarised array
_MAX_KEYS = 32  # keys of a summarised meaning, and of a mapping in it
_CACHE_LIMIT = 4096  # entries per cache of encoded values; past it, encode every time
_WRITE_LINES = 128  # lines per write() call when flushing


def summarize_action(action: Any) -> Any:
    """A bounded, JSON-ready copy of an action, always of the same type for one space:
    a list for numbers and arrays (a scalar becomes ``[x]``), a (truncated) string for
    text, ``None`` for no action.

    Bounded: an array of at most 64 values is kept whole, with its shape (a 2-D action
    is a list of rows); a larger one becomes its first 64 values in C order followed by
    a string that gives the number of values and the shape (NumPy arrays, torch tensors,
    anything with ``tolist`` and a ``shape``). The values of a text, bytes or object
    array are cut one by one (a string at 256 characters, anything else as its
    ``repr``). Other values are kept as their ``repr``, cut at 256 characters (a repr
    that fails is named, not raised); a string is cut at 4,096. A cut string ends
    with a marker that gives its full length and the start of its SHA-256, so a record
    never looks complete when it is not and the full text can be matched afterwards:

    >>> summarize_action("x" * 5000)[4096:]
    '…[cut: 5000 chars, sha256 c59d3c0480cc2d71]'

    >>> import numpy as np
    >>> summarize_action(np.array([[1, 2], [3, 4]]))
    [[1, 2], [3, 4]]
    >>> summary = summarize_action(np.zeros((100, 100)))
    >>> len(summary), summary[-1]
    (65, '… 10000 values, shape (100, 100)')
    """
    kind = type(action)
    if kind is int or kind is float or kind is bool:
        return [action]  # checked first: getattr(int, "tolist") misses slowly (~250 ns)
    if action is None:
        return None
    if isinstance(action, str):
        return action if len(action) <= _MAX_TEXT else _cut(action, _MAX_TEXT)
    tolist = getattr(action, "tolist", None)
    if tolist is not None:
        extended = _EXTENDED.get(getattr(action, "dtype", None))
        if extended is not None:  # long double: its tolist() gives NumPy scalars JSON cannot take
            action = action.astype(extended)
            tolist = action.tolist
        size = getattr(action, "size", None)  # NumPy's; torch's is a method
        if type(size) is not int:
            size = _size(action)
        if size is not None and size > _MAX_VALUES and hasattr(action, "reshape"):
            head = action.reshape(-1)[:_MAX_VALUES].tolist()
            value = [*head, f"… {size} values, shape {tuple(action.shape)}"]
            depth = 1
        else:
            value = tolist()
            depth = getattr(action, "ndim", 1)
            if not isinstance(value, list):
                value, depth = [value], 1
            elif len(value) > _MAX_VALUES:
                value = [*value[:_MAX_VALUES], "…"]
        # NumPy numbers are JSON as they are; strings, bytes, objects (and arrays of
        # other libraries) have their values bounded one by one
        dtype = getattr(action, "dtype", None)
        return value if dtype in _NUMERIC_DTYPES else _bounded_values(value, depth)
    if isinstance(action, int | float):
        return [action]
    if isinstance(action, list | tuple):  # numbers as an array's list; anything else as text
        try:
            array = np.asarray(action)
        except (ValueError, TypeError, RecursionError):
            array = None
        if array is not None and array.dtype.kind in "biuf":
            return summarize_action(array)
    return _bounded_repr(action)


#: NumPy's number dtypes (a set lookup: faster than reading ``dtype.kind``)
_NUMERIC_DTYPES = frozenset(np.dtype(code) for code in "?bhilqBHILQefdFD")
#: long double (real and complex) as the widest type whose values Python holds
_EXTENDED = {np.dtype("g"): np.dtype("d"), np.dtype("G"): np.dtype("D")}


def _size(array: Any) -> int | None:
    """The number of values of an array-like without NumPy's ``size`` (torch's is a
    method): the product of its ``shape``; ``None`` when it has none."""
    try:
        return int(np.prod(tuple(array.shape), dtype=np.int64))
    except (AttributeError, TypeError, ValueError):
        return None


def _bounded_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception as exc:  # a repr that fails (or nesting deeper than repr goes)
        text = f"<{type(value).__name__}: repr failed with {type(exc).__name__}>"
    return text if len(text) <= _MAX_SUMMARY else _cut(text, _MAX_SUMMARY)


def _bounded_values(values: list[Any], depth: int) -> list[Any]:
    """``values`` (an array's nested list, ``depth`` levels of it the array's own, at most
    64 values) with each value JSON can hold as a number kept and any other one bounded:
    a string cut at 256 characters, anything else (a list held in an object array too)
    as its (cut) ``repr``."""
    out: list[Any] = []
    for value in values:
        if value is None or type(value) in (bool, int, float):
            out.append(value)
        elif depth > 1 and type(value) is list:
            out.append(_bounded_values(value, depth - 1))
        elif isinstance(value, str):
            out.append(value if len(value) <= _MAX_SUMMARY else _cut(value, _MAX_SUMMARY))
        else:
            out.append(_bounded_repr(value))
    return out


def _cut(text: str, limit: int) -> str:
    """``text`` cut at ``limit`` characters, marked with its length and SHA-256 prefix."""
    digest = sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{text[:limit]}…[cut: {len(text)} chars, sha256 {digest}]"


def summarize_meaning(meaning: Mapping[str, Any]) -> dict[str, Any]:
    """A bounded, JSON-ready copy of what a world says an action means (``describe``):
    strings cut at 4,096 characters (marked as :func:`summarize_action` marks them);
    numbers, booleans and ``None`` as they are; a mapping of such values kept a mapping;
    arrays and sequences as :func:`summarize_action` gives them; anything else as its
    ``repr``, cut at 256 characters.

    Keys become text. The top level and a mapping in it keep their first 32 keys; past
    that, a last key ``"…"`` says how many there were. A key that is not a string and
    prints as another key does keeps its value under a name that says its type:

    >>> summarize_meaning({"1": "text", 1: "number"})
    {'1': 'text', '1 (int)': 'number'}
    """
    return _text_keyed(meaning, nested=True)


def _text_keyed(mapping: Mapping[Any, Any], nested: bool) -> dict[str, Any]:
    """``mapping``'s first 32 items with text keys, none lost to another that prints the
    same, then a ``"…"`` key that counts them all when there were more."""
    if len(mapping) <= _MAX_KEYS:  # the common case: text keys, a few of them
        try:
            out = {str(key): _meaning_value(value, nested) for key, value in mapping.items()}
        except Exception:  # a key whose str() fails: named below
            out = None
        if out is not None and len(out) == len(mapping):  # no two keys print alike
            return out
    items = list(islice(mapping.items(), _MAX_KEYS))
    taken = {key for key, _ in items if type(key) is str}  # text keys keep their text
    out: dict[str, Any] = {}
    for key, value in items:
        if type(key) is not str:
            key = _free_key(key, taken)
            taken.add(key)
        out[key] = _meaning_value(value, nested)
    if len(mapping) > _MAX_KEYS:
        out[_free_key("…", taken)] = f"{len(mapping)} keys: the first {_MAX_KEYS} kept"
    return out


def _free_key(key: Any, taken: set[str]) -> str:
    """``str(key)``, or when another key has that text, the text with ``key``'s type."""
    kind = type(key).__name__
    try:
        text = str(key)
    except Exception as exc:
        text = f"<{kind} key: str failed with {type(exc).__name__}>"
    if text not in taken:
        return text
    named, n = f"{text} ({kind})", 1
    while named in taken:
        n += 1
        named = f"{text} ({kind} {n})"
    return named


def _meaning_value(value: Any, nested: bool) -> Any:
    if value is None or type(value) in (bool, int, float):
        return value
    if isinstance(value, str):
        return value if len(value) <= _MAX_TEXT else _cut(value, _MAX_TEXT)
    if getattr(value, "shape", None) == () and hasattr(value, "item"):  # a NumPy scalar
        item = value.item()
        if type(item) is type(value):  # a long double stays one: as the nearest float
            item = complex(item) if np.iscomplexobj(item) else float(item)
        return _meaning_value(item, nested)
    if isinstance(value, bool | int | float):  # subclasses: IntEnum, ...
        return bool(value) if isinstance(value, bool) else (
            float(value) if isinstance(value, float) else int(value))
    if nested and isinstance(value, Mapping):
        return _text_keyed(value, nested=False)
    if isinstance(value, list | tuple) or hasattr(value, "tolist"):
        return summarize_action(value)
    return _bounded_repr(value)


def line_body(raw: bytes) -> bytes:
    """A log line without what can follow a record on it and is no part of it: the
    ``\\r`` of a CRLF copy (Windows, git), and the NUL bytes a power loss leaves where
    the end of a file was not yet written (ext4 and XFS allocate blocks late and can
    show them zero-filled). The reader and a resuming recorder both read lines so."""
    if raw.endswith(b"\0"):  # first: a CRLF line's zeros come after its \r
        raw = raw.rstrip(b"\0")
    return raw[:-1] if raw.endswith(b"\r") else raw


#: Every record line starts with this; so does what a crash leaves of one (or a prefix of it).
_RECORD_START = b'{"seq":'


def starts_like_a_record(raw: bytes) -> bool:
    """Whether a log line begins as a record does, or is a prefix of that beginning
    (what a crash leaves of the record it was writing)."""
    return _RECORD_START.startswith(line_body(raw)[:len(_RECORD_START)])


_LAST_RECORD = re.compile(rb'\{"seq":(\d+),.*,"hash":"([0-9a-f]{64})"\}', re.DOTALL)


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
                raw = line_body(raw)
                try:
                    record = json.loads(raw)
                    return int(record["seq"]), str(record["hash"])
                except (ValueError, KeyError, TypeError):
                    continue
                except RecursionError:  # too deep for json here: its seq and hash as text
                    ends = _LAST_RECORD.fullmatch(raw)
                    if ends:
                        return int(ends.group(1)), ends.group(2).decode()
                    continue
            if start == 0:
                return -1, GENESIS
            chunk *= 4


# -- encoding ------------------------------------------------------------------------------

def _default(value: Any) -> Any:
    """What JSON cannot write as is: NumPy arrays and scalars as Python values, anything
    else as its ``str``."""
    tolist = getattr(value, "tolist", None)
    if not callable(tolist):
        return str(value)
    extended = _EXTENDED.get(getattr(value, "dtype", None))
    if extended is not None:  # long double: tolist() gives it back unchanged
        return value.astype(extended).tolist()
    return tolist()


def _make_encode() -> Any:
    """Compact ``json.dumps(o, ensure_ascii=False, default=_default)`` with the encoder
    built once (``json.dumps`` with any keyword builds a new one per call: ~1 us). A
    circular value raises ``ValueError``."""
    if c_make_encoder is None:  # no C accelerator: the plain encoder
        return json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_default).encode

    # markers=None: no cycle check per container (the check costs a new encoder per call);
    # a circular value ends in RecursionError instead, turned into the ValueError here
    # allow_nan=False: a record is strict JSON (RFC 8259), readable by any tool
    encoder = c_make_encoder(None, _default, encode_basestring, None, ":", ",", False, False, False)

    def encode(value: Any) -> str:
        try:
            return "".join(encoder(value, 0))
        except RecursionError:
            raise ValueError("circular (or too deeply nested) value") from None
        except (ValueError, TypeError):  # NaN, an infinity, an int too long to print, a
            try:                             # key JSON cannot take: rarely, so slowly
                return "".join(encoder(strict_json(value), 0))
            except RecursionError:
                raise ValueError("circular (or too deeply nested) value") from None

    return encode


_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def strict_json(value: Any) -> Any:
    """``value`` with what strict JSON cannot hold as a number written as a string:
    ``NaN``, ``Infinity`` and ``-Infinity`` (as ``json.dumps`` would spell them) and an
    int too long to print (Python's 4,300-digit limit) as ``"<int of N bits>"``; and a
    mapping key JSON cannot take (a tuple, a NumPy integer, ``NaN``) as its ``str``, so
    the record is written rather than lost."""
    if isinstance(value, float):
        return value if math.isfinite(value) else _NON_FINITE[repr(float(value))]
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            repr(value)
        except ValueError:
            return f"<int of {value.bit_length()} bits>"
        return value
    if isinstance(value, Mapping):
        return {_strict_key(key): strict_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(item) for item in value]
    tolist = getattr(value, "tolist", None)
    return strict_json(tolist()) if callable(tolist) else value


def _strict_key(key: Any) -> Any:
    """A mapping key as JSON writes it, or its ``str`` when JSON cannot take it."""
    if key is None or type(key) in (str, bool):
        return key
    if type(key) in (int, float):
        strict = strict_json(key)
        return strict if strict is key else str(strict)
    return str(key)


_encode = _make_encode()


def _number(value: Any) -> str:
    """JSON text of ``float(value)``: ``0.0`` for either zero, ``"NaN"`` / ``"Infinity"``
    as strings (strict JSON has no such numbers). Raises ``TypeError`` / ``ValueError``
    for a non-number."""
    try:
        number = float(value)
    except OverflowError:  # an int beyond any float
        raise ValueError(f"{value!r} is too large for a float") from None
    if number == 0.0:
        return "0.0"
    if number - number == 0.0:  # finite
        return repr(number)
    return _encode(number)


def _string(value: Any) -> str:
    """JSON text of a value expected to be a string (any other value is encoded too)."""
    try:
        return _STRINGS[value]
    except TypeError:
        return _encode(value)


class _Strings(dict[Any, str]):
    """``_STRINGS[s]`` is the JSON text of the string ``s``; anything else raises
    ``TypeError`` (the caller falls back to the general encoder)."""

    def __missing__(self, value: Any) -> str:
        if not isinstance(value, str):
            raise TypeError(f"not a string: {value!r}")
        text = encode_basestring(value)
        if len(self) < _CACHE_LIMIT:
            self[value] = text
        return text


def _summary(proposal: Any, verdict: Any, cost: Any, delta: Any, agent: Any) -> str:
    """A record's text from ``,"agent":`` to the ``reward_delta`` value, for any values."""
    if type(proposal) is list and len(proposal) == 1 and type(proposal[0]) is int:
        try:
            proposal_json = f"[{proposal[0]}]"
        except ValueError:  # an int too long to print: _encode spells it as strict JSON does
            proposal_json = _encode(proposal)
    else:
        proposal_json = _encode(proposal)
    return (f',"agent":{"null" if agent is None else _string(agent)},"proposal":{proposal_json},'
            f'"verdict":{_string(verdict)},"cost":{_number(cost)},"reward_delta":{_number(delta)}')


class _Summaries(dict[Any, str]):
    """``_SUMMARIES[action, verdict, cost, reward_delta, agent]`` is :func:`_summary` for
    the proposal ``[action]`` of an ``int`` action (a Discrete action, summarised): these
    repeat step after step, so one lookup replaces five encodings. The caller checks that
    ``action`` is an ``int``; other keys that are not cacheable raise ``TypeError``."""

    def __missing__(self, key: Any) -> str:
        action, verdict, cost, delta, agent = key
        if not (isinstance(verdict, str) and (agent is None or isinstance(agent, str))):
            raise TypeError("not a cacheable summary")
        text = _summary([action], verdict, cost, delta, agent)
        if cost == cost and delta == delta and len(self) < _CACHE_LIMIT:  # no NaN keys
            self[key] = text
        return text


_ABSENT = object()  # stage and executed of a violation that has neither
#: A violation's key in the frame caches: (rule, code, severity, cost, stage, executed).
_FRAME_KEY = operator.itemgetter("rule", "code", "severity", "cost", "stage", "executed")


class _ViolationFrames(dict[Any, str]):
    """``frames[rule, code, severity, cost, stage, executed]`` is ``prefix`` and then a
    violation's text up to its message: ``{"rule":..,"code":..,"severity":..,"cost":..,
    "stage":..,"executed":..,"message":``. The caller checks that ``executed`` is a bool
    (or ``_ABSENT``, with ``stage``)."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def __missing__(self, key: Any) -> str:
        rule, code, severity, cost, stage, executed = key
        text = (f'{self.prefix}{{"rule":{_STRINGS[rule]},"code":{_STRINGS[code]},'
                f'"severity":{_STRINGS[severity]},"cost":{_number(cost)}')
        if stage is not _ABSENT:
            text += f',"stage":{_STRINGS[stage]},"executed":{"true" if executed else "false"}'
        text += ',"message":'
        if cost == cost and len(self) < _CACHE_LIMIT:
            self[key] = text
        return text


_STRINGS = _Strings()
_SUMMARIES = _Summaries()
_FRAMES = _ViolationFrames("")
_LONE_FRAMES = _ViolationFrames(',"violations":[')  # the frame of a record's only violation


def _violation(v: Any) -> str:
    """One violation: the kernel's five fields (``Violation.as_dict``), optionally with
    ``stage`` and ``executed`` as ``GovernedEnv`` adds them; any other shape goes to the
    general encoder (keys in the dict's own order)."""
    try:
        size = len(v)
        if size == 7:
            key = _FRAME_KEY(v)
            if key[5] is True or key[5] is False:
                return f'{_FRAMES[key]}{encode_basestring(v["message"])}}}'
        elif size == 5:
            frame = _FRAMES[v["rule"], v["code"], v["severity"], v["cost"], _ABSENT, _ABSENT]
            return f'{frame}{encode_basestring(v["message"])}}}'
    except (KeyError, TypeError, ValueError):
        pass
    return _encode(v)


def _rest(violations: Any, extra: Any) -> str:
    """A record's text from ``,"violations":`` to ``,"prev":"``, for any values."""
    if not violations:
        listed = "[]"
    elif isinstance(violations, list | tuple):
        listed = f"[{','.join(map(_violation, violations))}]"
    else:
        listed = _encode(violations)
    extra_json = f',"extra":{_encode(extra)}' if extra else ""
    return f',"violations":{listed}{extra_json},"prev":"'


def _integer(value: Any) -> str:
    """JSON text of an integer (a NumPy one too); any other value is encoded as it is."""
    try:
        return str(operator.index(value))
    except (TypeError, ValueError):  # not an integer, or one too long to print
        return _encode(value)


def _head(run_json: str, episode: Any) -> str:
    """A record's text from after the time's digits to ``"step":``."""
    return f'e-6,"run":{run_json},"episode":{_integer(episode)},"step":'


_CLEAN_REST = _rest(None, None)


def _write(fh: IO[bytes], lines: list[str]) -> None:
    """Write and clear ``lines``, joined a chunk at a time (one 500 kB string costs twice
    as much to build and write as eight 60 kB ones: fresh pages for the big one), to an
    unbuffered binary file: what ``write`` returns is on the file, and no newline is
    translated (a Windows text file would end every line in ``\r\n``).

    All or nothing: if a write fails part-way (a full disk, a size limit, an interrupt),
    the file is cut back to where this flush began and ``lines`` are kept, so a later
    flush writes them once (was: the part written stayed, and the retry wrote it again,
    which broke the chain for good)."""
    done = 0  # bytes of this flush on the file (the recorder's lock keeps other writers out)
    try:
        for start in range(0, len(lines), _WRITE_LINES):
            data = memoryview("".join(lines[start:start + _WRITE_LINES]).encode())
            while data:
                written = fh.write(data)
                if not written:
                    raise OSError(f"audit log write wrote nothing ({len(data)} bytes left)")
                done += written
                data = data[written:]
    except BaseException:
        # (if the file cannot be cut back, the reader will say where it broke)
        with contextlib.suppress(OSError):
            fh.truncate(os.fstat(fh.fileno()).st_size - done)
        raise
    lines.clear()


_SURROGATE = re.compile("[\ud800-\udfff]")
#: a high surrogate right before a low one, or that low one: two code points that JSON's
#: escapes would read back as the single character they encode
_PAIRED = re.compile("[\ud800-\udbff](?=[\udc00-\udfff])|(?<=[\ud800-\udbff])[\udc00-\udfff]")


def _escape_surrogates(text: str) -> str:
    """``text`` with each lone surrogate written as a JSON ``\\uXXXX`` escape: only a JSON
    string can hold one, and the escape reads back as the same character. Two that would
    read back as one character (a high surrogate before a low one) are each written as
    U+FFFD instead: the record must not show a character that was not there."""
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", _PAIRED.sub("\ufffd", text))


def new_run_id(run_id: Any = None) -> str:
    """``run_id`` if it is a non-empty string, a random one for ``None``; else ValueError."""
    if run_id is None:
        return uuid.uuid4().hex[:12]
    if not isinstance(run_id, str) or not run_id:
        raise ValueError(f"run_id must be a non-empty string (or None for a random one), "
                         f"got {run_id!r}")
    return run_id


def _lock(fh: IO[str], path: Path) -> None:
    """One recorder per file: two would each continue the chain from where it stood when
    they opened it, and interleave two chains. (POSIX advisory lock, released on close.)"""
    if fcntl is None:
        return
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise RuntimeError(
            f"audit log {path} is already open by another recorder (close that env first, "
            "or give each env its own file, e.g. audit_path='runs/audit-{run}.jsonl': {run} "
            "becomes the env's run id)"
        ) from None


def _starts_like_a_log(path: Path) -> bool:
    """Whether a file without a complete record begins as a record does (what a crash in
    a recorder's first write leaves)."""
    with path.open("rb") as fh:
        return starts_like_a_record(fh.read(len(_RECORD_START)))


def _open_locked(path: Path) -> tuple[IO[bytes], bool]:
    """The log opened for appending and locked, and whether this call created it. A
    recorder that records nothing removes the file it created (:meth:`Recorder.close`),
    so the file may go between the open and the lock: then it is opened again, for a
    recorder must not lock, and write to, a file no longer in the folder."""
    for _ in range(100):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o666)
            created = True
        except FileExistsError:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_APPEND)
            except FileNotFoundError:  # removed since: create it
                continue
            created = False
        fh = os.fdopen(fd, "ab", buffering=0)  # unbuffered: see _write
        _lock(fh, path)
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return fh, created
        fh.close()
    raise RuntimeError(f"audit log {path} keeps being removed while it is opened")


def _finalize(fh: IO[bytes], lines: list[str], path: Path, created: bool,
              session: dict[str, Any]) -> None:
    """Close a recorder's file: its buffered lines and its session's close record
    written (nothing, when it recorded no decision: the file removed if it made it)."""
    if not fh.closed:
        try:
            if lines:  # where the chain ends: the last buffered line, else the file
                end = _LAST_RECORD.fullmatch(lines[-1][:-1].encode())
                seq, prev = int(end.group(1)), end.group(2).decode()  # type: ignore[union-attr]
            else:
                seq, prev = _last_record(path)
            if seq > session["start_seq"]:  # decisions were recorded: the session ends here
                body = (f'{{"seq":{seq + 1},"time":{time_ns() // 1000}e-6,"run":{session["run_json"]},'
                        f'"event":"close","decisions":{seq - session["start_seq"]},'
                        f'"by":"{session["by"]}","govgym":{session["version"]},"prev":"{prev}"')
                digest = sha256(body.encode()).hexdigest()
                lines.append(f'{body},"hash":"{digest}"}}\n')
                _write(fh, lines)
                session["closed_at"] = (seq + 1, digest)
            elif created and os.fstat(fh.fileno()).st_size == 0:
                # a file this recorder created and never wrote to (an env never closed)
                with contextlib.suppress(OSError):  # removed under the lock, before release
                    path.unlink()
        finally:  # a failed last write still releases the file and its lock
            fh.close()


#: every open recorder of this process, for _forked_child
_OPEN: weakref.WeakSet[Recorder] = weakref.WeakSet()


def _forked_child() -> None:
    """In a forked child: its copies of the parent's recorders drop the lines they hold
    (the parent writes them) and record nothing more, so the child's exit flush cannot
    write the parent's records a second time."""
    for recorder in list(_OPEN):
        recorder._lines.clear()  # the finalizer's list too: it writes nothing
        recorder._closed = True
        recorder._forked = True
        recorder._fh.close()  # the child's descriptor; the parent's file and lock stay


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked_child)


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
        try:
            every = operator.index(flush_every)  # an int, a NumPy int; not 2.5, "10" or True
        except TypeError:
            every = None
        if every is None or isinstance(flush_every, bool) or every < 1:
            raise ValueError(f"flush_every must be a whole number >= 1, got {flush_every!r}")
        run_id = new_run_id(run_id)
        if not str(path):
            raise ValueError("the audit log's path is empty")
        self.path = Path(path)
        if self.path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "a folder, not a file for an audit log",
                                    str(self.path))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.run_id = run_id
        self.flush_every = every
        self._run_json = _encode(self.run_id)
        self._episode: Any = None  # the episode self._head was built for
        self._head = _head(self._run_json, None)
        self._fh, self._created = _open_locked(self.path)
        # read under the lock: a recorder that closed just before cannot leave a stale tail
        try:
            self._seq, self._prev = _last_record(self.path)
            if self._seq < 0 and self._fh.tell() > 0 and not _starts_like_a_log(self.path):
                raise ValueError(
                    f"{self.path} is not an audit log (it holds no audit record): a recorder "
                    "appends only to a log, or to a new file")
        except BaseException:
            self._fh.close()
            raise
        self._closed = False
        self._forked = False  # a forked child's copy (see _forked_child)
        self._pid = os.getpid()
        if self._fh.tell() > 0 and not self._ends_with_newline():
            self._fh.write(b"\n")  # terminate a torn line so the chain resumes on its own line
        self._lines: list[str] = []  # finished lines, not yet written
        import govgym  # imported by now: this module is part of it

        # what the finalizer needs to write the session's close record, and tells back
        self._session: dict[str, Any] = {  # (a lone surrogate in the run id escaped, as in append)
            "start_seq": self._seq, "run_json": _escape_surrogates(self._run_json), "by": "exit",
            "version": _encode(govgym.__version__), "closed_at": None}
        self._finalizer = weakref.finalize(self, _finalize, self._fh, self._lines, self.path,
                                           self._created, self._session)
        _OPEN.add(self)

    def _closed_error(self) -> ValueError:
        if self._forked:
            return ValueError(
                f"recorder for {self.path} belongs to process {self._pid}, which forked this "
                "one: a forked child does not write to its parent's audit log (open a "
                "Recorder of its own, on another path)")
        return ValueError(f"recorder for {self.path} is closed")

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) == b"\n"

    def append(self, episode: int, step: int, proposal: Any, verdict: str,
               violations: list[dict[str, Any]] | None = None, cost: float = 0.0,
               reward_delta: float = 0.0, agent: str | None = None,
               extra: dict[str, Any] | None = None) -> None:
        """Serialise, hash and buffer one decision record (``proposal`` should already
        be bounded, see :func:`summarize_action`)."""
        if self._closed:
            raise self._closed_error()
        micros = time_ns() // 1000
        seq = self._seq + 1
        try:  # the fast path: cached text for what repeats, checks folded into lookups
            if type(episode) is not int or type(step) is not int:
                raise TypeError("episode or step is not an int")
            if episode != self._episode:
                self._head = _head(self._run_json, episode)
                self._episode = episode
            if type(proposal) is list and len(proposal) == 1 and type(proposal[0]) is int:
                summary = _SUMMARIES[proposal[0], verdict, cost, reward_delta, agent]
            else:
                summary = _summary(proposal, verdict, cost, reward_delta, agent)
            if extra:
                rest = _rest(violations, extra)
            elif not violations:
                rest = _CLEAN_REST
            elif type(violations) is list and len(violations) == 1 and len(v := violations[0]) == 7:
                key = _FRAME_KEY(v)  # the one violation as GovernedEnv gives it, inlined
                if key[5] is not True and key[5] is not False:
                    raise TypeError("executed is not a bool")
                rest = f'{_LONE_FRAMES[key]}{encode_basestring(v["message"])}}}],"prev":"'
            else:
                rest = _rest(violations, None)
            body = f'{{"seq":{seq},"time":{micros}{self._head}{step}{summary}{rest}{self._prev}"'
        except (KeyError, TypeError, ValueError):  # unusual values: the same text, slowly
            body = (f'{{"seq":{seq},"time":{micros}{_head(self._run_json, episode)}'
                    f'{_integer(step)}{_summary(proposal, verdict, cost, reward_delta, agent)}'
                    f'{_rest(violations, extra)}{self._prev}"')
        try:
            encoded = body.encode()
        except UnicodeEncodeError:  # a lone surrogate (legal in a str, not in UTF-8)
            body = _escape_surrogates(body)
            encoded = body.encode()
        self._prev = digest = sha256(encoded).hexdigest()
        self._seq = seq
        lines = self._lines
        lines.append(f'{body},"hash":"{digest}"}}\n')
        if len(lines) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Write the buffered lines to the file: all of them, or none if the write fails
        (the file is cut back and the lines stay buffered for the next flush)."""
        if self._fh.closed:
            raise self._closed_error()
        lines = self._lines
        if lines:
            _write(self._fh, lines)

    @property
    def last_hash(self) -> str:
        """The hash of the last record appended; after :meth:`close`, of the session's
        close record. A hash chain shows any change to the records it holds but not the
        loss of its last ones (a file cut at a line end still verifies, and decisions cut
        off with their close record are only reported as unclosed): keep this value apart
        from the log, and ``govgym audit verify FILE --last-hash HASH`` shows whether the
        log still ends there (or went on from there)."""
        closed_at = self._session["closed_at"]
        return self._prev if closed_at is None else closed_at[1]

    @property
    def records_written(self) -> int:
        """Sequence number of the last record written, plus one (file-wide; a close
        record counts)."""
        closed_at = self._session["closed_at"]
        return self._seq + 1 - len(self._lines) if closed_at is None else closed_at[0] + 1

    @property
    def closed(self) -> bool:
        return self._fh.closed

    def close(self) -> None:
        """Write what is buffered and the session's close record, and release the file.
        A recorder that recorded no decision writes nothing, and a file it created is
        removed (the throwaway env ``AsyncVectorEnv`` builds to read the spaces leaves no
        empty log behind)."""
        if not self._fh.closed and self._lines:
            self.flush()  # first: if it fails, the lines stay buffered and close() can be retried
        self._closed = True
        _OPEN.discard(self)
        if self._finalizer.alive:
            self._session["by"] = "close"
        self._finalizer()  # writes what is buffered and the close record; removes an
                           # empty file it created

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError(
            f"a Recorder cannot be pickled or copied: it holds the open audit log {self.path}, "
            "and a copy appending to the same hash chain would fork it; open a Recorder of "
            "its own for the copy's records")

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
