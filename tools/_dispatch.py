"""Route a tool's command line to the task that owns its config.

`configs/cls/*.yaml` are timm-style classification recipes (`localattn.cls`); `configs/{det,seg}/*.py`
are mmengine configs run by the shared OpenMMLab tools (`localattn.mm`).
"""
import os
import sys


def _usage_error(message):
    """One line on stderr, exit code 2 (the convention of localattn.cli, without importing the package)."""
    print(f"{os.path.basename(sys.argv[0])}: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def config_task(argv):
    """'cls' for a YAML recipe, 'mm' for an mmengine .py config (the first positional that names a file)."""
    for arg in argv:
        if arg.startswith("-"):
            continue
        ext = os.path.splitext(arg)[1].lower()
        if ext in (".yaml", ".yml"):
            return "cls"
        if ext == ".py":
            return "mm"
    if "--model" in argv and any(os.path.isdir(a) for a in argv):  # timm-style: DATA_DIR --model NAME, no recipe
        return "cls"
    tool = os.path.basename(sys.argv[0])
    if {"-h", "--help"} & set(argv):
        print(f"usage: {tool} CONFIG [flags]\n  CONFIG = configs/cls/*.yaml (classification; "
              f"`{tool} configs/cls/X.yaml --help` lists its flags) or configs/{{det,seg}}/*.py (mmdet/mmseg; "
              f"`{tool} configs/det/X.py --help`)")
        raise SystemExit(0)
    missing = [a for a in argv if not a.startswith("-") and not os.path.exists(a)]
    if missing:
        _usage_error(f"{missing[0]}: no such file or folder (expected CONFIG: configs/cls/*.yaml or "
                     "configs/{det,seg}/*.py)")
    _usage_error(f"expected CONFIG (configs/cls/*.yaml or configs/{{det,seg}}/*.py) as the first positional "
                 f"argument, got: {' '.join(argv) or '(nothing)'}")
