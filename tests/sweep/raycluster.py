"""A throw-away Ray cluster for tests: `ray start --head` on loopback in a private temp dir,
stopped by the process ids of its processes (never `ray stop`, which kills by name)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

# Ray swaps a loopback node address for the host's outward one unless told it is not a cluster
# of several hosts; with this it advertises and listens on 127.0.0.1 only.
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled",
                "RAY_USAGE_STATS_ENABLED": "0"}


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(p.name))
    return kids


def _mentioning(text: str) -> list[int]:
    found = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == os.getpid():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            found.append(int(p.name))
    return found


class Cluster:
    def __init__(self, temp_dir: Path, *, num_cpus: int = 2, object_store_memory: int = 100 * 2**20) -> None:
        self.temp_dir = temp_dir
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        ray = Path(sys.executable).with_name("ray")
        self.env = dict(os.environ, **LOOPBACK_ENV)
        r = subprocess.run(
            [str(ray), "start", "--head", "--port=0", f"--num-cpus={num_cpus}", "--node-ip-address=127.0.0.1",
             f"--object-store-memory={object_store_memory}", "--include-dashboard=false", "--disable-usage-stats",
             '--resources={"mlbuild_bench": 1}', f"--temp-dir={temp_dir}"],
            env=self.env, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            self.stop()
            raise RuntimeError(f"ray start failed:\n{r.stdout}\n{r.stderr}")
        self.address = (temp_dir / "ray_current_cluster").read_text().strip()
        assert self.address.startswith("127.0.0.1:"), self.address

    def pids(self) -> list[int]:
        roots = _mentioning(str(self.temp_dir))
        kids = _children()
        out: list[int] = []
        todo = list(roots)
        while todo:
            pid = todo.pop()
            if pid in out:
                continue
            out.append(pid)
            todo.extend(kids.get(pid, []))
        return out

    def stop(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
                time.sleep(0.1)
