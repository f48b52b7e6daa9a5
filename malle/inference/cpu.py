"""What this CPU can do fast, read once per process, for choosing an inference path.

int8 inference pays off where the CPU has VNNI (AVX-512 VNNI, or AVX-VNNI on
newer AVX2 parts): ONNX Runtime then multiplies u8 by s8 in one instruction.
Without VNNI its u8s8 kernels can saturate intermediate sums, so int8 is not
chosen automatically there. ONNX Runtime's CPU provider has no bf16 kernels on
x86; OpenVINO has, and on CPUs with AMX (Intel's tile unit for bf16 and int8) they
run about twice its f32 speed.

``kind`` names the feature set the choice table (``malle/inference/choices.toml``) is
keyed by: the most capable of amx, avx512_bf16, avx512_vnni, avx2 that this CPU has. AVX-512 BF16 without
AMX (AMD Zen 4, Intel Cooper Lake) is a kind of its own: OpenVINO's bf16 runs natively there, about twice its
f32, but not at AMX's speed, and on a CPU with VNNI alone it would be emulated.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CpuFeatures:
    avx2: bool
    avx512: bool
    vnni: bool
    bf16: bool
    amx: bool = False

    @property
    def fast_int8(self) -> bool:
        return self.vnni

    @property
    def kind(self) -> str:
        """The feature set measured paths are listed under (``KINDS``, most capable first)."""
        present = {"amx": self.amx, "avx512_bf16": self.avx512 and self.bf16,
                   "avx512_vnni": self.avx512 and self.vnni, "avx2": self.avx2}
        return next((kind for kind in KINDS if present[kind]), OTHER)

    def describe(self) -> str:
        """For costs.csv and the Overview: e.g. 'x86_64 AVX-512 VNNI BF16'."""
        vector = "AVX-512" if self.avx512 else "AVX2" if self.avx2 else "no AVX2"
        extras = [name for name, present in (("VNNI", self.vnni), ("BF16", self.bf16), ("AMX", self.amx)) if present]
        return " ".join([platform.machine() or "cpu", vector, *extras])


KINDS = ("amx", "avx512_bf16", "avx512_vnni", "avx2")
OTHER = "other"  # none of KINDS: nothing is measured there, auto runs exact fp32


def typical(kind: str) -> CpuFeatures:
    """The least a CPU of ``kind`` has (to check the choice table against every kind, not just this CPU's)."""
    rank = KINDS.index(kind) if kind in KINDS else len(KINDS)

    def has(feature_kind: str) -> bool:
        return rank <= KINDS.index(feature_kind)

    return CpuFeatures(avx2=has("avx2"), avx512=has("avx512_vnni"), vnni=has("avx512_vnni"), bf16=has("avx512_bf16"),
                       amx=has("amx"))


@functools.cache
def cpu_features() -> CpuFeatures:
    flags = _numpy_flags() | _linux_flags()
    return CpuFeatures(
        avx2="AVX2" in flags,
        avx512="AVX512F" in flags,
        vnni=bool({"AVX512VNNI", "AVX_VNNI", "AVXVNNI"} & flags),
        bf16="AVX512BF16" in flags,
        amx={"AMXBF16", "AMX_BF16"} & flags != set() and {"AMXINT8", "AMX_INT8"} & flags != set(),
    )


def _numpy_flags() -> set[str]:
    # NumPy's runtime dispatcher probes the CPU on every platform; its table is the portable source.
    try:
        from numpy._core._multiarray_umath import __cpu_features__  # type: ignore[import-not-found]  # C, no stub
    except ImportError:
        return set()
    return {name for name, present in __cpu_features__.items() if present}


def _linux_flags() -> set[str]:
    """/proc/cpuinfo's flags, upper-cased with underscores dropped where NumPy spells them without."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    raw = line.partition(":")[2].split()
    return {flag.upper().replace("AVX512_", "AVX512") for flag in raw} | {flag.upper() for flag in raw}
