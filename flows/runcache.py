"""Whether a DVC stage must run, for the Prefect flow (which runs a stage's command itself and
records it with `dvc commit`): up to date, restorable from DVC's caches as `dvc repro` restores
it, or stale.

DVC restores a stale stage without running it in two cases: its outputs were deleted or edited but
dvc.lock's hashes of them are in the cache, or a run with these very dependencies and params is in
its run-cache (every `dvc repro` and `dvc commit` adds one). Either way the outputs are checked out
and the stage is recorded in dvc.lock.

    python flows/runcache.py <stage>    # in the repository: prints current, restored or stale
"""

from __future__ import annotations

import sys

CURRENT, RESTORED, STALE = "current", "restored", "stale"


def settle(stage_name: str, root: str = ".") -> str:
    """CURRENT if ``stage_name`` of the DVC repository at ``root`` is up to date; RESTORED if it
    was stale and is now restored from DVC's caches and recorded in dvc.lock; STALE (nothing
    changed) if it must run."""
    from dvc.repo import Repo, lock_repo
    from dvc.stage.cache import RunCacheNotFoundError

    with Repo(root, _wait_for_lock=True) as repo:
        with lock_repo(repo):
            stage = repo.stage.collect(stage_name)[0]
            if not stage.changed():
                return CURRENT
            try:
                repo.stage_cache.restore(stage)
            except RunCacheNotFoundError:
                return STALE
        repo.commit(stage_name, force=True)
    return RESTORED


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python flows/runcache.py <stage>", file=sys.stderr)
        return 2
    print(settle(args[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
