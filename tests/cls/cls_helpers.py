"""Helpers of the classification tests: recipe paths, tiny-run overrides and a runner for the real tools."""
import os
import subprocess
import sys


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(ROOT, "configs", "cls")

# Tiny-width overrides of each published recipe: same code path, seconds instead of days.
ELSA_TINY = ["--model-kwargs", "embed_dim=16", "depths=[1,1,1,1]", "num_heads=[1,1,2,2]", "group_width=4"]
SAN_TINY = ["--model-kwargs", "layers=[1,1,1,1,1]", "kernels=[3,3,3,3,3]"]
TINY_RUN = ["-j", "0", "--epochs", "2", "--cooldown-epochs", "0", "--warmup-epochs", "0", "--device", "cpu",
            "--no-progress"]


def config(name):
    return os.path.join(CONFIGS, name)


def tool_command(script, *args, threads=2, **extra_env):
    """(argv, env) running tools/<script> (python or bash) with the project's Python."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1", PYTHON=sys.executable, **extra_env)
    path = os.path.join(ROOT, "tools", script)
    return (["bash", path] if script.endswith(".sh") else [sys.executable, path]) + [str(a) for a in args], env


def run_tool(script, *args, threads=2, timeout=600, check=True, **extra_env):
    """Run tools/<script> to completion; returns the CompletedProcess (text output)."""
    cmd, env = tool_command(script, *args, threads=threads, **extra_env)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} {' '.join(map(str, args))} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc
