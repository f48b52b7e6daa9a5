"""Codes as text, the form hash lists are exchanged in and ``lookup`` takes.

* Binary hashes: the code's bytes in hex, most significant first: 64 characters for PDQ, 16 for pHash. For
  PDQ this is ThreatExchange's form: pdqhash gives the bits of Meta's ``Hash256`` from bit 255 down to 0
  (``hash_to_vector`` reverses them), so the packed bytes read as Meta's 16 words from ``w[15]`` to
  ``w[0]``, as ``Hash256::format`` prints them.
* Embeddings: base64 of the vector as little-endian float32 (2,732 characters for 512 dimensions), L2-normalised
  as the method computes it.
"""

from __future__ import annotations

import base64
import binascii
import string

import numpy as np

from malle.bank.store import Collection
from malle.errors import ConfigError
from malle.retrieval.metrics import METRICS

UNIT_TOLERANCE = 1e-3  # an embedding's norm may differ from 1 by float32 rounding, not by more
HEX = set(string.hexdigits)


def to_text(code: np.ndarray) -> str:
    code = np.asarray(code)
    if code.dtype == np.uint8:
        return code.tobytes().hex()
    return base64.b64encode(np.ascontiguousarray(code, dtype="<f4").tobytes()).decode("ascii")


def from_text(text: str, coll: Collection) -> np.ndarray:
    """One code of ``coll``'s width and dtype from its text; a one-line ``ConfigError`` for anything else."""
    if not isinstance(text, str):
        raise ConfigError(f"a code must be a string (got {type(text).__name__})")
    text = text.strip()
    if METRICS[coll.metric].binary:
        return _from_hex(text, coll)
    return _from_base64(text, coll)


def _from_hex(text: str, coll: Collection) -> np.ndarray:
    want = coll.width * 2
    if len(text) != want or not set(text) <= HEX:
        raise ConfigError(f"a {coll.method} code is {want} hex characters ({coll.dim} bits); got "
                          f"{len(text)} character(s){'' if set(text) <= HEX else ' that are not all hex'}")
    return np.frombuffer(bytes.fromhex(text), dtype=np.uint8).copy()


def _from_base64(text: str, coll: Collection) -> np.ndarray:
    want = coll.width * 4
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"a {coll.method} code is base64 of {coll.width} float32 values; this is not base64") \
            from None
    if len(raw) != want:
        raise ConfigError(f"a {coll.method} code is {coll.width} float32 values ({want} bytes); got {len(raw)} bytes")
    code = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if not np.all(np.isfinite(code)):
        raise ConfigError(f"a {coll.method} code holds values that are not finite numbers")
    norm = float(np.linalg.norm(code.astype(np.float64)))
    if abs(norm - 1) > UNIT_TOLERANCE:
        raise ConfigError(f"a {coll.method} code must be L2-normalised as `malle hash` prints it (norm {norm:.4g})")
    return code
