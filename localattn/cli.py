"""Command-line conventions shared by every tool: a misuse is one line naming the flag or file, exit code 2.

`ArgumentParser` reports argparse's own errors (unknown flag, bad type, bad choice) that way; `run_main`
does the same for the user errors a tool raises later (`UsageError`, a checkpoint that cannot be used, a
dataset that fails its check, a missing file), so no traceback reaches the user for them.
"""
import argparse
import os
import sys

from localattn.convert.core import CheckpointError
from localattn.datacheck import DataCheckError


class UsageError(ValueError):
    """A command line, config value or path that cannot be used; the message names the flag or file."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: `prog: error: MESSAGE (see prog --help)`, exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


USER_ERRORS = (UsageError, CheckpointError, DataCheckError, FileNotFoundError)


def check_writable(flag, path):
    """UsageError naming `flag` unless `path` can be written: it is writable, or (to be created) its nearest
    existing ancestor is a writable folder. None is not checked."""
    if path is None:
        return
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if existing == os.path.abspath(path):
        ok = os.access(existing, os.W_OK)
    else:
        ok = os.path.isdir(existing) and os.access(existing, os.W_OK | os.X_OK)
    if not ok:
        raise UsageError(f"{flag}: cannot write to {path} ({existing} is not writable)")


def run_main(main, argv, prog, errors=USER_ERRORS):
    """`main(argv)`'s exit code; an error of `errors` is printed as one line and gives exit code 2."""
    try:
        return main(argv)
    except errors as err:
        print(f"{prog}: error: {err}", file=sys.stderr, flush=True)
        return 2
