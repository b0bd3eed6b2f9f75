"""Statistics exported in each framework's form, and normalization in each framework's
convention: checked against NumPy computations of the frameworks' documented formulas, and
against the frameworks themselves where they are installed."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import assert_close, run_bn

from bncli import api
from bncli.errors import StatsFileError, UsageError

safetensors_numpy = pytest.importorskip("safetensors.numpy")


@pytest.fixture
def images(tmp_path, rng):
    """A uint8 NHWC image batch and its statistics file."""
    values = np.clip(rng.normal([120, 100, 80], [60, 50, 40], size=(24, 16, 16, 3)), 0,
                     255).round().astype(np.uint8)
    np.save(tmp_path / "images.npy", values)
    assert run_bn("stats", tmp_path / "images.npy", "-o", tmp_path / "rgb.json",
                  "-q").returncode == 0
    return values, tmp_path / "rgb.json"


def test_torchvision_divides_integer_images_by_their_maximum(images):
    values, stats = images
    exported = api.export(stats, "torchvision")
    scaled = values.astype(np.float64) / 255
    assert exported["divided_by"] == 255
    assert_close(exported["mean"], scaled.mean(axis=(0, 1, 2)), rtol=1e-12)
    assert_close(exported["std"], scaled.std(axis=(0, 1, 2)), rtol=1e-12)
    # what Normalize does to ToTensor's [0, 1] images: mean 0 and std 1 per channel
    normalized = (scaled - exported["mean"]) / exported["std"]
    assert_close(normalized.mean(axis=(0, 1, 2)), 0, atol=1e-6)
    assert_close(normalized.std(axis=(0, 1, 2)), 1, atol=1e-6)
    raw = api.export(stats, "torchvision", rescale=False)
    assert raw["divided_by"] == 1
    assert_close(raw["mean"], values.mean(axis=(0, 1, 2)), rtol=1e-12)


def test_torchvision_snippet_and_json_from_the_command_line(images, tmp_path):
    values, stats = images
    snippet = run_bn("export", stats, "--to", "torchvision")
    assert snippet.returncode == 0, snippet.stderr
    namespace: dict = {}
    source = snippet.stdout.decode().replace("from torchvision import transforms\n", "")
    exec(source, {"transforms": type("T", (), {"Normalize": staticmethod(dict)})}, namespace)
    assert_close(namespace["normalize"]["mean"], values.mean(axis=(0, 1, 2)) / 255,
                 rtol=1e-12)
    as_json = json.loads(run_bn("export", stats, "--to", "torchvision", "--format",
                                "json").stdout)
    assert as_json["divided_by"] == 255 and len(as_json["std"]) == 3
    assert run_bn("export", stats, "--to", "torchvision", "-o", tmp_path / "n.json",
                  "--force").returncode == 0
    assert json.loads((tmp_path / "n.json").read_text())["mean"] == as_json["mean"]


def test_torchvision_normalize_itself(images):
    torch = pytest.importorskip("torch")
    transforms = pytest.importorskip("torchvision.transforms")
    values, stats = images
    exported = api.export(stats, "torchvision")
    batch = torch.from_numpy(values).permute(0, 3, 1, 2).to(torch.float64) / 255
    out = transforms.Normalize(exported["mean"], exported["std"])(batch)
    assert_close(out.mean(dim=(0, 2, 3)).numpy(), 0, atol=1e-6)
    assert_close(out.std(dim=(0, 2, 3), unbiased=False).numpy(), 1, atol=1e-6)


def test_torch_batchnorm_state_is_unbiased_float32(images, tmp_path):
    values, stats = images
    path = tmp_path / "bn.safetensors"
    result = run_bn("export", stats, "--to", "torch-bn", "-o", path, "--prefix", "layer1.bn.")
    assert result.returncode == 0, result.stderr
    state = safetensors_numpy.load_file(str(path))
    assert sorted(state) == ["layer1.bn." + key for key in (
        "bias", "num_batches_tracked", "running_mean", "running_var", "weight")]
    flat = values.reshape(-1, 3).astype(np.float64)
    assert state["layer1.bn.running_var"].dtype == np.float32
    np.testing.assert_array_equal(state["layer1.bn.running_var"],
                                  flat.var(axis=0, ddof=1).astype(np.float32))
    np.testing.assert_array_equal(state["layer1.bn.running_mean"],
                                  flat.mean(axis=0).astype(np.float32))
    np.testing.assert_array_equal(state["layer1.bn.weight"], np.ones(3, np.float32))
    np.testing.assert_array_equal(state["layer1.bn.bias"], np.zeros(3, np.float32))
    assert state["layer1.bn.num_batches_tracked"].shape == ()
    assert state["layer1.bn.num_batches_tracked"].dtype == np.int64


def test_torch_batchnorm_loads_the_state(images, tmp_path):
    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    values, stats = images
    api.export(stats, "torch-bn", tmp_path / "bn.safetensors")
    layer = torch.nn.BatchNorm2d(3)
    layer.load_state_dict(safetensors_torch.load_file(str(tmp_path / "bn.safetensors")))
    flat = values.reshape(-1, 3).astype(np.float64)
    assert_close(layer.running_var.numpy(), flat.var(axis=0, ddof=1), rtol=1e-6)


def test_keras_export_is_the_population_variance_on_the_kept_axes(tmp_path, rng):
    values = rng.normal([1.0, -2.0, 3.0, 0.5], 2.0, size=(10, 6, 7, 4)).transpose(0, 3, 1, 2)
    np.save(tmp_path / "nchw.npy", values.astype(np.float32))
    assert run_bn("stats", tmp_path / "nchw.npy", "--channel-axis", "1", "-o",
                  tmp_path / "s.json", "-q").returncode == 0
    exported = api.export(tmp_path / "s.json", "keras")
    assert exported["axis"] == -3
    data = values.astype(np.float32).astype(np.float64)
    assert_close(exported["mean"], data.mean(axis=(0, 2, 3)), rtol=1e-12)
    assert_close(exported["variance"], data.var(axis=(0, 2, 3)), rtol=1e-12)
    snippet = run_bn("export", tmp_path / "s.json", "--to", "keras").stdout.decode()
    assert "axis=-3" in snippet and "keras.layers.Normalization(" in snippet


def _keras():
    """Keras 3 on whichever backend is installed (it needs one), or a skip."""
    import importlib.util
    import os

    if "KERAS_BACKEND" not in os.environ:
        for backend in ("jax", "torch", "tensorflow"):
            if importlib.util.find_spec(backend) is not None:
                os.environ["KERAS_BACKEND"] = backend
                break
    try:
        import keras
    except ImportError as exc:  # no keras, or no backend for it
        pytest.skip(f"keras is not usable here: {exc}")
    return keras


def test_keras_normalization_itself_matches_the_convention(tmp_path, rng):
    keras = _keras()
    values = rng.normal(5, [0.5, 2.0, 1e-9], size=(64, 5, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", values)
    assert run_bn("stats", tmp_path / "x.npy", "-o", tmp_path / "s.json", "-q").returncode == 0
    assert run_bn("normalize", tmp_path / "x.npy", "--stats", tmp_path / "s.json", "-o",
                  tmp_path / "y.npy", "--convention", "keras-normalization",
                  "-q").returncode == 0
    exported = api.export(tmp_path / "s.json", "keras")
    layer = keras.layers.Normalization(axis=exported["axis"], mean=exported["mean"],
                                       variance=exported["variance"])
    expected = np.asarray(layer(values))
    assert_close(np.load(tmp_path / "y.npy"), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("convention, divisor", [
    ("tf", lambda v: np.sqrt(v + 1e-3)),
    ("torch", lambda v: np.sqrt(v + 1e-5)),
    ("keras-backend", lambda v: np.sqrt(v) + 1e-3),
    ("keras-normalization", lambda v: np.maximum(np.sqrt(v), 1e-7)),
])
def test_each_convention_puts_epsilon_where_its_framework_does(tmp_path, rng, convention,
                                                              divisor):
    values = (rng.normal(3, [1e-4, 1.0, 30.0], size=(256, 3)) + [0, 0, 1e3]).astype(np.float32)
    values[:, 0] = 7.0  # a channel without spread: at its mean, 0 whatever the divisor
    np.save(tmp_path / "x.npy", values)
    result = run_bn("normalize", tmp_path / "x.npy", "-o", tmp_path / "y.npy", "-q",
                    "--convention", convention, "--dtype", "float64")
    assert result.returncode == 0, result.stderr
    data = values.astype(np.float64)
    mean, variance = data.mean(axis=0), data.var(axis=0)
    expected = (data - mean) / divisor(variance)
    assert_close(np.load(tmp_path / "y.npy"), expected, rtol=1e-12, atol=1e-12)
    # an epsilon given replaces the convention's default, in the same place
    result = run_bn("normalize", tmp_path / "x.npy", "-o", tmp_path / "z.npy", "-q",
                    "--convention", convention, "--epsilon", "0.5", "--dtype", "float64")
    assert result.returncode == 0
    if convention in ("tf", "torch"):
        expected = (data - mean) / np.sqrt(variance + 0.5)
    elif convention == "keras-backend":
        expected = (data - mean) / (np.sqrt(variance) + 0.5)
    else:
        expected = (data - mean) / np.maximum(np.sqrt(variance), 0.5)
    assert_close(np.load(tmp_path / "z.npy"), expected, rtol=1e-12, atol=1e-12)


def test_torch_convention_matches_batchnorm_in_training_mode(tmp_path, rng):
    torch = pytest.importorskip("torch")
    values = np.ascontiguousarray(
        rng.normal([1.0, -3.0], [2.0, 0.1], size=(8, 5, 5, 2)).transpose(0, 3, 1, 2),
        dtype=np.float32)
    np.save(tmp_path / "x.npy", values)
    assert run_bn("normalize", tmp_path / "x.npy", "--channel-axis", "1", "-o",
                  tmp_path / "y.npy", "-q", "--convention", "torch").returncode == 0
    layer = torch.nn.BatchNorm2d(2).train()
    expected = layer(torch.from_numpy(values)).detach().numpy()
    assert_close(np.load(tmp_path / "y.npy"), expected, rtol=1e-5, atol=1e-5)


def test_torch_convention_takes_the_population_variance_of_a_ddof_1_file(tmp_path, rng):
    values = rng.normal(2, 3, size=(50, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", values)
    assert run_bn("stats", tmp_path / "x.npy", "--ddof", "1", "-o", tmp_path / "s.json",
                  "-q").returncode == 0
    api.normalize(tmp_path / "x.npy", tmp_path / "y.npy", stats=tmp_path / "s.json",
                  convention="torch", dtype="float64")
    data = values.astype(np.float64)
    expected = (data - data.mean(axis=0)) / np.sqrt(data.var(axis=0) + 1e-5)
    assert_close(np.load(tmp_path / "y.npy"), expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(UsageError, match="population variance"):
        api.normalize(tmp_path / "x.npy", tmp_path / "w.npy", convention="torch", ddof=1)


def test_export_errors(tmp_path, rng, images):
    _, stats = images
    refused = run_bn("export", stats, "--to", "torch-bn")
    assert refused.returncode == 2 and ".safetensors" in refused.stderr.decode()
    wrong = run_bn("export", stats, "--to", "keras", "-o", tmp_path / "k.txt")
    assert wrong.returncode == 2 and ".json or .py" in wrong.stderr.decode()
    np.save(tmp_path / "grid.npy", rng.normal(size=(10, 3, 4)))
    api.save_statistics(api.stats(tmp_path / "grid.npy", axes=(0,)), tmp_path / "g.json")
    with pytest.raises(StatsFileError, match="one channel axis"):
        api.export(tmp_path / "g.json", "torchvision")
    (tmp_path / "mv.json").write_text(json.dumps({
        "schema": "bncli.stats/2", "axes": [0], "channel_shape": [2], "mean": [0.0, 1.0],
        "variance": [1.0, 2.0]}))
    with pytest.raises(StatsFileError, match="no counts"):
        api.export(tmp_path / "mv.json", "torch-bn", tmp_path / "bn.safetensors")
    exported = api.export(tmp_path / "mv.json", "keras")
    assert exported["variance"] == [1.0, 2.0]


def test_stats_exports_what_it_computed(images, tmp_path):
    values, stats = images
    result = run_bn("stats", tmp_path / "images.npy", "--export", "torch-bn",
                    "--export-output", tmp_path / "bn.safetensors")
    assert result.returncode == 0, result.stderr
    state = safetensors_numpy.load_file(str(tmp_path / "bn.safetensors"))
    flat = values.reshape(-1, 3).astype(np.float64)
    np.testing.assert_array_equal(state["running_var"],
                                  flat.var(axis=0, ddof=1).astype(np.float32))
    snippet = run_bn("stats", tmp_path / "images.npy", "--export", "keras")
    assert snippet.returncode == 0 and "keras.layers.Normalization(" in snippet.stdout.decode()
    assert run_bn("stats", tmp_path / "images.npy", "--export", "torch-bn").returncode == 2


def test_tf_convention_matches_keras_ops_batch_normalization(tmp_path, rng):
    keras = _keras()
    values = rng.normal([4.0, -1.0, 0.0], [3.0, 0.01, 1e-4], size=(32, 6, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", values)
    assert run_bn("normalize", tmp_path / "x.npy", "-o", tmp_path / "y.npy", "-q",
                  "--scale", "2,1,0.5", "--offset", "0,1,-1").returncode == 0
    data = values.astype(np.float64)
    expected = keras.ops.batch_normalization(
        data, data.mean(axis=(0, 1)), data.var(axis=(0, 1)), axis=-1,
        offset=np.array([0.0, 1.0, -1.0]), scale=np.array([2.0, 1.0, 0.5]), epsilon=1e-3)
    # Keras computes in float32 on most backends: agreement to its rounding
    assert_close(np.load(tmp_path / "y.npy"), np.asarray(expected), rtol=1e-5, atol=1e-5)
