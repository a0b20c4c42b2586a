"""tools/analysis/visualize_attention.py on each family: what is drawn is the map the forward used.

For every captured layer the test checks, in float64, that (1) the captured map, put into the pure-PyTorch
reference aggregation (`ops/reference.py`) with the layer's own value projection, reproduces the layer's
output — so it is the map the forward's op consumed, whichever kernel ran; (2) the arrays handed to
`imshow` are that map at the query pixels (and, for ELSA, ghost_mul·map + ghost_add per channel);
(3) the PNG has the figure's pixel size. The image is a real photograph bundled with scikit-image.
"""
import numpy as np
import pytest
import timm
import torch
import torch.nn as nn
from PIL import Image

import localattn.cls  # noqa: F401  (registers the timm models)
from localattn.layers.elsa import ELSA
from localattn.layers.san import SAM
from localattn.layers.simple_self_attention import SelfAttention, SimpleSelfAttention
from localattn.ops import reference
from localattn.viz.attention_tool import main, to_input, visualize
from localattn.viz.capture import attention_layers
from localattn.viz.draw import DPI, MAX_GROUPS, mosaic, to_grid
from localattn.viz.images import SAMPLES, load_rgb, sample_path

SIZE = 64
POINTS = [(5, 7), (40, 30), (63, 63)]
ELSA_TINY = dict(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 2, 2, 4], group_width=4)
SAN_TINY = dict(layers=[1, 1, 1, 1, 1], kernels=[3, 3, 3, 3, 3])


@pytest.fixture(scope="module")
def image():
    return load_rgb("chelsea", SIZE)


def run_visualize(model, image, tmp_path, patterns=None):
    """`visualize` on `model` (float64, eval) with forward hooks recording each attention layer's (input, output)."""
    model = model.double().eval()
    calls = {}
    handles = [layer.register_forward_hook(lambda m, i, o, name=name: calls.__setitem__(name, (i[0], o)))
               for name, layer in attention_layers(model, patterns)]
    x = to_input(image, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)).double()
    results = visualize(model, "test-model", image, x, POINTS, str(tmp_path), patterns)
    for handle in handles:
        handle.remove()
    layers = {path: entry for path, entry in results.items() if entry[2] is not None}
    assert sorted(entry[2].name for entry in layers.values()) == sorted(calls)
    return model, layers, calls, results


def shown(fig, columns, row, column):
    """The array of the image drawn in panel (row, column) of a figure made by `new_figure`."""
    return np.asarray(fig.axes[row * columns + column].images[-1].get_array())


def assert_png_size(path, fig):
    with Image.open(path) as png:
        assert png.format == "PNG"
        assert png.size == tuple(int(round(v * DPI)) for v in fig.get_size_inches())


def test_bundled_samples_are_real_photographs_inside_the_wheel():
    for name in SAMPLES:
        with Image.open(sample_path(name)) as photo:
            assert photo.mode == "RGB" and min(photo.size) >= 300
    assert load_rgb("astronaut", 48).shape == (48, 48, 3)


def test_elsa_swin_maps_are_the_forward_softmax_and_its_ghost_filter(image, tmp_path):
    model = timm.create_model("elsa_swin_tiny", num_classes=3, **ELSA_TINY)
    model, layers, calls, _ = run_visualize(model, image, tmp_path)
    assert len(layers) == 3  # stages 0-2 are ELSA, stage 3 window attention
    for path, (fig, drawn, maps) in layers.items():
        layer = model.get_submodule(maps.name)
        assert isinstance(layer, ELSA)
        inputs, output = calls[maps.name]
        b, h, w, _ = inputs.shape
        heads, k = layer.num_heads, layer.kernel_size
        assert maps.weights.shape == (1, heads, k * k, h // layer.stride, w // layer.stride)
        value = layer.pre_proj(inputs.permute(0, 3, 1, 2)).split([layer.dim_qk, layer.dim_qk, layer.dim_v], 1)[2]
        mul, add = (None if t is None else t.reshape(b * heads, -1, k, k) for t in layer.ghost_kernels())  # b == 1
        attn = maps.weights.reshape(b * heads, k * k, *maps.weights.shape[-2:])
        rebuilt = reference.elsa(value.reshape(b * heads, -1, h, w), mul, add, attn, k, layer.dilation, layer.stride)
        rebuilt = layer.post_proj(rebuilt.reshape(b, layer.dim_v, *attn.shape[-2:]).permute(0, 2, 3, 1))
        torch.testing.assert_close(rebuilt, output, rtol=1e-10, atol=1e-12)
        columns = 1 + heads
        for p, point in enumerate(POINTS):
            y, x = to_grid(point, (SIZE, SIZE), attn.shape[-2:])
            for g in range(heads):
                expected = attn[g, :, y, x].reshape(k, k).numpy()
                np.testing.assert_array_equal(drawn["attn", p, g], expected)
                np.testing.assert_array_equal(shown(fig, columns, 2 * p, 1 + g), expected)
                channels = (add[g] + attn[g, :, y, x].reshape(1, k, k)).detach().numpy()  # lam=0: mul == 1
                np.testing.assert_allclose(drawn["filter", p, g], channels, rtol=0, atol=1e-15)
                np.testing.assert_array_equal(np.nan_to_num(shown(fig, columns, 2 * p + 1, 1 + g), nan=-9),
                                              np.nan_to_num(mosaic(drawn["filter", p, g]), nan=-9))
            overlay = drawn["overlay", p]
            assert overlay.shape == maps.in_size
            assert overlay[y, x] == pytest.approx(attn[:, (k * k) // 2, y, x].mean().item(), abs=1e-15)
        assert_png_size(path, fig)


@pytest.mark.parametrize("variant", ["san10_pairwise", "san10_patchwise"])
def test_san_weights_are_what_the_aggregation_consumed(variant, image, tmp_path):
    model = timm.create_model(variant, num_classes=3, **SAN_TINY)
    # stages 0 and 4: 2 and 64 weight channels (16 drawn); drawing every stage only costs matplotlib time
    model, layers, calls, _ = run_visualize(model, image, tmp_path, ["layers.0.*", "layers.4.*"])
    assert len(layers) == 2
    for path, (fig, drawn, maps) in layers.items():
        layer = model.get_submodule(maps.name)
        assert isinstance(layer, SAM) and maps.kind == ("SAN pairwise" if "pairwise" in variant else "SAN patchwise")
        inputs, output = calls[maps.name]
        n, cw, taps, h, w = maps.weights.shape
        if layer.sa_type == 0:  # softmax over the taps
            torch.testing.assert_close(maps.weights.sum(2), torch.ones(n, cw, h, w, dtype=torch.float64))
        rebuilt = reference.aggregation(layer.conv3(inputs), maps.weights.reshape(n, cw, taps, h * w), layer.kernel_size,
                                        layer.stride, layer.padding, layer.dilation, "reflect")
        torch.testing.assert_close(rebuilt, output, rtol=1e-10, atol=1e-12)
        with torch.no_grad():  # not capturing: pairwise runs its fused kernel, to the same output
            torch.testing.assert_close(layer(inputs), output, rtol=1e-10, atol=1e-12)
        for p, point in enumerate(POINTS):
            y, x = to_grid(point, (SIZE, SIZE), (h, w))
            assert len(fig.axes) == len(POINTS) * (1 + min(cw, MAX_GROUPS))
            for c in range(min(cw, MAX_GROUPS)):
                expected = maps.weights[0, c, :, y, x].reshape(layer.kernel_size, layer.kernel_size).numpy()
                np.testing.assert_array_equal(drawn["attn", p, c], expected)
                np.testing.assert_array_equal(shown(fig, 1 + min(cw, MAX_GROUPS), p, 1 + c), expected)
        assert_png_size(path, fig)


class SaganNet(nn.Module):
    """A conv stem and fastai's SAGAN self-attention: the SAGAN map's host for the test."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, stride=4, padding=1)
        self.attention = SelfAttention(16)

    def forward(self, x):
        return self.attention(self.stem(x))


@pytest.mark.parametrize("family", ["xresnet18_ssa", "sagan"])
def test_global_maps_reproduce_the_layer_output(family, image, tmp_path):
    model = SaganNet() if family == "sagan" else timm.create_model(family, num_classes=3)
    for module in model.modules():
        if isinstance(module, (SimpleSelfAttention, SelfAttention)):
            nn.init.constant_(module.gamma, 0.5)  # 0 at init would make the output independent of the map
    model, layers, calls, _ = run_visualize(model, image, tmp_path)
    assert len(layers) == 1
    (path, (fig, drawn, maps)), = layers.items()
    layer = model.get_submodule(maps.name)
    inputs, output = calls[maps.name]
    flat = inputs.flatten(2)
    value = flat if isinstance(layer, SimpleSelfAttention) else layer.value(flat)  # SSA: (x xᵀ)(Ŵx) = x·A
    rebuilt = (layer.gamma * torch.bmm(value, maps.weights) + flat).view_as(output)
    torch.testing.assert_close(rebuilt, output, rtol=1e-10, atol=1e-10)
    h, w = maps.size
    assert maps.weights.shape == (1, h * w, h * w) and (h, w) == tuple(inputs.shape[-2:])
    for p, point in enumerate(POINTS):
        y, x = to_grid(point, (SIZE, SIZE), (h, w))
        expected = maps.weights[0, :, y * w + x].reshape(h, w).numpy()
        np.testing.assert_array_equal(drawn["attn", p], expected)
        np.testing.assert_array_equal(shown(fig, 2, p, 1), expected)
    assert_png_size(path, fig)


def test_receptive_field_of_one_conv_is_its_summed_kernel(image, tmp_path):
    """|d Σ_c f[c, y, x] / d input[ci, y+i-1, x+j-1]| = |Σ_c w[c, ci, i, j]|, summed over ci: the exact 3×3 footprint."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3, padding=1, bias=True)
    _, _, _, results = run_visualize(nn.Sequential(conv), image, tmp_path)
    fig, drawn, _ = results[str(tmp_path / "erf.png")]
    expected = np.zeros((SIZE, SIZE))
    expected[SIZE // 2 - 1:SIZE // 2 + 2, SIZE // 2 - 1:SIZE // 2 + 2] = \
        conv.weight.detach().sum(0).abs().sum(0).numpy()
    np.testing.assert_allclose(drawn["erf", 0], expected, rtol=1e-12, atol=0)
    assert_png_size(tmp_path / "erf.png", fig)


def test_command_line_on_a_checkpoint_and_an_mm_config(tmp_path, capsys):
    torch.manual_seed(0)
    model = timm.create_model("elsa_swin_tiny", num_classes=3, **ELSA_TINY)
    checkpoint = tmp_path / "model_best.pth.tar"
    torch.save({"arch": "elsa_swin_tiny", "state_dict": model.state_dict(), "num_classes": 3,
                "args": {"model_kwargs": ELSA_TINY}, "data_config": {"input_size": [3, 32, 32]}}, checkpoint)
    out = tmp_path / "maps"
    assert main(["elsa_swin_tiny", "coffee", "--checkpoint", str(checkpoint), "--img-size", "64", "--points", "3,4",
                 "60,20", "--layer", "layers.1.*", "--erf-with", "resnet18", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["erf.png", "layers.1.blocks.0.attn.png"]
    with Image.open(out / "layers.1.blocks.0.attn.png") as png:  # 2 points x 2 rows, 1 + 2 heads
        assert png.size == (int(1.8 * 3 * DPI), int((1.8 * 4 + 0.7) * DPI))
    with Image.open(out / "erf.png") as png:  # ours and resnet18 side by side
        assert png.size == (int(1.8 * 2 * DPI), int((1.8 * 2 + 0.7) * DPI))
    config_out = tmp_path / "mm"
    assert main(["configs/det/synthetic/mask_elsa_synthetic.py", "astronaut", "--img-size", "64",
                 "--out", str(config_out)]) == 0
    assert sorted(p.name for p in config_out.iterdir()) == ["erf.png"] + [f"layers.{i}.blocks.0.attn.png"
                                                                          for i in range(3)]
    erf_only = tmp_path / "erf_only"  # a model without attention layers: its receptive field alone
    assert main(["resnet18", "rocket", "--img-size", "64", "--out", str(erf_only)]) == 0
    assert [p.name for p in erf_only.iterdir()] == ["erf.png"]
    capsys.readouterr()


@pytest.mark.parametrize("argv, message", [
    (["no_such_model", "chelsea"], "MODEL 'no_such_model': not a timm model name"),
    (["elsa_swin_tiny", "no_such_image"], "IMAGE 'no_such_image' is neither an image file nor a bundled sample"),
    (["elsa_swin_tiny", "chelsea", "--checkpoint", "missing.pth"], "--checkpoint 'missing.pth': file not found"),
    (["configs/det/none.py", "chelsea"], "CONFIG 'configs/det/none.py': file not found"),
    (["resnet18", "chelsea", "--layer", "layer1.*"], "--layer layer1.*: no attention layer of resnet18 matches"),
    (["elsa_swin_tiny", "chelsea", "--img-size", "32", "--points", "40,3"], "outside the 32x32 input"),
])
def test_bad_input_is_one_line_and_exit_code_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
