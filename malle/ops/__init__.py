"""Ops: the edits that make modified copies (stage 2), as replayable op chains.

A tour, in reading order:

- ``params``: ``ParamSpec`` (a parameter's ``Kind``, default and help for a UI) and the
  distributions ``make_params`` draws from; ``Sweep``, an op's severity grid. A kind
  (``FloatRange``, ``IntRange``, ``Choices``) knows its values and its UI control
  (``Slider`` or ``SelectBox``).
- ``registry``: ``Op`` (``make_params`` apart from a deterministic ``apply``, like
  torchvision transforms v2), ``OPS`` and the ``@register`` decorator that fills it.
- ``reference``: the reference experiment's ten ops (``REFERENCE_OPS``).
- ``edits``: flips, borders, overlays, noise... from DISC21 and AugLy (``EXTRA_OPS``).
- ``composites``: the original with other pictures, captions and UI (``COMPOSITE_OPS``), made
  from an ``OpContext`` of donor pictures; AugLy where it works.
- ``chains``: a copy's op chain (``Step``s): sampled, applied, stored as JSON, described.
- ``copy_maker``: ``AugmentConfig`` and ``make_copies``, which write each original's copies
  and the manifest.
- ``presets``: named chain distributions (``reference``, ``hard``) for ``--preset``.
- ``severity``: every op alone at the strengths of its ``sweep`` (``GRIDS``), and
  breaking points. Import it as ``malle.ops.severity``.

Adding a family of ops is one new module and one line here:

1. Write ``malle/ops/<family>.py`` with one ``Op`` subclass per op, each decorated with
   ``@register`` and declaring ``name`` (lowercase letters: it becomes a file-name
   token), ``label``, ``params`` (``ParamSpec``s) and ``sweep`` (its severity grid).
   End it with ``<FAMILY>_OPS = ops_defined_in(__name__)``.
2. Add ``from .<family> import <FAMILY>_OPS`` as the last line of the op-family imports
   below (and the name to ``__all__``).

Registration order is the order of those imports, then of the classes in each module.
It must never change for existing ops: ``OPS`` order is the order chains are sampled
from, so reordering it changes which copies a seed makes. That is why the family
imports sit in an ``isort: off`` block, first: every import of any ``malle.ops``
module runs this file first, so they register before anything else can import them.
``tests/test_augment.py`` pins the order.
"""

# The op families, in registry order: append a new family's line at the end, never in between.
# isort: off
from malle.ops.reference import REFERENCE_OPS
from malle.ops.edits import EXTRA_OPS
from malle.ops.composites import COMPOSITE_OPS
# isort: on

from malle.ops.chains import (
    Step,
    apply_chain,
    apply_step,
    chain_from_json,
    chain_to_json,
    describe_chain,
    replay,
    sample_chain,
    sample_params,
)
from malle.ops.composites import NO_CONTEXT, ContextOp, OpContext
from malle.ops.copy_maker import (
    COPY_JPEG_QUALITY,
    MANIFEST_COLUMNS,
    AugmentConfig,
    copy_filename,
    copy_rng,
    make_copies,
    parse_copy_filename,
    write_copies,
)
from malle.ops.params import (
    Choices,
    Control,
    Distribution,
    Fixed,
    FloatRange,
    IntRange,
    IntUniform,
    Kind,
    OneOf,
    ParamSpec,
    SelectBox,
    Size,
    Slider,
    Sweep,
    Uniform,
    choice_param,
    float_param,
    fraction_param,
    int_param,
)
from malle.ops.presets import PRESETS, Preset, get_preset
from malle.ops.registry import OPS, Op, get_op, ops_defined_in, register

__all__ = [
    "COMPOSITE_OPS", "NO_CONTEXT", "PRESETS", "ContextOp", "OpContext", "Preset", "apply_step", "get_preset",
    "COPY_JPEG_QUALITY", "EXTRA_OPS", "MANIFEST_COLUMNS", "OPS", "REFERENCE_OPS", "AugmentConfig", "Distribution",
    "Fixed", "IntUniform", "OneOf", "Op", "ParamSpec", "Size", "Step", "Sweep", "Uniform", "apply_chain",
    "chain_from_json", "chain_to_json", "choice_param", "copy_filename", "copy_rng", "describe_chain", "float_param",
    "fraction_param", "get_op", "int_param", "make_copies", "ops_defined_in", "parse_copy_filename", "register",
    "replay", "sample_chain", "sample_params", "write_copies", "Choices", "Control", "FloatRange", "IntRange", "Kind",
    "SelectBox", "Slider",
]
