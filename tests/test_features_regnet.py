"""RegNet_X_400MF: same state-dict keys/shapes as torchvision, 400-dim deterministic output,
strict weight loading with clear errors, and identical features from TorchScript/ONNX exports."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hetrain.errors import HetrainUserError  # noqa: E402
from hetrain.features import load_backbone, regnet_x_400mf  # noqa: E402
from hetrain.features.errors import WeightsError  # noqa: E402
from hetrain.features.regnet import parameter_count  # noqa: E402

# Every convolution weight of torchvision.models.regnet_x_400mf() except `fc`, in state-dict order,
# written out from torchvision/models/regnet.py (not from hetrain's module): stem conv 3x3/2 to 32;
# stages (width, depth) = (32,1) (64,2) (160,7) (400,12) from BlockParams.from_init_params(depth=22,
# w_0=24, w_a=24.48, w_m=2.54, group_width=16) -> quantised [24,64,152,392] -> made divisible by 16;
# each block: proj (first block of a stage only, stride 2), f.a 1x1, f.b 3x3 grouped with 16
# channels per group (weight (w, 16, 3, 3)), f.c 1x1. Each conv "<m>.0.weight" with C outputs is
# followed by its BatchNorm "<m>.1.{weight,bias,running_mean,running_var}" (C,) and
# "<m>.1.num_batches_tracked" () -- see expected_table().
TORCHVISION_CONVS = {
    "stem.0.weight": (32, 3, 3, 3),
    "trunk_output.block1.block1-0.proj.0.weight": (32, 32, 1, 1),
    "trunk_output.block1.block1-0.f.a.0.weight": (32, 32, 1, 1),
    "trunk_output.block1.block1-0.f.b.0.weight": (32, 16, 3, 3),
    "trunk_output.block1.block1-0.f.c.0.weight": (32, 32, 1, 1),
    "trunk_output.block2.block2-0.proj.0.weight": (64, 32, 1, 1),
    "trunk_output.block2.block2-0.f.a.0.weight": (64, 32, 1, 1),
    "trunk_output.block2.block2-0.f.b.0.weight": (64, 16, 3, 3),
    "trunk_output.block2.block2-0.f.c.0.weight": (64, 64, 1, 1),
    "trunk_output.block2.block2-1.f.a.0.weight": (64, 64, 1, 1),
    "trunk_output.block2.block2-1.f.b.0.weight": (64, 16, 3, 3),
    "trunk_output.block2.block2-1.f.c.0.weight": (64, 64, 1, 1),
    "trunk_output.block3.block3-0.proj.0.weight": (160, 64, 1, 1),
    "trunk_output.block3.block3-0.f.a.0.weight": (160, 64, 1, 1),
    "trunk_output.block3.block3-0.f.b.0.weight": (160, 16, 3, 3),
    "trunk_output.block3.block3-0.f.c.0.weight": (160, 160, 1, 1),
    "trunk_output.block3.block3-1.f.a.0.weight": (160, 160, 1, 1),
    "trunk_output.block3.block3-1.f.b.0.weight": (160, 16, 3, 3),
    "trunk_output.block3.block3-1.f.c.0.weight": (160, 160, 1, 1),
    "trunk_output.block3.block3-2.f.a.0.weight": (160, 160, 1, 1),
    "trunk_output.block3.block3-2.f.b.0.weight": (160, 16, 3, 3),
    "trunk_output.block3.block3-2.f.c.0.weight": (160, 160, 1, 1),
    "trunk_output.block3.block3-3.f.a.0.weight": (160, 160, 1, 1),
    "trunk_output.block3.block3-3.f.b.0.weight": (160, 16, 3, 3),
    "trunk_output.block3.block3-3.f.c.0.weight": (160, 160, 1, 1),
    "trunk_output.block3.block3-4.f.a.0.weight": (160, 160, 1, 1),
    "trunk_output.block3.block3-4.f.b.0.weight": (160, 16, 3, 3),
    "trunk_output.block3.block3-4.f.c.0.weight": (160, 160, 1, 1),
    "trunk_output.block3.block3-5.f.a.0.weight": (160, 160, 1, 1),
    "trunk_output.block3.block3-5.f.b.0.weight": (160, 16, 3, 3),
    "trunk_output.block3.block3-5.f.c.0.weight": (160, 160, 1, 1),
    "trunk_output.block3.block3-6.f.a.0.weight": (160, 160, 1, 1),
    "trunk_output.block3.block3-6.f.b.0.weight": (160, 16, 3, 3),
    "trunk_output.block3.block3-6.f.c.0.weight": (160, 160, 1, 1),
    "trunk_output.block4.block4-0.proj.0.weight": (400, 160, 1, 1),
    "trunk_output.block4.block4-0.f.a.0.weight": (400, 160, 1, 1),
    "trunk_output.block4.block4-0.f.b.0.weight": (400, 16, 3, 3),
    "trunk_output.block4.block4-0.f.c.0.weight": (400, 400, 1, 1),
    "trunk_output.block4.block4-1.f.a.0.weight": (400, 400, 1, 1),
    "trunk_output.block4.block4-1.f.b.0.weight": (400, 16, 3, 3),
    "trunk_output.block4.block4-1.f.c.0.weight": (400, 400, 1, 1),
    "trunk_output.block4.block4-2.f.a.0.weight": (400, 400, 1, 1),
    "trunk_output.block4.block4-2.f.b.0.weight": (400, 16, 3, 3),
    "trunk_output.block4.block4-2.f.c.0.weight": (400, 400, 1, 1),
    "trunk_output.block4.block4-3.f.a.0.weight": (400, 400, 1, 1),
    "trunk_output.block4.block4-3.f.b.0.weight": (400, 16, 3, 3),
    "trunk_output.block4.block4-3.f.c.0.weight": (400, 400, 1, 1),
    "trunk_output.block4.block4-4.f.a.0.weight": (400, 400, 1, 1),
    "trunk_output.block4.block4-4.f.b.0.weight": (400, 16, 3, 3),
    "trunk_output.block4.block4-4.f.c.0.weight": (400, 400, 1, 1),
    "trunk_output.block4.block4-5.f.a.0.weight": (400, 400, 1, 1),
    "trunk_output.block4.block4-5.f.b.0.weight": (400, 16, 3, 3),
    "trunk_output.block4.block4-5.f.c.0.weight": (400, 400, 1, 1),
    "trunk_output.block4.block4-6.f.a.0.weight": (400, 400, 1, 1),
    "trunk_output.block4.block4-6.f.b.0.weight": (400, 16, 3, 3),
    "trunk_output.block4.block4-6.f.c.0.weight": (400, 400, 1, 1),
    "trunk_output.block4.block4-7.f.a.0.weight": (400, 400, 1, 1),
    "trunk_output.block4.block4-7.f.b.0.weight": (400, 16, 3, 3),
    "trunk_output.block4.block4-7.f.c.0.weight": (400, 400, 1, 1),
    "trunk_output.block4.block4-8.f.a.0.weight": (400, 400, 1, 1),
    "trunk_output.block4.block4-8.f.b.0.weight": (400, 16, 3, 3),
    "trunk_output.block4.block4-8.f.c.0.weight": (400, 400, 1, 1),
    "trunk_output.block4.block4-9.f.a.0.weight": (400, 400, 1, 1),
    "trunk_output.block4.block4-9.f.b.0.weight": (400, 16, 3, 3),
    "trunk_output.block4.block4-9.f.c.0.weight": (400, 400, 1, 1),
    "trunk_output.block4.block4-10.f.a.0.weight": (400, 400, 1, 1),
    "trunk_output.block4.block4-10.f.b.0.weight": (400, 16, 3, 3),
    "trunk_output.block4.block4-10.f.c.0.weight": (400, 400, 1, 1),
    "trunk_output.block4.block4-11.f.a.0.weight": (400, 400, 1, 1),
    "trunk_output.block4.block4-11.f.b.0.weight": (400, 16, 3, 3),
    "trunk_output.block4.block4-11.f.c.0.weight": (400, 400, 1, 1),
}
# torchvision's RegNet_X_400MF_Weights meta: num_params = 5,495,976 including fc (400*1000 + 1000).
TORCHVISION_NUM_PARAMS_WITHOUT_FC = 5_495_976 - (400 * 1000 + 1000)
BN_SUFFIXES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def expected_table() -> dict[str, tuple[int, ...]]:
    table = {}
    for key, shape in TORCHVISION_CONVS.items():
        table[key] = shape
        module = key.removesuffix(".0.weight")
        for suffix in BN_SUFFIXES:
            table[f"{module}.1.{suffix}"] = () if suffix == "num_batches_tracked" else (shape[0],)
    return table


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return regnet_x_400mf()


def _images(n=2, size=64, seed=0):
    # Small inputs keep the tests fast; the network is fully convolutional up to the global pool.
    return torch.from_numpy(np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32))


def test_state_dict_keys_and_shapes_match_torchvision(model):
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = expected_table()
    assert list(got) == list(expected)  # same keys, same order
    assert got == expected
    assert len(got) == 426


def test_parameter_count_matches_published(model):
    assert parameter_count(model) == TORCHVISION_NUM_PARAMS_WITHOUT_FC == 5_094_976


def test_batchnorm_settings(model):
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == len(TORCHVISION_CONVS) == 71 and all(m.eps == 1e-5 and m.momentum == 0.1 for m in bns)


def test_output_is_400_dim_nonnegative_and_deterministic(model):
    x = _images(3)
    with torch.inference_mode():
        a, b = model(x), model(x)
        single = model(x[:1])
    assert a.shape == (3, 400)
    assert torch.equal(a, b)  # eval mode: BatchNorm uses running stats, no randomness
    assert (a >= 0).all()  # ReLU then average pooling, like the reference feature file
    torch.testing.assert_close(single, a[:1], rtol=1e-5, atol=1e-5)  # no batch coupling
    assert not model.training


def _save(state, tmp_path, name="w.pth"):
    path = tmp_path / name
    torch.save(state, path)
    return path


def test_load_state_dict_with_or_without_fc(model, tmp_path):
    torch.manual_seed(1)
    donor = regnet_x_400mf()
    for bn in (m for m in donor.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.running_mean.uniform_(-0.1, 0.1)  # make BN statistics matter
        bn.running_var.uniform_(0.5, 1.5)
    state = donor.state_dict()
    with_fc = {**state, "fc.weight": torch.zeros(1000, 400), "fc.bias": torch.zeros(1000)}
    no_counters = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    x = _images(2)
    with torch.inference_mode():
        want = donor(x).numpy()
    for i, s in enumerate((state, with_fc, no_counters)):
        backbone = load_backbone("regnet_x_400mf", _save(s, tmp_path, f"w{i}.pth"))
        np.testing.assert_array_equal(backbone(x), want)


def test_missing_or_absent_weights_say_what_to_provide(tmp_path):
    for path in (None, tmp_path / "nope.pth"):
        with pytest.raises(WeightsError, match="torchvision.models.regnet_x_400mf") as exc:
            load_backbone("regnet_x_400mf", path)
        assert isinstance(exc.value, HetrainUserError)


def test_wrong_state_dict_lists_offending_keys(model, tmp_path):
    state = model.state_dict()
    missing = {k: v for k, v in state.items() if not k.startswith("stem.")}
    with pytest.raises(WeightsError, match=r"missing keys, e\.g\. \['stem\.0\.weight'"):
        load_backbone("regnet_x_400mf", _save(missing, tmp_path, "a.pth"))
    extra = {**state, "head.weight": torch.zeros(3)}
    with pytest.raises(WeightsError, match=r"unexpected keys, e\.g\. \['head\.weight'\]"):
        load_backbone("regnet_x_400mf", _save(extra, tmp_path, "b.pth"))
    wrong = {**state, "stem.0.weight": torch.zeros(16, 3, 3, 3)}
    with pytest.raises(WeightsError, match=r"stem\.0\.weight: \(16, 3, 3, 3\) in file, \(32, 3, 3, 3\) expected"):
        load_backbone("regnet_x_400mf", _save(wrong, tmp_path, "c.pth"))


def test_unreadable_weights_file(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="cannot read"):
        load_backbone("regnet_x_400mf", bad)
    with pytest.raises(WeightsError, match="does not hold a state dict"):
        load_backbone("regnet_x_400mf", _save([1, 2, 3], tmp_path, "list.pth"))


# Exports run the same float32 graph with different kernels (TorchScript: the same ATen ops, so
# bit-identical in practice; onnxruntime: its own conv/BN-folding kernels with a different
# summation order). float32 rounding over ~20 residual blocks stays near 1e-6 relative to
# activations of order 1, so 1e-4 absolute / 1e-4 relative leaves ample margin while still
# catching any real graph difference (a wrong stride, padding or BN would be off by >1e-1).
EXPORT_TOL = dict(rtol=1e-4, atol=1e-4)
# torch 2.13 warns that the TorchScript-based ONNX exporter is legacy; the new one needs onnxscript.
legacy_onnx_export = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_torchscript_export_gives_same_features(model, tmp_path):
    path = tmp_path / "regnet.pt"
    torch.jit.script(model).save(str(path))
    x = _images(2)
    with torch.inference_mode():
        want = model(x).numpy()
    np.testing.assert_allclose(load_backbone("torchscript", path)(x), want, **EXPORT_TOL)


@legacy_onnx_export
def test_onnx_export_gives_same_features(model, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    path = tmp_path / "regnet.onnx"
    x = _images(3)
    torch.onnx.export(
        model, (x[:1],), str(path), dynamo=False, input_names=["images"], output_names=["features"],
        dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
    )
    with torch.inference_mode():
        want = model(x).numpy()
    np.testing.assert_allclose(load_backbone("onnx", path)(x), want, **EXPORT_TOL)


@legacy_onnx_export
def test_onnx_fixed_batch_model_is_chunked(model, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    path = tmp_path / "fixed.onnx"
    x = _images(3, size=32)
    torch.onnx.export(model, (x[:2],), str(path), dynamo=False)  # batch fixed at 2
    with torch.inference_mode():
        want = model(x).numpy()
    np.testing.assert_allclose(load_backbone("onnx", path)(x), want, **EXPORT_TOL)


def test_bad_alternative_backbone_files(tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00" * 10)
    with pytest.raises(WeightsError, match="TorchScript"):
        load_backbone("torchscript", junk)
    with pytest.raises(WeightsError, match="needs the model file"):
        load_backbone("torchscript", None)
    if importlib.util.find_spec("onnxruntime"):
        with pytest.raises(WeightsError, match="ONNX"):
            load_backbone("onnx", junk)
    with pytest.raises(HetrainUserError, match="unknown backbone"):
        load_backbone("resnet", junk)
