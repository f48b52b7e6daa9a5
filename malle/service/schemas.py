"""The HTTP contract as pydantic models: every request body and every response body of ``malle serve``.

The OpenAPI schema at ``/openapi.json`` is generated from these, and the server answers nothing else: a
property-based test (tests/test_service_contract.py) drives the live server from that schema and checks every
response against it. Field names and meanings are those the API has had since its first version.

The models of the bank's own objects end in ``Body`` here, as the bank's dataclasses hold the plain names
(``malle.bank.Collection``...); the schema names them plainly (``Collection``, ``Item``, ``Match``,
``MatchResult``), as ``public_name`` says.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from malle.bank.bank import MAX_LOOKUP_CODES
from malle.descriptors import DESCRIPTORS

ErrorCode = Literal["not_found", "conflict", "too_large", "bad_image", "bad_field", "bad_request", "unauthorized",
                    "rate_limited", "method_not_allowed", "method_unavailable", "busy", "internal"]
Quality = Literal["ok", "low"]
Score = int | float  # Hamming distance in whole bits, or cosine similarity


class Error(BaseModel):
    """Every 4xx and 5xx: a sentence for people, a stable code for programs, the request's id for the logs."""

    error: str = Field(description="what went wrong, in one line")
    code: ErrorCode = Field(description="stable machine-readable kind of error")
    request_id: str | None = Field(None, description="the X-Request-ID of the request, as the server logged it")


class Health(BaseModel):
    status: Literal["ok"]
    collections: int


class NewCollection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="1-64 letters, digits, '_', '.' or '-'")
    method: str = Field(description="one of: " + ", ".join(DESCRIPTORS))
    threshold: float | None = Field(None, description="in the method's unit; default: the calibrated one")
    index: str = Field("Flat", description="FAISS index-factory string, as --index: Flat, HNSW32, IVF1024,Flat, auto")


class CollectionBody(BaseModel):
    name: str
    method: str
    count: int = Field(description="live items")
    threshold: float = Field(description="in the method's unit: cosine similarity, or Hamming distance in bits")
    threshold_source: str
    metric: str = Field(description="ip (cosine similarity, higher is closer) or hamming (bits, lower is closer)")
    precision: str
    dim: int = Field(description="dimensions, or bits for a hash")
    index: str = Field(description="the FAISS index-factory string")
    created: str
    version: int
    recall_at_10: float | None = Field(None, ge=0, le=1, description=(
        "its approximate index's recall against exact search (FAISS's 1-recall@10 on recall_sample of its own codes), "
        "measured when the index was built; null for an exact index"))
    recall_sample: int | None = Field(None, description="how many of its codes recall_at_10 was measured on")
    search_params: str | None = Field(None, description=(
        "the search parameters its approximate index answers with: for inverted lists, the fewest probed lists "
        "(nprobe=N) whose recall_at_10 reached the build's target; null for an exact index"))
    calibration: str | None = Field(description="where its matches' confidence comes from: the lab run whose "
                                                "calibration.json it was created from (bank create --threshold-from), "
                                                "else the map shipped for its method; null: no confidence")


class CollectionList(BaseModel):
    collections: list[CollectionBody]


class Deleted(BaseModel):
    deleted: str


class ItemBody(BaseModel):
    id: int
    collection: str
    sha256: str = Field(description="of the image's bytes, or of the code when digest_of is 'code'")
    digest_of: Literal["bytes", "code"]
    filename: str
    metadata: dict[str, Any]
    added: str
    removed: str | None
    has_thumbnail: bool = Field(description="false for items added as codes, without their image (a hash list)")


class AddedItem(ItemBody):
    created: bool = Field(description="false when these bytes were there already (that item is answered)")


class ItemPage(BaseModel):
    count: int
    offset: int
    items: list[ItemBody]


class MatchBody(BaseModel):
    id: int
    filename: str
    score: Score
    is_match: bool = Field(description="at least as close as the threshold (false for a low-quality query "
                                       "unless allow_low_quality)")
    confidence: float | None = Field(ge=0, le=1, description=(
        "the probability that this match is a true copy, the same for every method: the share of true copies among "
        "the lab's predictions at this score (isotonic regression on an open-set run, checked on held-back queries; "
        "the collection's calibration names the run); null when the collection has no calibration"))
    metadata: dict[str, Any]
    sha256: str


class MatchResultBody(BaseModel):
    threshold: float
    matches: list[MatchBody] = Field(description="best first")
    quality: Quality | None = Field(description="the query image's verdict; null for a lookup by code")
    quality_reason: str | None = Field(description="why the query is of low quality")


class Lookup(BaseModel):
    model_config = ConfigDict(extra="forbid")
    codes: list[str] = Field(min_length=1, max_length=MAX_LOOKUP_CODES,
                             description="codes as `malle hash` prints them: hex for binary hashes (PDQ: 64 "
                                         "characters, pHash: 16), base64 of float32 for embeddings")


class LookupResult(BaseModel):
    results: list[MatchResultBody] = Field(description="one per code, in order")


class MethodScore(BaseModel):
    method: str
    label: str
    score: Score
    score_name: str
    confidence: float | None = Field(ge=0, le=1, description=(
        "the probability that a pair at this score is a true copy, from the map shipped for the method (measured on "
        "the reproduction run); null for a method without one"))
    threshold: float | None
    is_match: bool | None
    quality: Quality
    quality_reason: str | None


class Comparison(BaseModel):
    scores: list[MethodScore]


SUFFIX = "Body"


def public_name(name: str) -> str:
    """The name a model has in the OpenAPI schema: ``CollectionBody`` -> ``Collection``."""
    return name.removesuffix(SUFFIX) if name.endswith(SUFFIX) and name != SUFFIX else name


def rename_components(spec: dict) -> dict:
    """``spec`` with every ``...Body`` component and reference under its public name."""
    schemas = spec.get("components", {}).get("schemas", {})
    renames = {name: public_name(name) for name in schemas if public_name(name) != name}
    if not renames:
        return spec
    text = json.dumps(spec)
    for old, new in renames.items():
        text = text.replace(f'"#/components/schemas/{old}"', f'"#/components/schemas/{new}"')
    out = json.loads(text)
    out["components"]["schemas"] = {public_name(k): {**v, "title": public_name(k)} if v.get("title") == k else v
                                    for k, v in out["components"]["schemas"].items()}
    return out
