"""A file set whose list comes from an artifact nobody could reach is unpinned with the reason, not an abort."""

from __future__ import annotations

import socket

from mlbuild import lock as lockmod
from tests.core.project import Project


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()  # nothing listens there: connection refused, i.e. unreachable
    return port


def test_a_file_list_from_an_unreachable_artifact_is_unpinned_and_the_rest_is_locked(project: Project) -> None:
    p = project
    base = f"http://127.0.0.1:{_closed_port()}/"
    p.manifest_path.parent.mkdir(parents=True, exist_ok=True)
    p.manifest_path.write_text(f'''
[fetch.hello]
url = "{p.server.url("/files/hello.txt")}"

[fetch.listing]
url = "{base}listing.zip"
unpack = "zip"

[fetch.photos]
base_url = "{base}photos/"
files_from = {{ artifact = "listing", json = "listing.json", key = "images", field = "file_name" }}
''')
    p.serve_defaults()
    r = p.lock()
    lock = lockmod.read(p.lock_path)
    assert "hello" in lock.artifacts  # what can be pinned is
    assert set(lock.unpinned) == {"listing", "photos"}
    assert lock.unpinned["photos"].reason.startswith("its file list comes from `listing`, which is unpinned: ")
    assert "unpinned: `photos`: its file list comes from `listing`" in r.err
