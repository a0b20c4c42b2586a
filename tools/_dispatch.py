"""Route a tool's command line to the task that owns its config.

`configs/cls/*.yaml` are timm-style classification recipes (`localattn.cls`); `configs/{det,seg}/*.py`
are mmengine configs run by the shared OpenMMLab tools (`localattn.mm`).
"""
import os
import sys


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
    raise SystemExit(f"{tool}: expected CONFIG (configs/cls/*.yaml or configs/{{det,seg}}/*.py) "
                     f"as the first positional argument, got: {' '.join(argv) or '(nothing)'}")
