"""Evaluate a checkpoint: `tools/test.py CONFIG CHECKPOINT [flags]` (det/seg; cls recipes go to validate)."""
import sys

from _dispatch import config_task

if __name__ == "__main__":
    argv = sys.argv[1:]
    if config_task(argv) == "cls":
        from localattn.cls.validate import main
        sys.exit(main(argv))
    from localattn.cli import run_main
    from localattn.mm.test import main
    sys.exit(run_main(main, argv, "tools/test.py"))
