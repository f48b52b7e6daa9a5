"""The item, match, lookup and compare routes of ``malle.service.app`` (see its docstring for the contract)."""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, File, Form, Path, Query, Response, UploadFile
from starlette.exceptions import HTTPException

from malle.bank import Bank, NotFound
from malle.bank.bank import MAX_K
from malle.bank.store import INT64_MAX
from malle.bank.thresholds import DEFAULTS
from malle.descriptors import DESCRIPTORS, available_methods
from malle.errors import BadImage, ConfigError
from malle.service import schemas
from malle.service.batching import MatchBatcher
from malle.service.statuses import responses

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
CollectionName = Annotated[str, Path(pattern=NAME_PATTERN, description="the collection's name")]
ItemId = Annotated[int, Path(ge=1, le=INT64_MAX, description="the item's id")]
K = Annotated[int, Query(ge=1, le=MAX_K, description="matches per query")]
Threshold = Annotated[float | None, Query(description="in the method's unit; default: the collection's")]
AllowLow = Annotated[bool, Query(description="give is_match even for a low-quality query (blank, near-uniform, "
                                             "tiny)")]


def get_and_head(app: FastAPI, path: str, **kwargs):
    """Register a GET route and its HEAD twin (same answer, no body), each with its own operation id."""
    def register(fn):
        app.get(path, **kwargs)(fn)
        app.head(path, operation_id=f"{fn.__name__}_head", **kwargs)(fn)
        return fn
    return register


def read_upload(upload: UploadFile, limit: int, field: str) -> bytes:
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(413, f"{field}: over the upload limit of {limit / 2**20:.0f} MiB")
    if not data:
        raise BadImage(f"{field}: empty file (0 bytes)")
    return data


def add_item_routes(app: FastAPI, bank: Bank, limit: int) -> None:
    @app.post("/v1/collections/{name}/items", status_code=201, response_model=schemas.AddedItem,
              responses={**responses(), 200: {"model": schemas.AddedItem,
                                              "description": "these bytes were there already: that item"}},
              response_description="added; Location names the item")
    def add_item(name: CollectionName, file: Annotated[UploadFile, File()], response: Response,
                 metadata: Annotated[str | None, Form(description="a JSON object")] = None):
        bank.collection(name, count=False)  # an unknown collection is a 404 before the upload is decoded
        item, created = bank.add_bytes(name, read_upload(file, limit, "file"), file.filename or "upload", metadata)
        if created:
            response.headers["Location"] = f"/v1/collections/{name}/items/{item.id}"
        else:
            response.status_code = 200
        return {**item.public(), "created": created}

    @get_and_head(app, "/v1/collections/{name}/items", response_model=schemas.ItemPage,
                   responses=responses())
    def list_items(name: CollectionName, offset: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
                   limit_: Annotated[int, Query(alias="limit", ge=1, le=1000)] = 100):
        coll = bank.collection(name)
        items = bank.store.items(name, offset=offset, limit=limit_)
        return {"count": coll.count, "offset": offset, "items": [i.public() for i in items]}

    @get_and_head(app, "/v1/collections/{name}/items/{item_id}", response_model=schemas.ItemBody,
                   responses=responses())
    def get_item(name: CollectionName, item_id: ItemId):
        return bank.store.item(name, item_id).public()

    @get_and_head(app, "/v1/collections/{name}/items/{item_id}/thumbnail",
                   response_class=Response,
                   responses={**responses(), 200: {"content": {"image/jpeg": {}}, "description": "a small JPEG"}})
    def get_thumbnail(name: CollectionName, item_id: ItemId) -> Response:
        data = bank.store.thumbnail(name, item_id)
        if data is None:
            raise NotFound(f"item {item_id} has no thumbnail (added as a code, without its image)")
        return Response(data, media_type="image/jpeg")

    @app.delete("/v1/collections/{name}/items/{item_id}", response_model=schemas.ItemBody, responses=responses())
    def remove_item(name: CollectionName, item_id: ItemId):
        return bank.remove(name, item_id).public()


def add_match_routes(app: FastAPI, bank: Bank, batcher: MatchBatcher, limit: int) -> None:
    @app.post("/v1/collections/{name}/match", response_model=schemas.MatchResultBody, responses=responses())
    def match(name: CollectionName, file: Annotated[UploadFile, File()], k: K = 10, threshold: Threshold = None,
              allow_low_quality: AllowLow = False):
        bank.collection(name, count=False)
        return batcher.match(name, read_upload(file, limit, "file"), k, threshold, allow_low_quality).public()

    @app.post("/v1/collections/{name}/lookup", response_model=schemas.LookupResult, responses=responses())
    def lookup(name: CollectionName, body: schemas.Lookup, k: K = 10, threshold: Threshold = None):
        return {"results": [r.public() for r in bank.lookup(name, body.codes, k, threshold)]}

    @app.post("/v1/compare", response_model=schemas.Comparison, responses=responses())
    def compare(file_a: Annotated[UploadFile, File()], file_b: Annotated[UploadFile, File()],
                methods: Annotated[str | None, Query(description="comma-separated; default: every calibrated "
                                                                 "method that runs here")] = None):
        chosen = _methods(methods)
        return {"scores": bank.compare(read_upload(file_a, limit, "file_a"), read_upload(file_b, limit, "file_b"),
                                       chosen)}


def _methods(text: str | None) -> list[str]:
    if text is None:
        runnable = set(available_methods())
        return [m for m in DEFAULTS if m in runnable]
    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in DESCRIPTORS]
    if unknown or not names:
        raise ConfigError(f"methods: unknown {unknown or 'none given'}; choose from {', '.join(DESCRIPTORS)}")
    return list(dict.fromkeys(names))
