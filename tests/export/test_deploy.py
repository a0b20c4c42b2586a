"""Deployment without our Python package: the compiled library is Python-free, `.pt2` files run with
`torch` + `torch.ops.load_library` only, and `torch.onnx.export` gives graphs plain onnxruntime runs."""
import os
import shutil
import subprocess
import sys
import textwrap

import onnxruntime as ort
import pytest
import torch

import localattn.ops
from localattn.layers.elsa import ELSABlock
from localattn.layers.san import SAM
from localattn.layers.window_attention import WindowBlock

Dim = torch.export.Dim


def small_modules():
    """Layers that call each forward op: SAN pairwise (subtraction2 + aggregation), patchwise
    (aggregation), an ELSA block (elsa / fused elsa_attention) and a single-window Swin block."""
    torch.manual_seed(0)
    return {
        "san_pairwise": (SAM("pairwise", 16, 4, 16, 8, 5).eval(), (2, 16, 20, 24), (1, 16, 13, 17), 2),
        "san_patchwise": (SAM("patchwise", 16, 4, 16, 8, 5).eval(), (2, 16, 20, 24), (1, 16, 13, 17), 2),
        "elsa_block": (ELSABlock(16, 5, num_heads=2, group_width=4).eval(), (2, 20, 24, 16), (1, 13, 17, 16), 1),
        "window_block": (WindowBlock(16, 2, 7, fit_single_window=True).eval(), (2, 7, 7, 16), (1, 5, 6, 16), 1),
    }


def dynamic_spec(example, spatial_first):
    h, w = (spatial_first, spatial_first + 1)
    hi = 7 if example == "window_block" else 64
    return ({0: Dim("batch", max=16), h: Dim("h", min=5, max=hi), w: Dim("w", min=5, max=hi)},)


def test_library_has_no_python_dependency(tmp_path):
    """The .so needs neither libpython nor libtorch_python, and dlopen(RTLD_NOW) succeeds in a C process."""
    path = localattn.ops.library_path()
    needed = subprocess.run(["readelf", "-d", path], capture_output=True, text=True, check=True).stdout
    assert "libtorch_python" not in needed and "libpython" not in needed
    undefined = subprocess.run(["nm", "-D", "--undefined-only", path], capture_output=True, text=True, check=True)
    assert not [s for s in undefined.stdout.split() if s.startswith("Py")]
    source = tmp_path / "load.c"
    source.write_text(textwrap.dedent("""
        #include <dlfcn.h>
        #include <stdio.h>
        int main(int argc, char** argv) {
          if (!dlopen(argv[1], RTLD_NOW | RTLD_GLOBAL)) { printf("%s\\n", dlerror()); return 1; }
          if (!dlopen(argv[2], RTLD_NOW | RTLD_GLOBAL)) { printf("%s\\n", dlerror()); return 1; }
          printf("loaded\\n");
          return 0;
        }
    """))
    compiler = shutil.which("cc") or shutil.which("gcc")
    subprocess.run([compiler, str(source), "-o", str(tmp_path / "load"), "-ldl"], check=True)
    libtorch = os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")
    run = subprocess.run([str(tmp_path / "load"), libtorch, path], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.strip() == "loaded", run.stdout + run.stderr


def test_pt2_runs_in_a_process_without_localattn(tmp_path):
    """torch.export with dynamic batch/H/W keeps them dynamic; the saved program runs at another size in
    a fresh interpreter that only has torch and `torch.ops.load_library(library_path())`."""
    module, size, other, _ = small_modules()["san_pairwise"]
    x, y = torch.randn(size), torch.randn(other)
    program = torch.export.export(module, (x,), dynamic_shapes=dynamic_spec("san_pairwise", 2))
    torch.export.save(program, tmp_path / "sam.pt2")
    torch.save({"x": x, "y": y, "ex": module(x).detach(), "ey": module(y).detach()}, tmp_path / "io.pt")
    script = textwrap.dedent(f"""
        import sys, torch
        torch.ops.load_library({localattn.ops.library_path()!r})
        program = torch.export.load({str(tmp_path / "sam.pt2")!r})
        io = torch.load({str(tmp_path / "io.pt")!r}, weights_only=True)
        for a, e in (("x", "ex"), ("y", "ey")):
            print(float((program.module()(io[a]) - io[e]).abs().max()))
        print(sorted(m for m in sys.modules if m.startswith("localattn")))
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": ""})
    assert run.returncode == 0, run.stderr[-3000:]
    *diffs, modules = run.stdout.strip().splitlines()
    assert modules == "[]"
    assert all(float(d) <= 1e-5 for d in diffs), diffs


@pytest.mark.parametrize("name", list(small_modules()))
def test_onnx_export_matches_eager_in_onnxruntime(name, tmp_path):
    """dynamo ONNX export with dynamic axes needs no custom table; onnxruntime == eager (fp32, 1e-4) at two sizes."""
    module, size, other, spatial = small_modules()[name]
    x = torch.randn(size)
    program = torch.onnx.export(module, (x,), dynamo=True, dynamic_shapes=dynamic_spec(name, spatial), verbose=False)
    program.save(str(tmp_path / f"{name}.onnx"))
    session = ort.InferenceSession(str(tmp_path / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name
    for inputs in (x, torch.randn(other)):
        with torch.no_grad():
            expected = module(inputs)
        got = torch.from_numpy(session.run(None, {feed: inputs.numpy()})[0])
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)


def test_traced_window_block_runs_at_other_sizes():
    """The single-window relative position bias is gathered, not a size-dependent branch: a trace at 7x7
    is correct at 5x6."""
    module, size, other, _ = small_modules()["window_block"]
    module = module.double()  # the same arithmetic twice: compared in float64
    with torch.no_grad():
        traced = torch.jit.trace(module, torch.randn(size, dtype=torch.float64))
        y = torch.randn(other, dtype=torch.float64)
        torch.testing.assert_close(traced(y), module(y), rtol=0, atol=1e-10)
