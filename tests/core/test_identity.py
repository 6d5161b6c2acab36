"""A builder's identity covers all the code it can run (mlbuild.codeid), and the plan cache's key too.

The closures are checked against what Python really imports (a subprocess per builder), and
edits are made to a copy of the package at another path, never to the package under test.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mlbuild import builders, codeid, plancache
from mlbuild.graph import builder_code, builder_module_name

REPO = Path(__file__).resolve().parents[2]
REGISTRY = [builder_module_name(b) for b in builders.REGISTRY]


def copy_project(dest: Path) -> Path:
    """The package, native/ and the root Cargo files under ``dest``; returns the package copy."""
    dest.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "target", "*.pyc")
    shutil.copytree(REPO / "mlbuild", dest / "mlbuild", ignore=ignore)
    shutil.copytree(REPO / "native", dest / "native", ignore=ignore)
    for f in ("Cargo.toml", "Cargo.lock"):
        shutil.copy2(REPO / f, dest / f)
    return dest / "mlbuild"


def identities(pkg: Path) -> dict[str, codeid.CodeIdentity]:
    return {b: codeid.identity(pkg, builder_module_name(b), REGISTRY) for b in builders.REGISTRY}


def append(path: Path, text: str) -> None:
    with open(path, "a") as f:
        f.write(textwrap.dedent(text))


def changed(before: dict[str, codeid.CodeIdentity], after: dict[str, codeid.CodeIdentity]) -> set[str]:
    return {b for b in before if before[b].fingerprint() != after[b].fingerprint()}


@pytest.fixture
def pkg(tmp_path: Path) -> Path:
    return copy_project(tmp_path / "copy")


# --------------------------------------------------------------------------- (a) sound closures


PROBE = """
import importlib, json, sys
builder, closure = sys.argv[1], json.loads(sys.argv[2])
importlib.import_module(builder)
for m in closure:
    importlib.import_module(m)
print(json.dumps(sorted(m for m in sys.modules if m == "mlbuild" or m.startswith("mlbuild."))))
"""


@pytest.mark.parametrize("name", sorted(builders.REGISTRY))
def test_closure_contains_every_module_python_imports(name: str) -> None:
    code = builder_code(name)
    assert not code.over_approximated, code.over_approximated
    r = subprocess.run([sys.executable, "-S", "-c", PROBE, builder_module_name(name), json.dumps(code.modules)],
                       capture_output=True, text=True, cwd=REPO, timeout=60, check=False,
                       env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    imported = set(json.loads(r.stdout))
    assert imported - set(code.modules) == set(), f"{name}: imported but not in its identity"
    # and the identity names each module's file (relative to the project root)
    for m in code.modules:
        f = codeid.module_file(codeid.PACKAGE_DIR, m)
        if f is not None:
            assert code.files[f.relative_to(REPO).as_posix()]


def test_what_runs_every_builder_is_in_every_identity() -> None:
    for name in builders.REGISTRY:
        files = builder_code(name).files
        for f in ("mlbuild/builders/__init__.py", "mlbuild/buildexec.py", "mlbuild/sandbox.py", "mlbuild/errors.py",
                  f"mlbuild/builders/{builders.REGISTRY[name]}.py"):
            assert f in files, (name, f)
        # the registry's dispatch does not drag every other builder in
        others = {f"mlbuild/builders/{m}.py" for b, m in builders.REGISTRY.items() if b != name}
        assert not others & set(files), name


def test_harness_imports_are_followed() -> None:
    run = builder_code("mlperf-run").files
    for f in ("run", "sut", "postprocess", "images", "accuracy", "report", "system", "coco", "logs", "params"):
        assert f"mlbuild/harness/{f}.py" in run
    assert "mlbuild/harness/images.py" in builder_code("letterbox").files
    assert "mlbuild/harness/images.py" not in builder_code("python-env").files
    # the NMS is native: the native sources and the workspace files are in the run's identity
    for f in ("native/src/lib.rs", "native/Cargo.toml", "Cargo.toml", "Cargo.lock"):
        assert f in run


# --------------------------------------------------------------------------- (b) edits on a copy


def test_editing_images_changes_exactly_the_builders_that_use_it(pkg: Path) -> None:
    before = identities(pkg)
    append(pkg / "harness" / "images.py", "# an edit\n")
    after = identities(pkg)
    users = {"letterbox", "retinanet-preprocess", "preprocess", "coco128-to-coco", "mlperf-run"}
    assert changed(before, after) == users
    assert "python-env" not in changed(before, after)


@pytest.mark.parametrize("module", ["sut.py", "postprocess.py"])
def test_editing_the_sut_or_postprocessing_changes_the_run(pkg: Path, module: str) -> None:
    before = identities(pkg)
    append(pkg / "harness" / module, "\nTUNED = 1\n")
    assert changed(before, identities(pkg)) == {"mlperf-run"}


def test_native_sources_change_the_builders_that_reach_the_extension(pkg: Path) -> None:
    before = identities(pkg)
    reach = {b for b, ci in before.items() if codeid.NATIVE in ci.modules}
    assert {"mlperf-run", "loadgen-wheel"} <= reach  # NMS; hashing in fingerprint_extra
    append(pkg.parent / "native" / "src" / "lib.rs", "\n// an edit\n")
    assert changed(before, identities(pkg)) == reach


@pytest.mark.parametrize("edit", ["Cargo.toml", "Cargo.lock"])
def test_root_cargo_files_change_the_loadgen_wheel(pkg: Path, edit: str) -> None:
    before = identities(pkg)
    append(pkg.parent / edit, "\n# an edit\n")
    assert "loadgen-wheel" in changed(before, identities(pkg))


def test_import_forms_are_all_followed(pkg: Path) -> None:
    """Absolute, from-package-import-submodule, relative (both ways) and in-function imports."""
    mod = pkg / "builders" / "concat.py"
    before = identities(pkg)["concat"].modules
    assert "mlbuild.harness.sut" not in before
    append(mod, """
        import mlbuild.harness.logs


        def _late() -> None:
            from mlbuild.harness import sut  # noqa: F401
            from .. import reporter  # noqa: F401
            from ..harness.report import render_report  # noqa: F401
            import importlib

            importlib.import_module("mlbuild.harness.summary")
            importlib.import_module(".accuracy", package="mlbuild.harness")
        """)
    mods = set(identities(pkg)["concat"].modules)
    for m in ("mlbuild.harness.logs", "mlbuild.harness.sut", "mlbuild.reporter", "mlbuild.harness.report",
              "mlbuild.harness.summary", "mlbuild.harness.accuracy", "mlbuild.harness"):
        assert m in mods, m
    assert "mlbuild.cli" not in mods


def test_a_non_literal_dynamic_import_covers_the_whole_package(pkg: Path) -> None:
    append(pkg / "harness" / "params.py", """

        def _plugin(name: str) -> object:
            import importlib

            return importlib.import_module(name)
        """)
    ids = identities(pkg)
    letterbox = ids["letterbox"]
    assert "dynamic import" in letterbox.over_approximated and "mlbuild.harness.params" in letterbox.over_approximated
    assert "mlbuild/cli.py" in letterbox.files and "native/src/lib.rs" in letterbox.files
    assert not ids["python-env"].over_approximated  # it does not import harness.params


def test_a_builder_that_loads_another_builder_covers_the_registry(pkg: Path) -> None:
    append(pkg / "builders" / "concat.py", """

        def _other() -> object:
            from mlbuild import builders

            return builders.load("letterbox")
        """)
    files = identities(pkg)["concat"].files
    assert "mlbuild/builders/letterbox.py" in files and "mlbuild/harness/images.py" in files


# --------------------------------------------------------------------------- (c) paths don't matter


def test_identical_copies_at_different_paths_have_identical_identities(tmp_path: Path, pkg: Path) -> None:
    other = copy_project(tmp_path / "elsewhere" / "deeper")
    a, b = identities(pkg), identities(other)
    assert {k: v.fingerprint() for k, v in a.items()} == {k: v.fingerprint() for k, v in b.items()}
    assert str(tmp_path) not in json.dumps({k: v.fingerprint() for k, v in a.items()})
    # ... and the same as the package under test's own (same bytes)
    assert a["mlperf-run"].fingerprint() == builder_code("mlperf-run").fingerprint()
    assert plancache.code_key(pkg) == plancache.code_key(other)


# --------------------------------------------------------------------------- the plan cache's key


@pytest.mark.parametrize("edit", ["native/src/lib.rs", "native/Cargo.toml", "Cargo.toml", "Cargo.lock",
                                  "mlbuild/harness/sut.py"])
def test_plan_cache_key_covers_native_sources_and_cargo_files(pkg: Path, edit: str) -> None:
    before = plancache.code_key(pkg)
    append(pkg.parent / edit, "\n# an edit\n")
    assert plancache.code_key(pkg) != before


def test_plan_cache_key_notices_a_new_native_source_file(pkg: Path) -> None:
    before = plancache.code_key(pkg)
    (pkg.parent / "native" / "src" / "extra.rs").write_text("// new\n")
    assert plancache.code_key(pkg) != before


def test_a_table_of_module_names_is_followed_unless_it_can_change(pkg: Path) -> None:
    """`import_module(TABLE[key])` follows the table's literal values; a table mutated anywhere is dynamic."""
    params = pkg / "harness" / "params.py"
    append(params, """

        _PLUGINS = {"a": "mlbuild.harness.report", "b": "mlbuild.harness.logs"}


        def _plugin(which: str) -> object:
            import importlib

            name = _PLUGINS[which]
            return importlib.import_module(name)
        """)
    letterbox = identities(pkg)["letterbox"]
    assert not letterbox.over_approximated
    assert {"mlbuild.harness.report", "mlbuild.harness.logs"} <= set(letterbox.modules)
    append(params, """

        def _register(key: str, module: str) -> None:
            _PLUGINS.update({key: module})
        """)
    assert "non-literal" in identities(pkg)["letterbox"].over_approximated
