"""Test driver that runs INSIDE the sandbox next to an untrusted solution (stdlib only).

Nothing this driver reports is trusted as a verdict. It only turns calls into plain data:

- ``call``: call ``fn_name`` on each input and write each result, encoded as exact-typed
  plain data, to the channel. The harness compares them with expected outputs that never
  enter the sandbox, so writing a "result" is only ever answering the question.
- ``record``: run an assertion test program against the solution, recording every call the
  test makes to the solution's functions (arguments and encoded result). The test sees the
  decoded copy of each result, never the solution's own object (no always-equal objects).
- ``replay``: run the same test program in a fresh sandbox WITHOUT the solution, answering
  its calls from the records. Only this clean process, which no model code touched, decides
  whether the assertions hold; it then writes the harness's one-time nonce.

The job arrives as JSON on stdin; the channel is the original stdout (the solution's prints
are redirected to stderr). The parent imports ``encode``/``decode`` from here too.
"""

import builtins
import json
import os
import random
import sys

_MAX_DEPTH = 200
_EXACT = (type(None), bool, str)


class DriverMismatch(BaseException):
    """Replay diverged from the record (BaseException: test code cannot swallow it)."""


def encode(x, depth=0):
    """Exact-typed, JSON-able form of plain data; TypeError for anything else."""
    if depth > _MAX_DEPTH:
        raise TypeError("result nested too deeply")
    t = type(x)
    if t in _EXACT:
        return x
    if t is int:
        return x if -(2**53) < x < 2**53 else {"#": "int", "v": format(x, "x")}
    if t is float:
        return (
            x if x == x and x not in (float("inf"), float("-inf")) else {"#": "float", "v": repr(x)}
        )
    if t is list:
        return [encode(v, depth + 1) for v in x]
    if t is tuple:
        return {"#": "tuple", "v": [encode(v, depth + 1) for v in x]}
    if t is dict:
        return {
            "#": "dict",
            "v": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in x.items()],
        }
    if t in (set, frozenset):
        items = sorted(
            (encode(v, depth + 1) for v in x), key=lambda e: json.dumps(e, sort_keys=True)
        )
        return {"#": t.__name__, "v": items}
    if t is complex:
        return {"#": "complex", "v": [x.real, x.imag]}
    if t is bytes:
        return {"#": "bytes", "v": x.hex()}
    raise TypeError("unsupported result type " + t.__name__)


def decode(e):
    """Inverse of ``encode``; builds only plain built-in values."""
    if isinstance(e, list):
        return [decode(v) for v in e]
    if not isinstance(e, dict):
        return e
    if "#" not in e or "v" not in e:
        raise ValueError("bad encoded value")
    tag, v = e["#"], e["v"]
    if tag == "int":
        return int(v, 16)
    if tag == "float":
        return float(v)
    if tag == "tuple":
        return tuple(decode(i) for i in v)
    if tag == "dict":
        return {decode(k): decode(val) for k, val in v}
    if tag == "set":
        return {decode(i) for i in v}
    if tag == "frozenset":
        return frozenset(decode(i) for i in v)
    if tag == "complex":
        return complex(v[0], v[1])
    if tag == "bytes":
        return bytes.fromhex(v)
    raise ValueError("bad encoded value")


def _error(exc):
    name = type(exc).__name__
    return name if isinstance(getattr(builtins, name, None), type) else "Exception"


def _raise(name):
    cls = getattr(builtins, name, None)
    if not (isinstance(cls, type) and issubclass(cls, Exception)):
        cls = RuntimeError
    raise cls("raised by the solution")


def _emit(chan, obj):
    chan.write(json.dumps(obj, allow_nan=False) + "\n")
    chan.flush()


def _load_solution(path):
    ns = {"__name__": "solution", "__builtins__": builtins}
    with open(path, encoding="utf-8") as fh:
        source = fh.read()
    exec(compile(source, path, "exec"), ns)
    return ns


def _find(ns, name):
    if callable(ns.get(name)):
        return ns[name]
    cls = ns.get("Solution")
    if isinstance(cls, type) and callable(getattr(cls, name, None)):
        return getattr(cls(), name)  # LeetCode-style ``class Solution``
    raise NameError("solution defines no function " + repr(name))


def run_call(job, chan, ns):
    fn = _find(ns, job["fn_name"])
    for i, args in enumerate(job["inputs"]):
        args = decode(args)
        try:
            result = fn(*args) if isinstance(args, list) else fn(args)
            _emit(chan, {"i": i, "r": encode(result)})
        except Exception as exc:
            _emit(chan, {"i": i, "e": _error(exc)})


def _encode_args(args, kwargs):
    try:
        return encode([list(args), dict(kwargs)])
    except TypeError:
        return "?"  # e.g. a lambda passed by the test: calls are matched by order only


def make_recorder(name, fn, chan, state):
    def recorder(*args, **kwargs):
        if state["depth"]:  # the solution calling its own helper: not a test call
            return fn(*args, **kwargs)
        a = _encode_args(args, kwargs)
        rng = random.getstate()  # the solution's own randomness must not shift the test's
        state["depth"] += 1
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            _emit(chan, {"n": name, "a": a, "e": _error(exc)})
            raise
        finally:
            state["depth"] -= 1
            random.setstate(rng)
        try:
            r = encode(result)
        except TypeError:
            _emit(chan, {"n": name, "a": a, "e": "TypeError"})
            raise TypeError("the result is not plain data") from None
        _emit(chan, {"n": name, "a": a, "r": r})
        return decode(r)

    return recorder


def make_replayer(name, records):
    def replayer(*args, **kwargs):
        if not records:
            raise DriverMismatch("the solution answered fewer calls than the test makes")
        rec = records.pop(0)
        a = _encode_args(args, kwargs)
        if rec.get("n") != name or (rec.get("a") != "?" and rec.get("a") != a):
            raise DriverMismatch("call does not match the recorded call")
        if "e" in rec:
            _raise(rec["e"])
        return decode(rec.get("r"))

    return replayer


def run_test(job, chan, ns):
    random.seed(job.get("seed", 0))
    exec(compile(job["test"], "test.py", "exec"), ns)
    entry = job.get("entry_point")
    if entry and callable(ns.get("check")):
        ns["check"](ns[entry])


def main():
    job = json.loads(sys.stdin.read())
    chan = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # the solution's prints go to stderr, away from the channel
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    sys.stdin = open(0)  # noqa: SIM115 - solutions that read input get EOF
    mode = job["mode"]
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    if mode == "call":
        run_call(job, chan, _load_solution("solution.py"))
    elif mode == "record":
        ns = _load_solution("solution.py")
        state = {"depth": 0}
        for name in job["names"]:
            if callable(ns.get(name)):
                ns[name] = make_recorder(name, ns[name], chan, state)
        run_test(job, chan, ns)
    elif mode == "replay":
        records = list(job["records"])
        ns = {"__name__": "solution", "__builtins__": builtins}
        for name in job["names"]:
            ns[name] = make_replayer(name, records)
        run_test(job, chan, ns)
        _emit(chan, {"ok": job["nonce"]})


if __name__ == "__main__":
    main()
