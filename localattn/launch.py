"""Fault handling of multi-process runs, shared by the cls trainer and the mmengine tools.

A run must end, not hang, when part of it dies:
* every collective gives up after a timeout (`--dist-timeout`, default `DEFAULT_TIMEOUT` seconds), so
  ranks waiting for a dead or hung peer fail with an error instead of waiting for gloo's / NCCL's 30 min;
* a rank whose launcher (the torchrun agent) dies stops within a second or two (`watch_launcher`), so
  no orphaned rank keeps training;
* a rank that dies is noticed by torchrun, which stops the other ranks and names the failed one.
"""
import os
import sys
import threading
import time

DEFAULT_TIMEOUT = 300  # seconds a collective waits for the slowest rank


_watched = None  # (rank, launcher pid) once watch_launcher runs


def watch_launcher(rank, interval=1.0):
    """Exit this process (status 1, with a message naming the launcher) once its parent process is gone."""
    global _watched
    _watched = (rank, os.getppid())

    def watch():
        while os.getppid() == _watched[1]:
            time.sleep(interval)
        exit_if_launcher_died()

    threading.Thread(target=watch, name="localattn-launcher-watch", daemon=True).start()


def exit_if_launcher_died():
    """If this rank's launcher is gone, say so and exit (status 1). Also for an error that may be that death seen
    first by a collective: a peer rank stopped by the launcher's death resets the connection before this rank's
    watcher looks again."""
    if _watched is not None and os.getppid() != _watched[1]:
        rank, parent = _watched
        print(f"rank {rank}: the launcher (pid {parent}) died; stopping this rank", file=sys.stderr, flush=True)
        os._exit(1)
