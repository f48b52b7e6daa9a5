"""What the command line offers, as plain data: the parser is built without importing what provides it.

``malle --help``, ``--version`` and a usage error must answer at once, and the registries behind the options
(the descriptors, the ops, the inference engines, the bank, the scale jobs) import PyTorch, FAISS, ONNX Runtime,
OpenVINO and pandas, seconds of imports. So the names, defaults and limits the options show and check are
written here once more, and ``tests/test_cli.py`` checks each against the registry it copies: a new method, op
or preset that is not added here fails that test, it cannot drift silently. Each command imports the heavy
parts inside its ``run``.
"""

from __future__ import annotations

from dataclasses import dataclass

# malle.descriptors.registry: DESCRIPTORS (in order) and DEFAULT_METHODS.
METHODS = ("sscd", "sscd_distilled", "resnet50", "efficientnet_lite2", "phash", "pdq", "pdq_dihedral", "dhash",
           "ahash", "whash")
DEFAULT_METHODS = ("sscd_distilled", "resnet50", "efficientnet_lite2", "phash")


@dataclass(frozen=True)
class MetricName:
    """How a method's scores compare (malle.retrieval.metrics.Metric's name and score_name)."""

    name: str
    score_name: str


COSINE = MetricName("ip", "cosine similarity")
HAMMING = MetricName("hamming", "Hamming distance")
METRICS = {"sscd": COSINE, "sscd_distilled": COSINE, "resnet50": COSINE, "efficientnet_lite2": COSINE,
           "phash": HAMMING, "pdq": HAMMING, "pdq_dihedral": HAMMING, "dhash": HAMMING, "ahash": HAMMING,
           "whash": HAMMING}

# malle.descriptors.plugins.GROUP: plug-in methods, found by name without being imported.
PLUGIN_GROUP = "malle.descriptors"
# malle.descriptors.registry.METHODS_DIR_ENV: the folder of spec files the dashboard offers.
METHODS_DIR_ENV = "MALLE_METHODS_DIR"
# malle.descriptors.onnx_spec.SPEC_SUFFIX: a method given as the path of a spec file.
SPEC_SUFFIX = ".toml"


@dataclass(frozen=True)
class WeightsOption:
    """A ``--<method>-weights`` option (malle.descriptors.registry.weight_options)."""

    method: str
    label: str  # the descriptor's display_name()
    env: str  # the descriptor's weights_env


WEIGHT_OPTIONS = {"resnet50-weights": WeightsOption("resnet50", "ResNet-50", "MALLE_RESNET50_WEIGHTS")}

# malle.inference.precision.
PRECISIONS = ("auto", "fp32", "bf16", "int8")
ENGINES = ("auto", "onnxruntime", "openvino")

# malle.ops: OPS in registry order, REFERENCE_OPS, and PRESETS' names and descriptions.
OPS = ("centercrop", "randomcrop", "resize", "rotate", "blur", "color", "hue", "watermark", "jpeg", "occlude",
       "hflip", "rotatequarter", "pad", "text", "sticker", "grayscale", "noise", "pixelate", "perspective",
       "screenshot", "inset", "overlay", "meme", "emoji", "collage", "post")
REFERENCE_OPS = OPS[:10]
PRESETS = {
    "reference": "the reference experiment: its ten ops, chains of 1 to 5",
    "hard": ("DISC21-like: every op with the composites, chains of 4 to 8, a quarter single edits; "
             "a quarter of the distractor queries are hard negatives"),
}

# malle.tricks.normalise.DEFAULT_SCORE_NORM.
DEFAULT_SCORE_NORM = "1[0,2]"
# malle.data.sampling: the demo's originals and distractor queries.
DEMO_N = 60
DEMO_DISTRACTORS = 40
# malle.bank.bank.MAX_K: the most matches a bank query returns.
BANK_MAX_K = 1000
# malle.dedup.folder.PREFERENCE.
DEDUP_PREFERENCE = ("sscd_distilled", "sscd", "efficientnet_lite2", "pdq", "phash")
# malle.scale.ondisk.
TRAIN_PER_LIST = 64
MIN_TRAIN = 10_000
SHARDS_PER_TASK = 16
