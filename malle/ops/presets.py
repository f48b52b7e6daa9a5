"""Presets: named chain distributions, so a run can be as easy as the reference experiment or as hard as DISC21.

A preset is the ops chains draw from, the chain-length range, and the share of single edits. ``--preset``
picks one; ``--ops`` and ``--chain-lengths`` given explicitly override the preset's. Another preset is one
``Preset(...)`` in ``PRESETS``.

- ``reference``: the reference experiment, today's default (its copies are byte for byte what they were).
- ``hard``: DISC21-like. Every op, the composites included, in long chains (4 to 8 edits), with a quarter
  of the queries made by one edit alone. DISC21's queries chain several AugLy functions and some are a single
  edit; the exact share is not published in what this project has offline, so a quarter is this preset's
  choice, stated here rather than claimed as DISC21's figure. A quarter of its distractor queries
  (K/4 of ``--distractors K``, rounded half up) are hard negatives (``malle.data.hard_negatives``), split
  evenly among their nine kinds; the other three quarters are copies of distinct spare photos. DISC21 mixes
  such images into its queries without publishing their share, so a quarter is this preset's choice too.

The reference preset makes no hard negatives, as the published experiment did not.
"""

from __future__ import annotations

from dataclasses import dataclass

from malle.errors import ConfigError
from malle.ops.copy_maker import AugmentConfig
from malle.ops.reference import REFERENCE_OPS
from malle.ops.registry import OPS


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    ops: tuple[str, ...]
    chain_lengths: tuple[int, int]
    single_share: float = 0.0
    hard_negative_share: float = 0.0  # of the distractor queries (malle.data.hard_negatives)

    def hard_negatives(self, distractors: int) -> int:
        """How many of ``distractors`` distractor queries are hard negatives: the share, rounded half up."""
        return int(distractors * self.hard_negative_share + 0.5)

    def augment(self, copies: tuple[int, ...] = (4, 8), ops: tuple[str, ...] | None = None,
                chain_lengths: tuple[int, int] | None = None) -> AugmentConfig:
        """This preset's chain distribution; ``ops`` and ``chain_lengths``, when given, replace its own.

        The config (and config.json) names the preset, except ``reference``: it is the config from before
        presets, so reference runs keep their config.json and cache keys."""
        return AugmentConfig(copies=copies, chain_lengths=chain_lengths or self.chain_lengths, ops=ops or self.ops,
                             single_share=self.single_share, preset="" if self.name == "reference" else self.name)


REFERENCE = Preset("reference", "the reference experiment: its ten ops, chains of 1 to 5", REFERENCE_OPS, (1, 5))
HARD = Preset("hard", "DISC21-like: every op with the composites, chains of 4 to 8, a quarter single edits; "
                      "a quarter of the distractor queries are hard negatives",
              tuple(OPS), (4, 8), single_share=0.25, hard_negative_share=0.25)

PRESETS: dict[str, Preset] = {preset.name: preset for preset in (REFERENCE, HARD)}


def preset_of(config: AugmentConfig) -> Preset:
    """The preset a chain distribution came from (``reference`` when it names none)."""
    return get_preset(config.preset or REFERENCE.name)


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}") from None
