"""End to end through the real tools (subprocesses): train from each recipe, validate strictly, resume after
a kill, two gloo ranks, corrupt images, and a learning check on the synthetic dataset."""
import csv
import json
import os
import signal
import subprocess
import time

import pytest
import timm
import torch
from PIL import Image
from torchvision.transforms import functional as TF

from localattn.cls.synthetic import make_image_folder

from cls_helpers import ELSA_TINY, ROOT, SAN_TINY, TINY_RUN, config, run_tool, tool_command

pytestmark = pytest.mark.slow

RUNS = {  # recipe, data fixture, tiny overrides
    "elsa_swin": ("elsa_swin_tiny_imagenet.yaml", "tiny_data", ELSA_TINY + ["--img-size", "32", "-b", "8", "--model-ema"]),
    "san10": ("san10_pairwise_imagenet.yaml", "tiny_data_64", SAN_TINY + ["--img-size", "64", "-b", "4"]),
    "xresnet18_ssa": ("xresnet18_ssa_imagewoof_128.yaml", "tiny_data", ["--img-size", "32", "-b", "8", "--apex-amp"]),
}


def summary_rows(folder):
    with open(os.path.join(folder, "summary.csv")) as f:
        return list(csv.DictReader(f))


def reference_top1(checkpoint_path, data_dir, use_ema=False):
    """Top-1 (%) of a checkpoint on <data_dir>/val computed without our validator: timm + plain torchvision."""
    state = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    model = timm.create_model(state["arch"], num_classes=state["num_classes"], **state["args"]["model_kwargs"])
    model.load_state_dict(state["state_dict_ema" if use_ema else "state_dict"], strict=True)
    model.eval()
    cfg = state["data_config"]
    size = cfg["input_size"][-1]
    correct = total = 0
    for index, name in enumerate(sorted(os.listdir(os.path.join(data_dir, "val")))):
        for file in sorted(os.listdir(os.path.join(data_dir, "val", name))):
            image = Image.open(os.path.join(data_dir, "val", name, file)).convert("RGB")
            image = TF.center_crop(TF.resize(image, int(size / cfg["crop_pct"]),
                                             interpolation=TF.InterpolationMode(cfg["interpolation"])), size)
            x = TF.normalize(TF.to_tensor(image), cfg["mean"], cfg["std"]).unsqueeze(0)
            with torch.no_grad():
                correct += int(model(x).argmax(1).item() == index)
            total += 1
    return 100.0 * correct / total


@pytest.fixture(scope="module")
def trained(request, tmp_path_factory, tools_in_process):
    """{name: (run folder, data dir)}: each recipe trained for 2 epochs with tiny widths (once per module).

    The ELSA-Swin run is the reference of the bit-for-bit resume test, whose killed run is a fresh interpreter
    with OMP_NUM_THREADS=2: it runs the same way. The others run in this process (tests/conftest.py)."""
    runs = {}
    for name, (recipe, data_fixture, overrides) in RUNS.items():
        data = request.getfixturevalue(data_fixture)
        out = tmp_path_factory.mktemp(name)
        args = ("train.py", config(recipe), data, *TINY_RUN, *overrides, "--output", out, "--experiment", "run")
        if name == "elsa_swin":
            run_tool(*args)
        else:
            proc = tools_in_process(*args, threads=2)  # run_tool's OMP_NUM_THREADS=2
            assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
        runs[name] = (out / "run", data)
    return runs


@pytest.mark.parametrize("name", sorted(RUNS))
def test_recipe_trains_two_epochs_and_validates_strictly(name, trained, tmp_path, tool_here):
    folder, data = trained[name]
    rows = summary_rows(folder)
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert {"args.yaml", "last.pth.tar", "model_best.pth.tar", "results.json", "tensorboard",
            "curves.png"} <= set(os.listdir(folder))
    with Image.open(folder / "curves.png") as curves:  # loss, accuracy and lr panels (tests/viz checks the lines)
        assert curves.format == "PNG" and curves.size == (3 * 420, 340)
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(folder / "tensorboard"))
    use_ema = name == "elsa_swin"
    # in this process (tests/conftest.py), as `python tools/validate.py ARGS` runs
    out = tool_here("validate.py", data, "--checkpoint", folder / "last.pth.tar", "-j", "0", "--device", "cpu",
                    "--no-test-pool", "--results-file", tmp_path / "val.json", *(["--use-ema"] if use_ema else []),
                    threads=2)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    result = json.loads((tmp_path / "val.json").read_text())
    assert "top-1" in out.stdout and result["weights"] == ("ema" if use_ema else "model")
    assert result["top1"] == pytest.approx(reference_top1(folder / "last.pth.tar", data, use_ema), abs=1e-6)
    if name == "san10":  # the fp32 recipe: the trainer's own last evaluation must agree with the validator
        assert result["top1"] == pytest.approx(float(rows[-1]["top1"]), abs=1e-6)


def test_validate_refuses_a_checkpoint_that_does_not_fit(trained):
    folder, data = trained["xresnet18_ssa"]
    proc = run_tool("validate.py", data, "--checkpoint", folder / "last.pth.tar", "--model", "xresnet18",
                    "-j", "0", "--device", "cpu", check=False)
    assert proc.returncode == 2 and "unexpected keys" in proc.stderr and "sa.gamma" in proc.stderr


def test_killed_run_resumes_to_the_same_final_weights(trained, tmp_path):
    """Interrupted (SIGKILL after epoch 0's checkpoint) + --resume == uninterrupted, bit for bit (model, EMA, optimiser)."""
    straight_folder, data = trained["elsa_swin"]
    recipe, _, overrides = RUNS["elsa_swin"]
    args = [config(recipe), data, *TINY_RUN, *overrides, "--output", tmp_path]
    cmd, env = tool_command("train.py", *args, "--experiment", "killed")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = tmp_path / "killed" / "checkpoint-0.pth.tar"
    deadline = time.time() + 300
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL and first.exists()
    assert not (tmp_path / "killed" / "results.json").exists()
    run_tool("train.py", *args, "--resume", tmp_path / "killed" / "last.pth.tar")
    straight = torch.load(straight_folder / "last.pth.tar", weights_only=False)
    resumed = torch.load(tmp_path / "killed" / "last.pth.tar", weights_only=False)
    assert resumed["epoch"] == straight["epoch"] == 1
    for key in ("state_dict", "state_dict_ema"):
        for name, tensor in straight[key].items():
            assert torch.equal(tensor, resumed[key][name]), f"{key}.{name} differs after resume"
    for a, b in zip(straight["optimizer"]["state"].values(), resumed["optimizer"]["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["epoch"] for r in summary_rows(tmp_path / "killed")] == ["0", "1"]


def test_two_gloo_ranks_finish_with_identical_weights(tiny_data, tmp_path, free_port):
    run_tool("dist_train.sh", config("xresnet18_ssa_imagewoof_128.yaml"), 2, tiny_data, *TINY_RUN, "--img-size", "32",
             "-b", "4", "--output", tmp_path, "--experiment", "dist", threads=1, PORT=str(free_port))
    results = json.loads((tmp_path / "dist" / "results.json").read_text())
    assert results["world_size"] == 2 and len(results["rank_weight_sha256"]) == 2
    assert results["rank_weight_sha256"][0] == results["rank_weight_sha256"][1]
    from localattn.cls.distributed import weights_fingerprint
    state = torch.load(tmp_path / "dist" / "last.pth.tar", weights_only=False)
    model = timm.create_model("xresnet18_ssa", num_classes=state["num_classes"])
    model.load_state_dict(state["state_dict"], strict=True)
    assert weights_fingerprint(model) == results["rank_weight_sha256"][0]
    assert len(summary_rows(tmp_path / "dist")) == 2


@pytest.mark.parametrize("policy", ["fail", "skip"])
def test_corrupt_image_policy_through_the_trainer(policy, tiny_data, tmp_path):
    data = tmp_path / "data"
    make_image_folder(str(data), num_classes=2, train_per_class=8, val_per_class=2, size=32, seed=3)
    bad = data / "train" / "green_square" / "green_square_0003.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    proc = run_tool("train.py", config("xresnet18_imagewoof_128.yaml"), data, *TINY_RUN, "--epochs", "1",
                    "--img-size", "32", "-b", "8", "--amp", "-j", "1", "--corrupt-images", policy,
                    "--output", tmp_path, "--experiment", policy, check=False)
    assert str(bad) in proc.stderr
    if policy == "fail":
        assert proc.returncode == 2 and "corrupt image" in proc.stderr and "--corrupt-images skip" in proc.stderr
    else:
        assert proc.returncode == 0 and f"skipping {bad}: corrupt image" in proc.stderr
        assert len(summary_rows(tmp_path / policy)) == 1


def test_small_elsa_swin_learns_the_synthetic_dataset(tmp_path):
    """Learning check: >= 90% val top-1 (chance: 25%) with the demo recipe in a few epochs on CPU."""
    data = tmp_path / "data"
    make_image_folder(str(data), num_classes=4, train_per_class=24, val_per_class=10, size=32, seed=11)
    run_tool("train.py", config("demo_elsa_swin_synthetic.yaml"), data, "--epochs", "3", "--no-progress",
             "--output", tmp_path, "--experiment", "learn")
    final = summary_rows(tmp_path / "learn")[-1]
    assert float(final["top1"]) >= 90.0, f"final val top-1 {final['top1']}% < 90%"
