"""Table-driven parity of mlbuild_loadgen with the official mlperf_loadgen 6.0.17.

Every probe below is evaluated against both modules side by side (in this process:
attributes, constructors, enums, argument conversion and exception types only; no test
runs here on the official core). Outcomes are normalised (the module's name, object
addresses) and compared; any difference fails unless the probe is listed in DELIBERATE,
whose entries name the section of rust_loadgen_bindings/README.md that explains them
(the test checks that the README has that section). A listed probe that no longer
differs fails too, so the list stays true.
"""

from __future__ import annotations

import decimal
import fractions
import pickle
import re
from typing import Any

import mlperf_loadgen  # the official wheel: a test dependency
import numpy as np
import pytest

from .conftest import CRATE

README = CRATE / "README.md"


class _Bool:
    def __bool__(self) -> bool:
        return True


class _Len:
    def __len__(self) -> int:
        return 1


class _Index:
    def __index__(self) -> int:
        return 3


class _Int:
    def __int__(self) -> int:
        return 4


class _Float:
    def __float__(self) -> float:
        return 2.5


#: Values assigned to every settings field (name -> value).
VALUES: dict[str, Any] = {
    "True": True,
    "False": False,
    "1": 1,
    "0": 0,
    "-1": -1,
    "2.5": 2.5,
    "None": None,
    "np.True_": np.bool_(True),
    "np.False_": np.bool_(False),
    "np.int64(7)": np.int64(7),
    "np.uint64(2**64-1)": np.uint64(2**64 - 1),
    "np.float32(1.5)": np.float32(1.5),
    "np.float64(3.0)": np.float64(3.0),
    "'x'": "x",
    "[]": [],
    "[1]": [1],
    "2**63": 2**63,
    "2**64": 2**64,
    "2**31": 2**31,
    "Decimal('2.7')": decimal.Decimal("2.7"),
    "Fraction(7, 2)": fractions.Fraction(7, 2),
    "obj.__bool__": _Bool(),
    "obj.__len__": _Len(),
    "obj.__index__": _Index(),
    "obj.__int__": _Int(),
    "obj.__float__": _Float(),
}

SETTINGS_CLASSES = ("TestSettings", "LogSettings", "LogOutputSettings")
ENUMS = ("TestScenario", "TestMode", "LoggingMode")
OBJECT_CLASSES = ("QuerySample", "QuerySampleResponse")
FIELDS_OF = {"QuerySample": ("id", "index"), "QuerySampleResponse": ("id", "data", "size", "n_tokens")}


def _public(obj: Any) -> set[str]:
    return {n for n in dir(obj) if not n.startswith("_")}


def _norm(v: Any, mod: Any) -> Any:
    """A comparable form of a probe's value."""
    name = type(v).__name__
    if isinstance(v, (bool, int, float, str)) or v is None:
        if isinstance(v, str):
            v = v.replace(mod.__name__, "MOD")
            v = re.sub(r"0x[0-9a-f]+", "0xADDR", v)
        return (name, v)
    if name in ENUMS:
        return ("enum", name, v.name, int(v))
    if name in OBJECT_CLASSES:
        return (name, tuple((f, getattr(v, f)) for f in FIELDS_OF[name]))
    if isinstance(v, dict):
        return ("dict", tuple((k, _norm(x, mod)) for k, x in v.items()))
    if isinstance(v, (list, tuple)):
        return (name, tuple(_norm(x, mod) for x in v))
    if isinstance(v, type):
        return ("type", v.__name__)
    return ("object", name)


def _builtin_exc(e: BaseException) -> str:
    """The exception's first builtin class (our subclasses compare as their builtin base)."""
    return next(c.__name__ for c in type(e).__mro__ if c.__module__ == "builtins")


def outcome(fn, mod: Any) -> Any:
    try:
        return ("ok", _norm(fn(mod), mod))
    except Exception as e:
        return ("raise", _builtin_exc(e))


def _set(cls: str, field: str, value: Any):
    def probe(m):
        o = getattr(m, cls)()
        setattr(o, field, value)
        return getattr(o, field)

    return probe


def _enum_probe(enum: str, expr: str):
    def probe(m):
        E = getattr(m, enum)
        first = next(iter(E.__members__.values()))
        last = list(E.__members__.values())[-1]
        return eval(expr, {"E": E, "a": first, "z": last, "pickle": pickle, "np": np})

    return probe


ENUM_EXPRS = [
    "repr(a)", "str(a)", "repr(z)", "str(z)", "int(a)", "int(z)", "a.__index__()", "hash(z)", "a.name", "z.value",
    "a == a", "a == z", "a != z", "z == int(z)", "z != int(z)", "a < z", "a <= z", "a > 1", "bool(a)",
    "E(int(z))", "E(z)", "E(True)", "E(np.int64(1))", "E(1.0)", "E('x')", "E(None)", "E()", "E(1, 2)",
    "E(-1)", "E(99)", "E(int(z)) == z", "E(int(z)) is z",
    "type(E.__members__).__name__", "list(E.__members__)", "list(E.__members__.values())",
    "E.__name__", "E.__qualname__", "E.__module__", "type(a).__name__",
    "pickle.loads(pickle.dumps(z))", "a.__getstate__()", "list(E)", "len(E.__members__)",
]


def _construct(cls: str, *args: Any, **kw: Any):
    return lambda m: getattr(m, cls)(*args, **kw)


def _cb(*_a: Any) -> None:
    return None


def _handle_kind(fn):
    """Calls fn(m) -> handle, destroys it again, and gives the handle's type."""

    def probe(m):
        h, destroy = fn(m)
        getattr(m, destroy)(h)
        return type(h)

    return probe


def build_probes() -> dict[str, Any]:
    probes: dict[str, Any] = {}
    for cls in SETTINGS_CLASSES:
        ref = getattr(mlperf_loadgen, cls)()
        probes[f"{cls}: public names"] = (
            lambda m, cls=cls: sorted(_public(getattr(mlperf_loadgen, cls)()) - _public(getattr(m, cls)())))
        for field in sorted(_public(ref) - {"FromConfig"}):
            probes[f"{cls}().{field} (default)"] = lambda m, cls=cls, field=field: getattr(getattr(m, cls)(), field)
            if field in ("log_output", "scenario", "mode", "log_mode"):
                continue
            for label, value in VALUES.items():
                probes[f"{cls}().{field} = {label}"] = _set(cls, field, value)
        for label, value in (("'x'", "x"), ("1", 1), ("None", None)):
            probes[f"{cls}({label})"] = _construct(cls, value)
    for f, vals in {"scenario": ("Server", "Offline"), "mode": ("AccuracyOnly",)}.items():
        for v in vals:
            enum = "TestScenario" if f == "scenario" else "TestMode"
            probes[f"TestSettings().{f} = {enum}.{v}"] = (
                lambda m, f=f, v=v, enum=enum: (
                    setattr(s := m.TestSettings(), f, getattr(getattr(m, enum), v)), getattr(s, f))[1]
            )
        probes[f"TestSettings().{f} = 1 (int)"] = _set("TestSettings", f, 1)
        probes[f"TestSettings().{f} = 'Server' (str)"] = _set("TestSettings", f, "Server")
    probes["LogSettings().log_mode = LoggingMode.Synchronous"] = (
        lambda m: (setattr(s := m.LogSettings(), "log_mode", m.LoggingMode.Synchronous), s.log_mode)[1]
    )
    probes["LogSettings().log_mode = 2 (int)"] = _set("LogSettings", "log_mode", 2)
    probes["LogSettings().log_output = 1"] = _set("LogSettings", "log_output", 1)
    probes["LogSettings().log_output is live"] = (
        lambda m: (setattr((s := m.LogSettings()).log_output, "outdir", "/x"), s.log_output.outdir)[1]
    )
    probes["LogSettings().log_output assignment copies"] = (
        lambda m: (setattr(s := m.LogSettings(), "log_output", o := m.LogOutputSettings()),
                   setattr(o, "prefix", "p2"), s.log_output.prefix)[2]
    )
    probes["TestSettings().FromConfig('', 'resnet50', 'Offline', 0)"] = (
        lambda m: m.TestSettings().FromConfig("", "resnet50", "Offline", 0)
    )
    probes["TestSettings().FromConfig(1, 2, 3)"] = lambda m: m.TestSettings().FromConfig(1, 2, 3)

    for enum in ENUMS:
        probes[f"{enum}: public names"] = lambda m, enum=enum: sorted(_public(getattr(m, enum)))
        for expr in ENUM_EXPRS:
            probes[f"{enum}: {expr}"] = _enum_probe(enum, expr)

    for cls in OBJECT_CLASSES:
        n = len(FIELDS_OF[cls])
        probes[f"{cls}: public names"] = lambda m, cls=cls: sorted(_public(getattr(m, cls)))
        probes[f"{cls}()"] = _construct(cls)
        probes[f"{cls}(1..{n})"] = _construct(cls, *range(1, n + 1))
        probes[f"{cls}(1)"] = _construct(cls, 1)
        probes[f"{cls}(n+1 args)"] = _construct(cls, *range(1, n + 2))
        probes[f"{cls}(-1, ...)"] = _construct(cls, -1, *range(2, n + 1))
        probes[f"{cls}(2**64, ...)"] = _construct(cls, 2**64, *range(2, n + 1))
        probes[f"{cls}(1.5, ...)"] = _construct(cls, 1.5, *range(2, n + 1))
        probes[f"{cls}(np.uint64(5), ...)"] = _construct(cls, np.uint64(5), *range(2, n + 1))
        probes[f"{cls}('x', ...)"] = _construct(cls, "x", *range(2, n + 1))
        probes[f"{cls}: pickle round trip"] = (
            lambda m, cls=cls, n=n: pickle.loads(pickle.dumps(getattr(m, cls)(*range(1, n + 1)))))
        for f in FIELDS_OF[cls]:
            for label in ("1", "-1", "2**64", "2.5", "np.int64(7)", "None"):
                probes[f"{cls}().{f} = {label}"] = _set(cls, f, VALUES[label])
    probes["QuerySampleResponse(1, 2, 3, -1).n_tokens"] = lambda m: m.QuerySampleResponse(1, 2, 3, -1).n_tokens
    probes["QuerySampleResponse(1, 2, 3, 2**63)"] = _construct("QuerySampleResponse", 1, 2, 3, 2**63)

    for cls in ("VectorQuerySample", "VectorQuerySampleResponse"):
        probes[f"{cls}()"] = lambda m, cls=cls: list(getattr(m, cls)())
        probes[f"{cls}: is a class"] = lambda m, cls=cls: isinstance(getattr(m, cls), type)

    probes["module: official names missing"] = lambda m: sorted(_public(mlperf_loadgen) - _public(m))
    for name in sorted(_public(mlperf_loadgen)):
        probes[f"module: {name} is a class"] = lambda m, name=name: isinstance(getattr(m, name), type)
        probes[f"module: {name} is callable"] = lambda m, name=name: callable(getattr(m, name))

    probes["ConstructSUT(cb, cb) -> handle"] = _handle_kind(lambda m: (m.ConstructSUT(_cb, _cb), "DestroySUT"))
    probes["ConstructFastSUT(cb, cb) -> handle"] = _handle_kind(
        lambda m: (m.ConstructFastSUT(_cb, _cb), "DestroyFastSUT"))
    probes["ConstructQDL(cb, cb, name) -> handle"] = _handle_kind(
        lambda m: (m.ConstructQDL(_cb, _cb, lambda: "qdl"), "DestroyQDL"))
    probes["ConstructQSL(10, 5, cb, cb) -> handle"] = _handle_kind(
        lambda m: (m.ConstructQSL(10, 5, _cb, _cb), "DestroyQSL"))
    probes["ConstructQDL: name_cb not called at construction"] = lambda m: _qdl_name_calls(m)
    probes["ConstructSUT(1, 2)"] = lambda m: m.ConstructSUT(1, 2)
    probes["ConstructSUT(cb)"] = lambda m: m.ConstructSUT(_cb)
    probes["ConstructQSL(-1, 5, cb, cb)"] = lambda m: m.ConstructQSL(-1, 5, _cb, _cb)
    probes["ConstructQSL(10, 5, 'x', cb)"] = lambda m: m.ConstructQSL(10, 5, "x", _cb)
    probes["ConstructQSL(10, 20, cb, cb)"] = _handle_kind(lambda m: (m.ConstructQSL(10, 20, _cb, _cb), "DestroyQSL"))
    probes["ConstructQSL(10, 5, None, cb)"] = _handle_kind(lambda m: (m.ConstructQSL(10, 5, None, _cb), "DestroyQSL"))
    probes["StartTest('a', 'b', TestSettings())"] = lambda m: m.StartTest("a", "b", m.TestSettings())
    probes["StartTest(1, 2, 3)"] = lambda m: m.StartTest(1, 2, 3)
    probes["StartTestWithLogSettings(1, 2, TestSettings(), 4)"] = (
        lambda m: m.StartTestWithLogSettings(1, 2, m.TestSettings(), 4))
    probes["QuerySamplesComplete([])"] = lambda m: m.QuerySamplesComplete([])
    probes["QuerySamplesComplete([1])"] = lambda m: m.QuerySamplesComplete([1])
    probes["QuerySamplesComplete(QuerySampleResponse())"] = lambda m: m.QuerySamplesComplete(m.QuerySampleResponse())
    probes["QuerySamplesComplete([], 1)"] = lambda m: m.QuerySamplesComplete([], 1)
    probes["FirstTokenComplete([])"] = lambda m: m.FirstTokenComplete([])
    probes["FirstTokenComplete([1])"] = lambda m: m.FirstTokenComplete([1])
    probes["DestroyQSL('x')"] = lambda m: m.DestroyQSL("x")
    probes["DestroySUT(-1)"] = lambda m: m.DestroySUT(-1)
    probes["DestroyQSL(2**64)"] = lambda m: m.DestroyQSL(2**64)
    probes["StartTest(-1, -1, TestSettings())"] = lambda m: m.StartTest(-1, -1, m.TestSettings())
    probes["ConstructQSL(1.5, 1, cb, cb)"] = lambda m: m.ConstructQSL(1.5, 1, _cb, _cb)
    return probes


def _qdl_name_calls(m: Any) -> int:
    calls: list[int] = []

    class Client:
        def name(self) -> str:
            calls.append(1)
            return self.server_name  # set after ConstructQDL, as the upstream network demo does

    c = Client()
    h = m.ConstructQDL(_cb, _cb, c.name)
    c.server_name = "late"
    m.DestroyQDL(h)
    return len(calls)


#: probe -> (README section that explains it, the outcome on ours).
DELIBERATE: dict[str, tuple[str, Any]] = {}


def _deliberate(section: str, ours: Any, *probes: str) -> None:
    for p in probes:
        DELIBERATE[p] = (section, ours)


# Enums: an out-of-range value is a ValueError, not a member named '???'.
for _e in ENUMS:
    _deliberate("Enum values outside the enum", ("raise", "ValueError"), f"{_e}: E(-1)", f"{_e}: E(99)")
# Constructors with defaults/keywords (additive): QuerySample(1) and QuerySampleResponse(1) are accepted.
_deliberate("Constructors take defaults", ("ok", ("QuerySample", (("id", 1), ("index", 0)))), "QuerySample(1)")
_deliberate("Constructors take defaults",
            ("ok", ("QuerySampleResponse", (("id", 1), ("data", 0), ("size", 0), ("n_tokens", 0)))),
            "QuerySampleResponse(1)")
_deliberate("QSL counts are checked", ("raise", "ValueError"), "ConstructQSL(10, 20, cb, cb)")
_deliberate("Callbacks must be callable", ("raise", "TypeError"), "ConstructQSL(10, 5, None, cb)")
# pybind11 cannot pickle QuerySampleResponse (its 4-int state does not match a constructor); ours can.
_deliberate("Pickling", ("ok", ("QuerySampleResponse", (("id", 1), ("data", 2), ("size", 3), ("n_tokens", 4)))),
            "QuerySampleResponse: pickle round trip")
# The official VectorQuerySample() recurses until RecursionError; ours are plain lists.
_deliberate("VectorQuerySample", ("ok", ("list", ())), "VectorQuerySample()", "VectorQuerySampleResponse()")


@pytest.fixture(scope="module")
def table(lg) -> dict[str, tuple[Any, Any]]:
    return {name: (outcome(fn, mlperf_loadgen), outcome(fn, lg)) for name, fn in build_probes().items()}


def test_the_table_is_large(table):
    # Every field x every value, every enum expression, constructors, functions.
    assert len(table) > 1500


def test_no_undocumented_difference(table):
    diffs = {name: pair for name, pair in table.items() if pair[0] != pair[1] and name not in DELIBERATE}
    shown = "\n".join(f"  {n}:\n    official {a}\n    ours     {b}" for n, (a, b) in sorted(diffs.items())[:40])
    assert not diffs, f"{len(diffs)} undocumented differences from mlperf_loadgen:\n{shown}"


def test_deliberate_differences_hold_and_are_documented(table):
    readme = README.read_text()
    for name, (section, ours) in DELIBERATE.items():
        assert name in table, f"DELIBERATE names a probe that does not exist: {name}"
        official, got = table[name]
        assert got == ours, f"{name}: ours gives {got}, DELIBERATE says {ours}"
        assert official != got, f"{name} no longer differs from the official module; drop it from DELIBERATE"
        assert f"**{section}**" in readme, f"README.md has no '**{section}**' entry explaining {name}"


def test_ours_adds_only_documented_module_names(lg):
    extras = _public(lg) - _public(mlperf_loadgen)
    readme = README.read_text()
    undocumented = sorted(n for n in extras if f"`{n}" not in readme)
    assert not undocumented, f"names only in mlbuild_loadgen that README.md does not list: {undocumented}"


def test_probes_see_real_behaviour(lg):
    """The table is not comparing two empty outcomes: spot checks on the official side."""
    o = outcome(_set("TestSettings", "infer_token_latencies", 1), mlperf_loadgen)
    assert o == ("ok", ("bool", True))
    assert outcome(_set("TestSettings", "min_query_count", -1), mlperf_loadgen) == ("raise", "TypeError")
    assert outcome(_enum_probe("TestScenario", "repr(E(1))"), lg) == ("ok", ("str", "<TestScenario.MultiStream: 1>"))
    assert outcome(lambda m: _qdl_name_calls(m), lg) == ("ok", ("int", 0))
