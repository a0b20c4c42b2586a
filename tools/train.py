"""Train from a config: `tools/train.py CONFIG [flags]` (cls YAML recipe or det/seg mmengine config)."""
import sys

from _dispatch import config_task

if __name__ == "__main__":
    argv = sys.argv[1:]
    if config_task(argv) == "cls":
        from localattn.cls.train import main
        sys.exit(main(argv))
    from localattn.cli import run_main
    from localattn.mm.train import main
    sys.exit(run_main(main, argv, "tools/train.py"))
