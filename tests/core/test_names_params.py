"""Hostile names and parameter values: refused with a clear error (file, line, key; expected and
found), never a traceback, and nothing written to the lock or the store."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlbuild.builders import Param
from mlbuild.errors import UsageError
from mlbuild.manifest import MAX_NAME_LEN, MAX_STRIP_COMPONENTS, check_params
from tests.core.project import HELLO, Project


def build_decl(name: str, params: str = "") -> str:
    return f'[build.{name}]\nbuilder = "concat"\ninputs = {{{{ a = "hello" }}}}\nparams = {{{{ {params} }}}}\n'


@pytest.fixture
def ready(locked: Project) -> Project:
    """A locked project whose store exists (realize opens it before it reads the manifests)."""
    locked.cli("realize", "hello")
    return locked


def lines(p: Project) -> int:
    return len(p.manifest_path.read_text().splitlines())


def refused(p: Project, *argv: str, code: int) -> str:
    """Run ``argv``; assert exit ``code``, no traceback, lock and store untouched; the `error:` line."""
    before = p.snapshot()
    r = p.cli(*argv, expect=code)
    assert "Traceback" not in r.err and "internal error" not in r.err, r.err
    assert p.snapshot() == before
    return r.error


# --------------------------------------------------------------------------- names


def test_the_longest_allowed_name_builds_and_checks(locked: Project) -> None:
    p = locked
    name = "n" * MAX_NAME_LEN
    p.append_manifest(build_decl(name))
    out = Path(p.cli("realize", name).out.strip())
    assert out.name.endswith("-" + name) and (out / "result.txt").read_bytes() == HELLO
    # `--check` rebuilds in the longest staging path an entry gets (`<entry>.check.<pid>.<hex>`)
    r = p.cli("realize", name, "--check")
    assert f"check `{name}`: bit-identical" in r.err


@pytest.mark.parametrize("command", [("lock",), ("realize", "greeting")])
def test_a_name_one_byte_too_long_is_refused_at_load(ready: Project, command: tuple[str, ...]) -> None:
    p = ready
    n = lines(p)
    name = "n" * (MAX_NAME_LEN + 1)
    p.append_manifest(build_decl(name))
    error = refused(p, *command, code=3)
    assert error.startswith(f"error: manifests/test.toml:{n + 2}: `build`: name `{'n' * 40}...` is "
                            f"{MAX_NAME_LEN + 1} bytes long; a declaration name is at most {MAX_NAME_LEN} bytes")


def test_a_240_character_name_is_refused(ready: Project) -> None:
    p = ready
    p.append_manifest(build_decl("b" * 240))
    assert f"at most {MAX_NAME_LEN} bytes" in refused(p, "realize", "greeting", code=3)


@pytest.mark.parametrize("name, shown", [
    ('"bad\\n"', "'bad\\n'"),  # `$` of a search would accept the trailing newline
    ('"Upper"', "'Upper'"),
    ('"caf\u00e9"', "'caf\u00e9'"),
    ('"a/b"', "'a/b'"),
    ('"-dash"', "'-dash'"),
])
def test_unsafe_characters_are_refused(ready: Project, name: str, shown: str) -> None:
    p = ready
    p.append_manifest(f'[build.{name}]\nbuilder = "concat"\ninputs = {{{{ a = "hello" }}}}\n')
    error = refused(p, "realize", "greeting", code=3)
    assert error.startswith("error: manifests/test.toml")
    assert f": `build`: invalid name {shown}: expected lowercase ASCII letters, digits and `.-_+`" in error


# --------------------------------------------------------------------------- parameter values


@pytest.mark.parametrize("value, found", [
    ("nan", "expects a finite number, found nan"),
    ("inf", "expects a finite number, found inf"),
    ("-inf", "expects a finite number, found -inf"),
    ("1e308", ("expects float in 0..3600 (seconds to sleep half-way through writing the output (tests)), "
               "found float 1e+308")),
    ("-1.0", "expects float in 0..3600"),
    ("100000000000000000000000000000000000000000", ("expects float in 0..3600 (seconds to sleep half-way through "
                                                    "writing the output (tests)), found int of 137 bits")),
])
def test_manifest_param_values_out_of_range_are_refused(ready: Project, value: str, found: str) -> None:
    p = ready
    n = lines(p)
    p.append_manifest(build_decl("odd", f"sleep = {value}"))
    error = refused(p, "realize", "greeting", code=3)
    assert error.startswith(f"error: manifests/test.toml:{n + 2}: `build.odd.params.sleep`: parameter `sleep` {found}")


@pytest.mark.parametrize("value, found", [
    ("nan", "expects a finite number, found nan"),
    ("inf", "expects a finite number, found inf"),
    ("1e308", "expects float in 0..3600"),
    ("1e999", "expects a finite number, found inf"),
    ("1" * 5000, "expects a finite number, found inf"),  # too many digits for int(): read as a float
    ("-0.5", "expects float in 0..3600"),
])
def test_set_override_values_out_of_range_are_refused(ready: Project, value: str, found: str) -> None:
    p = ready
    error = refused(p, "realize", "greeting", "--set", f"sleep={value}", code=2)
    assert error.startswith(f"error: `greeting`: parameter `sleep` {found}")


def test_values_at_the_ends_of_the_range_are_accepted(locked: Project) -> None:
    p = locked
    p.append_manifest(build_decl("edge", "sleep = 0"))
    out = Path(p.cli("realize", "edge").out.strip())
    assert (out / "result.txt").read_bytes() == HELLO
    params = check_params("concat", {"sleep": Param(float, 0.0, "", min=0.0, max=3600.0)}, {"sleep": 3600},
                          lambda msg, key: UsageError(msg))
    assert params == {"sleep": 3600.0} and isinstance(params["sleep"], float)


def test_default_ranges_of_params_without_their_own() -> None:
    schema = {"ratio": Param(float, 0.0), "count": Param(int, 0)}

    def check(**given: object) -> dict[str, object]:
        return check_params("b", schema, given, lambda msg, key: UsageError(msg))

    assert check(ratio=-1e9, count=2**31 - 1) == {"count": 2**31 - 1, "ratio": -1e9}
    assert check(ratio=12, count=-(2**31)) == {"count": -(2**31), "ratio": 12.0}
    cases: list[tuple[dict[str, object], str]] = [
        ({"ratio": float("nan")}, "parameter `ratio` expects a finite number, found nan"),
        ({"ratio": 1e308}, "parameter `ratio` expects float in -1e+09..1e+09, found float 1e+308"),
        ({"ratio": 10**400}, "parameter `ratio` expects float in -1e+09..1e+09, found int of 1329 bits"),
        ({"count": 2**31}, "parameter `count` expects int in -2147483648..2147483647, found int 2147483648"),
        ({"count": True}, "parameter `count` expects int, found bool True"),
    ]
    for given, message in cases:
        with pytest.raises(UsageError) as e:
            check(**given)
        assert e.value.message == message


# --------------------------------------------------------------------------- strip_components


@pytest.mark.parametrize("value, found", [
    ("65", "int 65"),
    ("-1", "int -1"),
    ("true", "bool True"),
    ("1000000000000000000000", "int 1000000000000000000000"),
])
def test_strip_components_out_of_range_is_refused(project: Project, value: str, found: str) -> None:
    p = project
    n = lines(p)
    p.append_manifest(
        f'[fetch.deep]\nurl = "{{base}}/arch/data.tar.gz"\nunpack = "tar.gz"\nstrip_components = {value}\n'
    )
    error = refused(p, "lock", code=3)
    assert error == (f"error: manifests/test.toml:{n + 5}: `fetch.deep.strip_components`: expected an integer in "
                     f"0..{MAX_STRIP_COMPONENTS}, found {found}")


def test_an_integer_of_thousands_of_digits_is_malformed_toml(project: Project) -> None:
    p = project
    p.append_manifest('[fetch.deep]\nurl = "{base}/arch/data.tar.gz"\nunpack = "tar.gz"\nstrip_components = '
                      + "9" * 5000 + "\n")
    error = refused(p, "lock", code=3)
    assert error.startswith("error: manifests/test.toml: malformed TOML: a value cannot be read")
