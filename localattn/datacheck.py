"""Up-front dataset checks shared by the three tasks: policy, progress bar and a cache by file stats.

Each task has its own checker (`localattn.cls.data`, `localattn.det.datacheck`, `localattn.seg.task`);
they all run their per-file work through `file_facts`, which

* shows a tqdm progress bar (files/s, ETA) on stderr,
* remembers what it read from every file (a verdict, an image size, the label values...) under the file's
  (path, size, mtime) in a small JSON cache file, so a large dataset is read once and later runs only
  re-read files that changed, and
* returns {path: facts},

and report with `apply_policy`: `fail` (default) raises `DataCheckError` naming the files, `warn` logs every
problem and keeps the data as it is, `skip` logs them and tells the caller to leave those samples out.

The cache lives in `$LOCALATTN_CACHE_DIR` (default `$XDG_CACHE_HOME/localattn` or `~/.cache/localattn`),
one file per (checker, dataset) pair.
"""
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import warnings
from concurrent.futures import ProcessPoolExecutor

from tqdm import tqdm

POLICIES = ("fail", "skip", "warn")
_SHOWN = 10  # problems listed in one error message

logger = logging.getLogger("localattn.datacheck")


class DataCheckError(ValueError):
    """A dataset file is malformed or does not fit the task; the message names the file(s)."""


class DataCheckWarning(UserWarning):
    """A dataset problem that the `warn` / `skip` policy lets through (the message names the file)."""


def check_policy(policy, flag="--data-check"):
    """Raise DataCheckError unless `policy` is one of POLICIES (`flag` names where it came from)."""
    if policy not in POLICIES:
        raise DataCheckError(f"{flag}: {policy!r} is not one of {list(POLICIES)}")
    return policy


def cache_dir():
    """Folder of the check caches (see the module docstring)."""
    default = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "localattn")
    return os.environ.get("LOCALATTN_CACHE_DIR") or default


def _stat_key(path):
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


class _Cache:
    """{path: [size, mtime_ns, facts]} in one JSON file, written atomically."""

    def __init__(self, checker, dataset):
        digest = hashlib.sha256(os.path.abspath(dataset).encode()).hexdigest()[:16]
        self.path = os.path.join(cache_dir(), f"datacheck-{checker}-{digest}.json")
        self.checker = checker
        try:
            with open(self.path) as f:
                stored = json.load(f)
            self.entries = stored["entries"] if stored.get("checker") == checker else {}
        except (OSError, ValueError, KeyError, TypeError):
            self.entries = {}
        self.dirty = False

    def get(self, path, stat):
        entry = self.entries.get(path)
        if entry is not None and entry[:2] == stat:
            return True, entry[2]
        return False, None

    def put(self, path, stat, facts):
        self.entries[path] = [*stat, facts]
        self.dirty = True

    def save(self):
        if not self.dirty:
            return
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            tmp = f"{self.path}.tmp{os.getpid()}"
            with open(tmp, "w") as f:
                json.dump({"checker": self.checker, "entries": self.entries}, f)
            os.replace(tmp, self.path)
        except OSError as err:  # a read-only home must not stop training
            logger.warning("data check cache not written (%s): %s", self.path, err)


@contextlib.contextmanager
def _exclusive(path):
    """Hold an advisory lock on `path` (ranks of one machine check one after the other: the first fills
    the cache, the others read it)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def file_facts(paths, read_one, checker, dataset, desc, workers=0, show_progress=True):
    """{path: read_one(path)} for every path, from the cache where the file is unchanged.

    `read_one` returns JSON-able facts (a problem string, or what the caller checks); a file that cannot
    be stat'ed gets the string "cannot be read: ...". `checker` names the check (put a version in it when
    `read_one` changes), `dataset` the dataset root (one cache file per checker and root). Files not in
    the cache are read in `workers` processes (`read_one` must then be a module-level function).
    """
    with _exclusive(_Cache(checker, dataset).path + ".lock"):
        cache = _Cache(checker, dataset)
        facts, todo = {}, []
        for path in paths:
            try:
                stat = _stat_key(path)
            except OSError as err:
                facts[path] = f"cannot be read: {err.strerror or err}"
                continue
            known, value = cache.get(path, stat)
            if known:
                facts[path] = value
            else:
                todo.append((path, stat))
        if todo:
            pool = ProcessPoolExecutor(workers) if workers > 1 and len(todo) > 1 else None
            names = [path for path, _ in todo]
            values = pool.map(read_one, names, chunksize=32) if pool else map(read_one, names)
            try:
                for (path, stat), value in tqdm(zip(todo, values), total=len(todo), desc=desc, unit="file",
                                                dynamic_ncols=True, mininterval=1.0, leave=False,
                                                disable=not show_progress):
                    cache.put(path, stat, value)
                    facts[path] = value
            finally:
                if pool:
                    pool.shutdown(cancel_futures=True)
                cache.save()
    logger.info("%s: %d file(s), %d read now, %d from the cache %s", desc, len(paths), len(todo),
                len(paths) - len(todo), cache.path)
    return facts


def apply_policy(problems, policy, what, flag="--data-check"):
    """Act on {location: problem} (location = a file, or `file: record`): raise, warn, or warn for skipping.

    Returns the set of locations the caller must leave out (empty unless `policy` is 'skip').
    """
    check_policy(policy)
    if not problems:
        return set()
    lines = [f"{location}: {problem}" for location, problem in sorted(problems.items())]
    if policy == "fail":
        more = "".join(f"\n  {line}" for line in lines[1:_SHOWN])
        if len(lines) > _SHOWN:
            more += f"\n  ... ({len(lines)} problems in total)"
        raise DataCheckError(f"{what}: {lines[0]}{more}\n  (fix the data, or pass {flag} skip|warn)")
    verb = "skipping" if policy == "skip" else "using anyway"
    for line in lines:
        warnings.warn(f"{what}: {verb} {line}", DataCheckWarning, stacklevel=2)
    return set(problems) if policy == "skip" else set()
