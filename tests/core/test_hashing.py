"""The tree format "mlbuild-nar-1": an independent pure-Python reading of the spec in
native/src/lib.rs, held against the native ``hash_tree`` on generated trees.

    stream  := "mlbuild-nar-1\\0" node
    node    := "F" exec u64le(size) bytes       exec = "x" | "-"
             | "L" u64le(len) target
             | "D" u64le(count) { u64le(len) name node }*   entries sorted by name bytes
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from mlbuild import hashing


def _u64(n: int) -> bytes:
    return struct.pack("<Q", n)


def nar(path: str) -> bytes:
    st_ = os.lstat(path)
    if stat.S_ISLNK(st_.st_mode):
        target = os.fsencode(os.readlink(path))
        return b"L" + _u64(len(target)) + target
    if stat.S_ISDIR(st_.st_mode):
        names = sorted(os.fsencode(n) for n in os.listdir(path))
        out = [b"D", _u64(len(names))]
        for n in names:
            out += [_u64(len(n)), n, nar(os.path.join(path, os.fsdecode(n)))]
        return b"".join(out)
    with open(path, "rb") as f:
        data = f.read()
    return b"F" + (b"x" if st_.st_mode & 0o111 else b"-") + _u64(len(data)) + data


def reference(path: Path) -> tuple[int, str]:
    stream = b"mlbuild-nar-1\0" + nar(str(path))
    return len(stream), hashlib.sha256(stream).hexdigest()


# A tree: dict name -> ("f", bytes, exec) | ("l", target) | ("d", dict)
names = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="/\0"), min_size=1, max_size=8).filter(
    lambda s: s not in (".", "..") and len(os.fsencode(s)) < 200)
files = st.tuples(st.just("f"), st.binary(max_size=300), st.booleans())
links = st.tuples(st.just("l"), st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\0"),
                                         min_size=1, max_size=30))
trees = st.recursive(
    st.dictionaries(names, files | links, max_size=4),
    lambda children: st.dictionaries(names, files | links | st.tuples(st.just("d"), children), max_size=4),
    max_leaves=12,
)


def materialise(root: Path, tree: dict[str, Any], order: int = 1) -> None:
    root.mkdir()
    for name in sorted(tree, reverse=order < 0):  # creation order differs between copies
        node, p = tree[name], root / name
        if node[0] == "f":
            p.write_bytes(node[1])
            os.chmod(p, 0o755 if node[2] else 0o644)
        elif node[0] == "l":
            os.symlink(node[1], p)
        else:
            materialise(p, node[1], order)


@settings(max_examples=150, deadline=None)
@given(trees)
def test_native_tree_hash_matches_the_spec(tree: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "t"
        materialise(root, tree)
        h = hashing.hash_tree(root)
        assert (h.size, h.sha256) == reference(root)
        assert h.method == "tree"


@settings(max_examples=60, deadline=None)
@given(trees)
def test_tree_hash_ignores_entry_order_times_owners_and_non_exec_modes(tree: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as d:
        a, b = Path(d) / "a", Path(d) / "b"
        materialise(a, tree, 1)
        materialise(b, tree, -1)
        for p in [b, *b.rglob("*")]:
            if p.is_symlink():
                os.utime(p, (12345, 67890), follow_symlinks=False)
                continue
            if p.is_file():
                mode = stat.S_IMODE(p.stat().st_mode)
                os.chmod(p, (mode & 0o111) | 0o600)  # other read/write bits differ; exec bit kept
            os.utime(p, (12345, 67890))
            if os.geteuid() == 0:
                os.chown(p, 4321, 4321)
        assert hashing.hash_tree(a) == hashing.hash_tree(b)


def test_tree_hash_sees_the_exec_bit_symlink_targets_and_names(tmp_path: Path) -> None:
    base = {"f": ("f", b"data", False), "l": ("l", "f"), "d": ("d", {"g": ("f", b"", False)})}
    variants = {
        "exec": {**base, "f": ("f", b"data", True)},
        "content": {**base, "f": ("f", b"Data", False)},
        "link": {**base, "l": ("l", "g")},
        "name": {**{k: v for k, v in base.items() if k != "f"}, "F": base["f"]},
        "empty-dir": {**base, "e": ("d", {})},
    }
    materialise(tmp_path / "base", base)
    h0 = hashing.hash_tree(tmp_path / "base")
    seen = {h0.sha256}
    for name, tree in variants.items():
        materialise(tmp_path / name, tree)
        h = hashing.hash_tree(tmp_path / name)
        assert (h.size, h.sha256) == reference(tmp_path / name)
        assert h.sha256 not in seen, name
        seen.add(h.sha256)


def test_flat_hash_of_a_file_and_of_a_one_file_tree(tmp_path: Path) -> None:
    f = tmp_path / "x"
    f.write_bytes(b"abc")
    h = hashing.hash_file(f)
    assert (h.size, h.sha256) == (3, hashlib.sha256(b"abc").hexdigest())
    assert h == hashing.hash_bytes(b"abc")
    assert hashing.hash_tree(f).sha256 == hashlib.sha256(b"mlbuild-nar-1\0F-" + _u64(3) + b"abc").hexdigest()
