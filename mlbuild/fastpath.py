"""The no-op ``realize``: answered from a saved plan before the command line is even parsed.

``mlbuild realize TARGET...`` with nothing else to do is the command users run most, so it must
cost little more than starting Python.  :func:`main` handles exactly the plain form
(``realize TARGET... [-q] [--store DIR]``, in a project's directory or below it) with only ``os`` and
``sys``: it computes the plan cache key (:mod:`mlbuild.plancache`), loads the saved plan and
checks it is still true without SQLite (the store's stamp: id, registry inode and header, and the
generation counter that gc and repair bump, plus every closure entry on disk).  It does not read the
registry's pages: a registry damaged inside is reported by every other command (and ``store verify``),
while the no-op answer names entries that are whole on disk.  Anything else
- another flag, a miss, a store that moved on - returns ``None`` and the full command line
(:mod:`mlbuild.cli`) takes over, which plans normally and saves the plan for next time.
:func:`lookup` is the one check both use.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

    from .plancache import Plan

KEY_NAME = "mlbuild-ed25519.key"  # the private signing key (keypaths.PRIVATE_NAME)


def _abs(path: str) -> str | None:
    """``Path(path).absolute()`` as a string, without pathlib (None where they could differ: ``..``)."""
    if ".." in path.split(os.sep):
        return None
    return os.path.normpath(os.path.join(os.getcwd(), path))


def find_root(start: str) -> str | None:
    """``mlbuild.project.find_root``: the nearest directory at or above ``start`` holding ``manifests/``."""
    d = os.path.realpath(start)
    while True:
        if os.path.isdir(os.path.join(d, "manifests")):
            return d
        parent = os.path.dirname(d)
        if parent == d:
            return None
        d = parent


def read_only(meta: str | os.PathLike[str]) -> bool:
    """Whether a store's metadata directory cannot be written (a read-only mount, or no write permission)."""
    try:
        if os.statvfs(meta).f_flag & os.ST_RDONLY:
            return True
    except OSError:
        return False
    return not os.access(meta, os.W_OK)


def keys_dir(environ: Mapping[str, str] | None = None) -> str:
    """Where signing keys live: ``$MLBUILD_KEYS``, else ``~/.config/mlbuild/keys`` (``mlbuild.keypaths``)."""
    env = os.environ if environ is None else environ
    if env.get("MLBUILD_KEYS"):
        return env["MLBUILD_KEYS"]
    return os.path.join(env.get("HOME", os.path.expanduser("~")), ".config", "mlbuild", "keys")


def signing_key_file(environ: Mapping[str, str] | None = None) -> str:
    return os.path.join(keys_dir(environ), KEY_NAME)


def _stamp_holds(meta: str, store: tuple[str, int, int]) -> bool:
    store_id, ino, generation = store
    try:
        with open(os.path.join(meta, "store.json"), encoding="utf-8") as f:
            marker = f.read()
        if not store_id or f'"{store_id}"' not in marker:
            return False
        with open(os.path.join(meta, "db.sqlite"), "rb") as f:
            if os.fstat(f.fileno()).st_ino != ino or f.read(16) != b"SQLite format 3\0":
                return False
        try:
            with open(os.path.join(meta, "generation"), encoding="utf-8") as f:
                now = int(f.read().strip() or 0)
        except FileNotFoundError:
            now = 0
    except (OSError, ValueError):
        return False
    return now == generation


def lookup(root: str, manifests: str, lock: str, targets: Sequence[str],
           overrides: Mapping[str, Any]) -> tuple[str | None, Plan | None]:
    """(plan cache key, the saved plan if it still holds).  A key of None: no shortcut possible."""
    from . import plancache

    meta = os.path.join(root, ".mlbuild")
    if not os.path.isdir(meta):
        return None, None
    k = plancache.key(manifests, lock, list(targets), overrides, cache_dir=plancache.plans_dir(meta))
    if k is None:
        return None, None
    plan = plancache.load(meta, k)
    if plan is None or not plan.closure or any(t not in plan.targets for t in targets):
        return k, None
    if not _stamp_holds(meta, plan.store):
        return k, None
    if not all(os.path.lexists(os.path.join(root, e)) for e in plan.closure):
        return k, None
    runs = [plan.targets[t] for t in targets if plan.kinds.get(t) == "run"]
    if runs and not read_only(meta) and os.path.exists(signing_key_file()):
        # a key appeared since: the full path signs these results
        att = os.path.join(meta, "attestations")
        if not all(os.path.exists(os.path.join(att, f"{e}.dsse.json")) for e in runs):
            return k, None
    return k, plan


def _parse(argv: Sequence[str]) -> tuple[list[str], bool, str | None] | None:
    """(targets, quiet, --store) of a plain ``realize`` command line; None for anything else."""
    targets: list[str] = []
    quiet = False
    store: str | None = None
    it = iter(argv)
    for a in it:
        if a in ("-q", "--quiet"):
            quiet = True
        elif a == "--store":
            store = next(it, None)
            if not store:
                return None
        elif a.startswith("--store="):
            store = a[len("--store="):]
        elif a.startswith("-") or not a:
            return None
        else:
            targets.append(a)
    return (targets, quiet, store) if targets else None


def main(argv: Sequence[str]) -> int | None:
    """Answer ``mlbuild realize ...`` (``argv`` after ``realize``) if it is a no-op; None: not handled."""
    parsed = _parse(argv)
    if parsed is None:
        return None
    targets, quiet, store = parsed
    # the project's paths, as mlbuild.project.apply_defaults finds them (a test holds the two together)
    project = find_root(os.getcwd())
    base = project or os.path.realpath(os.getcwd())
    if not store:
        store = os.environ.get("MLBUILD_STORE") or (os.path.join(base, "store") if project else "store")
    root = _abs(store)
    if root is None:
        return None
    manifests = os.environ.get("MLBUILD_MANIFESTS") or os.path.join(base, "manifests")
    _k, plan = lookup(root, manifests, os.path.join(base, "lock", "mlbuild.lock"), targets, {})
    if plan is None:
        return None
    print_answer(root, plan, targets, quiet)
    return 0


def print_answer(root: str, plan: Plan, targets: Sequence[str], quiet: bool) -> None:
    """What a no-op realize prints: each run's summary (stderr, unless quiet), then each target's path."""
    if not quiet:
        for t in targets:
            if plan.kinds.get(t) == "run":
                path = os.path.join(root, plan.targets[t])
                try:
                    from pathlib import Path

                    from .harness.summary import format_summary, load_result

                    text = format_summary(load_result(Path(path)))
                except Exception as e:  # a result without result.json is still a result
                    text = f"(no summary for {os.path.basename(path)}: {e})"
                print(text, file=sys.stderr, flush=True)
    sys.stdout.write("".join(os.path.join(root, plan.targets[t]) + "\n" for t in targets))
    sys.stdout.flush()
