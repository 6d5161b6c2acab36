"""Bad manifests: the error names file, line and key; exit non-zero; nothing is written."""

from __future__ import annotations

import pytest

from tests.core.project import MANIFEST, Project

GOOD = MANIFEST

CASES = {
    "malformed-toml": (
        GOOD + "\n[build.broken\nbuilder = \"concat\"\n",
        # the unterminated header is on the line after GOOD's last line + the blank line
        lambda n: f"error: manifests/test.toml:{n + 2}: malformed TOML",
    ),
    "unknown-kind": (
        GOOD + "\n[fetchh.extra]\nurl = \"{base}/x\"\n",
        lambda n: f"error: manifests/test.toml:{n + 2}: `fetchh`: unknown kind `fetchh`",
    ),
    "unknown-field": (
        GOOD + "\n[fetch.extra]\nurl = \"{base}/x\"\nchecksum = \"abc\"\n",
        lambda n: f"error: manifests/test.toml:{n + 4}: `fetch.extra.checksum`: unknown field `checksum`",
    ),
    "cycle": (
        GOOD + "\n[build.ping]\nbuilder = \"concat\"\ninputs = {{ a = \"pong\" }}\n"
        "\n[build.pong]\nbuilder = \"concat\"\ninputs = {{ a = \"ping\" }}\n",
        lambda n: f"error: manifests/test.toml:{n + 2}: `ping`: dependency cycle: ping -> pong -> ping",
    ),
    "missing-input-target": (
        GOOD + "\n[build.orphan]\nbuilder = \"concat\"\ninputs = {{ a = \"nowhere\" }}\n",
        lambda n: f"error: manifests/test.toml:{n + 2}: `build.orphan.inputs.a`: input `a` names `nowhere`, "
                  "which no manifest declares",
    ),
    "missing-required-input": (
        GOOD + "\n[build.orphan]\nbuilder = \"concat\"\ninputs = {{ b = \"hello\" }}\n",
        lambda n: f"error: manifests/test.toml:{n + 2}: `build.orphan.inputs`: missing input `a`",
    ),
    "unknown-param": (
        GOOD + "\n[build.odd]\nbuilder = \"concat\"\ninputs = {{ a = \"hello\" }}\nparams = {{ glue = \"+\" }}\n",
        lambda n: (
            f"error: manifests/test.toml:{n + 2}: `build.odd.params.glue`: builder `concat` has no parameter `glue`"
        ),
    ),
    "param-wrong-type": (
        GOOD + "\n[build.odd]\nbuilder = \"concat\"\ninputs = {{ a = \"hello\" }}\nparams = {{ sleep = \"long\" }}\n",
        lambda n: f"error: manifests/test.toml:{n + 2}: `build.odd.params.sleep`: parameter `sleep` expects float, "
                  "found str 'long'",
    ),
    "unknown-builder": (
        GOOD + "\n[build.odd]\nbuilder = \"concatenate\"\ninputs = {{ a = \"hello\" }}\n",
        lambda n: f"error: manifests/test.toml:{n + 3}: `build.odd.builder`: unknown builder `concatenate`",
    ),
    "bad-hash": (
        GOOD + "\n[fetch.extra]\nurl = \"{base}/x\"\nsha256 = \"abc\"\n",
        lambda n: f"error: manifests/test.toml:{n + 4}: `fetch.extra.sha256`: expected 64 hex digits",
    ),
}


@pytest.mark.parametrize("command", [("lock",), ("realize", "greeting")])
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_manifest_names_file_line_key_and_writes_nothing(locked: Project, case: str,
                                                             command: tuple[str, ...]) -> None:
    p = locked
    p.cli("realize", "hello")
    before = p.snapshot()
    lock_before = p.lock_path.read_bytes()
    text, expected = CASES[case]
    n_good = len(GOOD.splitlines())
    p.write_manifest(text)
    r = p.cli(*command, expect=None)
    assert r.code == 3, r.err
    first = r.err.splitlines()[0]
    assert first.startswith(expected(n_good)), f"{first!r} does not start with {expected(n_good)!r}"
    assert r.out == ""
    assert p.lock_path.read_bytes() == lock_before
    assert p.snapshot() == before


def test_lock_check_without_a_lock_is_an_error(project: Project) -> None:
    r = project.cli("lock", "--check", expect=4)
    assert "error: no lockfile at" in r.err
    assert not project.lock_path.exists()


def test_unknown_target_is_a_usage_error_with_suggestions(locked: Project) -> None:
    r = locked.cli("realize", "greet", expect=2)
    assert "error: unknown target `greet`" in r.err
    assert "did you mean: greeting" in r.err
