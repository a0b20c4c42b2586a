"""Suite-wide fixtures: the real `tools/<script>` run in this process (`tool_here`, `tools_in_process`).

A fresh interpreter per tool run costs its start-up and `import torch/mmdet/mmseg/timm` (about 10 s of CPU
each for the det/seg tools). Where the behaviour under test is not the process itself (SIGKILL, torchrun, exit
codes and one-line errors of a fresh interpreter), tests run the tool here instead, exactly as
`python tools/<script> ARGS` runs it: `runpy` of the same file as `__main__`, from the repo root, with that
`sys.argv`, and with none of mmengine's named global instances of earlier tests visible.
"""
import contextlib
import io
import logging
import os
import runpy
import socket
import subprocess
import sys
import traceback
import warnings

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(ROOT, "tools")


def _manager_subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _manager_subclasses(sub)


def _hide_mmengine_instances():
    """Set aside mmengine's named global instances (logger, message hub, visualizer, default scope) so that the
    run starts without any, as in a fresh interpreter; returns what `_restore_mmengine_instances` puts back.

    An instance left by an earlier test would otherwise be the run's "current" one: e.g. an `MMLogger` whose
    stream is an earlier test's captured stdout, or, as mmengine names them after the config and the second the
    run started, a previous run's logger with its log file."""
    if "mmengine" not in sys.modules:
        return None
    from mmengine.utils import ManagerMixin
    hidden = {}
    for cls in _manager_subclasses(ManagerMixin):
        hidden[cls] = dict(cls._instance_dict)
        cls._instance_dict.clear()
    return hidden


def _restore_mmengine_instances(hidden):
    """Drop the instances the run created (a process exit would) and put back those set aside."""
    if "mmengine" not in sys.modules:
        return
    from mmengine.utils import ManagerMixin
    for cls in _manager_subclasses(ManagerMixin):
        cls._instance_dict.clear()
        cls._instance_dict.update((hidden or {}).get(cls, {}))


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(f"{record.levelname} {record.getMessage()}\n")


def run_in_process(script, *args, env=None, threads=None):
    """`python tools/<script> ARGS` in this process; a CompletedProcess (returncode, stdout, stderr).

    As a fresh interpreter would: an uncaught exception gives exit code 1 and its traceback in stderr, warnings
    are printed to stderr, and python `logging` records at INFO and above go to stdout (the cls tools'
    `logging.basicConfig`; under pytest its log capture would otherwise hold them). `env` entries are set for
    the run only; `threads` is torch's intra-op thread count for the run (what OMP_NUM_THREADS=N gives a fresh
    interpreter; default: this process's). cwd, argv, sys.path, the environment, the thread count and the root
    logger's level are restored afterwards."""
    path = os.path.join(TOOLS, script)
    argv = [path, *map(str, args)]
    saved = os.getcwd(), list(sys.argv), list(sys.path), dict(os.environ)
    root = logging.getLogger()
    level, lines = root.level, _Lines()
    out, err = io.StringIO(), io.StringIO()
    hidden = _hide_mmengine_instances()
    import torch
    num_threads = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        os.chdir(ROOT)
        sys.argv = argv
        sys.path.insert(0, TOOLS)
        os.environ.update({key: str(value) for key, value in (env or {}).items()})
        root.addHandler(lines)
        root.setLevel(logging.INFO)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            try:
                runpy.run_path(path, run_name="__main__")
                code = 0
            except SystemExit as exit_info:
                code = exit_info.code
                code = code if isinstance(code, int) else 0 if code is None else 1
                if not isinstance(exit_info.code, (int, type(None))):
                    print(exit_info.code, file=sys.stderr)  # sys.exit("message"): printed, exit code 1
            except Exception:  # noqa: BLE001  (what the interpreter does with it)
                code = 1
                print(traceback.format_exc(), file=sys.stderr)
            for warning in caught:
                print(warnings.formatwarning(warning.message, warning.category, warning.filename, warning.lineno),
                      file=sys.stderr, end="")
    finally:
        torch.set_num_threads(num_threads)
        _restore_mmengine_instances(hidden)
        root.removeHandler(lines)
        root.setLevel(level)
        cwd, sys.argv, sys.path[:], environ = saved
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(environ)
    return subprocess.CompletedProcess(argv, code, out.getvalue() + "".join(lines.lines), err.getvalue())


@pytest.fixture(scope="session")
def tools_in_process():
    """`run_in_process`, for fixtures of any scope."""
    return run_in_process


@pytest.fixture
def tool_here():
    """`run_in_process` (tool_here(script, *args, env=None, threads=None) -> CompletedProcess)."""
    return run_in_process


@pytest.fixture
def fresh_mmengine_instances():
    """The test starts without mmengine's named global instances of earlier tests and leaves none of its own (an
    inferencer's visualizer, default scope, ...) for later in-process tool runs."""
    hidden = _hide_mmengine_instances()
    yield
    _restore_mmengine_instances(hidden)


@pytest.fixture(scope="session", autouse=True)
def private_cache_dir(tmp_path_factory):
    """The suite's dataset-check caches (`localattn.datacheck.cache_dir`) go to a folder of its own, for this
    process and the tools it starts: every test dataset is new, so the user's cache would only grow."""
    saved = os.environ.get("LOCALATTN_CACHE_DIR")
    os.environ["LOCALATTN_CACHE_DIR"] = str(tmp_path_factory.mktemp("localattn-cache"))
    yield os.environ["LOCALATTN_CACHE_DIR"]
    if saved is None:
        del os.environ["LOCALATTN_CACHE_DIR"]
    else:
        os.environ["LOCALATTN_CACHE_DIR"] = saved


@pytest.fixture
def free_port():
    """A TCP port free on 127.0.0.1 now: the rendezvous port of a torchrun launched by a test."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
