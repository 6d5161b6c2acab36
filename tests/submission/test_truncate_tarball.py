"""The accuracy log is truncated as MLPerf's truncate_accuracy_log.py does, and the tarball is
byte-stable: the same tree gives the same bytes whatever its path, times, owners or modes."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tarfile
from pathlib import Path

from mlbuild.submission import layout, tarball


def _mlperf_truncate(path: Path) -> None:
    """truncate_accuracy_log.py's truncate_file, restated from its documented behaviour: files under
    4096 bytes are left alone; others keep the first 4096 characters, a "...", the last 4096."""
    size = path.stat().st_size
    if size < 4096:
        return
    with open(path) as src:
        start = src.read(4096)
        src.seek(size - 4096, 0)
        end = src.read(4096)
    with open(path, "w") as dst:
        dst.write(start + "\n\n...\n\n" + end)


def _log(n_records: int) -> bytes:
    rows = [f'{{ "seq_id" : {i}, "qsl_idx" : {(i * 7) % n_records}, "data" : "{(i * 2654435761) % 2**32:08X}" }}'
            for i in range(n_records)]
    return ("[\n" + ",\n".join(rows) + "\n]\n").encode()


def test_truncation_matches_mlperfs_script(tmp_path: Path) -> None:
    cases = [_log(n) for n in (1, 80, 500, 20_000)] + [b"a" * k + b"\n" for k in (4094, 4095, 4096, 8198)]
    for n, data in enumerate(cases):
        f = tmp_path / f"log{n}.json"
        f.write_bytes(data)
        _mlperf_truncate(f)
        ours = layout.truncate_accuracy_log(data)
        assert ours == f.read_bytes(), n
        if len(data) >= 4096:
            assert ours.startswith(data[:4096]) and ours.endswith(data[-4096:])
            assert b"\n\n...\n\n" in ours and len(ours) == 8199 <= 10 * 1024
            assert ours.count(b"\n\n...\n\n") == 1
        else:
            assert ours == data


def _tree(root: Path) -> Path:
    top = root / "open"
    (top / "acme" / "results" / "b").mkdir(parents=True)
    (top / "acme" / "results" / "b" / "x.txt").write_text("x\n")
    (top / "acme" / "results" / "a.json").write_text("{}\n")
    (top / "acme" / "Z").write_bytes(os.urandom(0) + b"zz")
    (top / "acme" / "empty").mkdir()
    return top


def test_tarball_is_byte_identical_across_paths_times_and_modes(tmp_path: Path) -> None:
    one = _tree(tmp_path / "one")
    two = _tree(tmp_path / "elsewhere" / "deeper")
    for p in two.rglob("*"):
        os.utime(p, (12345, 67890))
        p.chmod(0o700 if p.is_dir() else 0o600)
    sha1 = tarball.write(one, tmp_path / "1.tar.gz")
    sha2 = tarball.write(two, tmp_path / "2.tar.gz")
    blob = (tmp_path / "1.tar.gz").read_bytes()
    assert sha1 == sha2 == hashlib.sha256(blob).hexdigest()
    assert blob == (tmp_path / "2.tar.gz").read_bytes()
    # gzip header: no file name flag, mtime 0
    assert blob[:3] == b"\x1f\x8b\x08" and blob[3] & 0x08 == 0 and blob[4:8] == b"\0\0\0\0"
    with tarfile.open(tmp_path / "1.tar.gz") as tf:
        members = tf.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names, key=str.encode) and names[0] == "open"
    assert "open/acme/empty" in names
    for m in members:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "")
        assert m.mode == (0o755 if m.isdir() else 0o644)
    assert gzip.decompress(blob)  # a plain gzip stream


def test_tarball_changes_with_content(tmp_path: Path) -> None:
    top = _tree(tmp_path / "t")
    a = tarball.write(top, tmp_path / "a.tar.gz")
    (top / "acme" / "results" / "b" / "x.txt").write_text("y\n")
    assert tarball.write(top, tmp_path / "b.tar.gz") != a
    shutil.rmtree(top / "acme" / "empty")
    assert tarball.write(top, tmp_path / "c.tar.gz") not in (a,)
