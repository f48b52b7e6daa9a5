"""The REST API over one bank (FastAPI; OpenAPI at ``/docs``). These routes and fields are a contract:

* ``GET /v1/health``;
* ``GET /v1/collections``; ``POST /v1/collections`` JSON ``{"name", "method", "threshold"?, "index"?}`` -> 201;
* ``GET /v1/collections/{name}`` -> ``{"name", "method", "count", "threshold", ...}``;
  ``DELETE /v1/collections/{name}``;
* ``POST /v1/collections/{name}/items``: multipart ``file`` and optional ``metadata`` (a JSON object as a
  string) -> 201 ``{"id", "sha256", "filename", ..., "created": true}``; the same bytes again -> 200 with
  that item and ``"created": false``; ``GET .../items`` (a page), ``GET``/``DELETE .../items/{id}``,
  ``GET .../items/{id}/thumbnail`` (a small JPEG);
* ``POST /v1/collections/{name}/match``: multipart ``file``, query ``k`` and ``threshold`` ->
  ``{"threshold", "matches": [{"id", "filename", "score", "is_match", "metadata"}]}``, best first;
* ``POST /v1/compare``: multipart ``file_a`` and ``file_b``, query ``methods`` -> a score per method.

Scores and thresholds are in each method's unit: cosine similarity (higher is closer) or Hamming distance
in bits (lower is closer). Bad input is a JSON ``{"error": ...}`` with a 4xx status: 404 unknown collection
or item, 409 a collection that exists, 413 too large, 422 a file that is not a usable image (not an image,
a decompression bomb, beyond 1:20) or a malformed field. Handlers are plain functions, so FastAPI runs them
on its thread pool: matches run concurrently, and the bank serialises writes.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from malle.bank import Bank, Conflict, NotFound
from malle.bank.bank import MAX_K
from malle.bank.thresholds import DEFAULTS
from malle.descriptors import DESCRIPTORS, available_methods
from malle.errors import BadImage, ConfigError, MalleError
from malle.service.guard import BodyTooLarge, Guard

MAX_UPLOAD_BYTES = 32 * 2**20  # one image; a bomb is refused by its pixel count whatever its size
FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the metadata field


class NewCollection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="1-64 letters, digits, '_', '.' or '-'")
    method: str = Field(description="one of: " + ", ".join(DESCRIPTORS))
    threshold: float | None = Field(None, description="in the method's unit; default: the calibrated one")
    index: str = Field("Flat", description="FAISS index-factory string, as --index: Flat, HNSW32, IVF1024,Flat, auto")


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def read_upload(upload: UploadFile, limit: int, field: str) -> bytes:
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(413, f"{field}: over the upload limit of {limit / 2**20:.0f} MiB")
    if not data:
        raise BadImage(f"{field}: empty file (0 bytes)")
    return data


def create_app(bank: Bank, api_key: str | None = None, max_upload_bytes: int = MAX_UPLOAD_BYTES) -> FastAPI:
    app = FastAPI(title="Malle copy-detection service", version="1",
                  description="Banks of reference images, matched with thresholds calibrated by the Malle lab.")
    _add_error_handlers(app)
    _add_collection_routes(app, bank)
    _add_item_routes(app, bank, max_upload_bytes)
    _add_match_routes(app, bank, max_upload_bytes)
    app.add_middleware(Guard, key=api_key, max_body_bytes=max_upload_bytes * 2 + FORM_OVERHEAD)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    statuses = ((NotFound, 404), (Conflict, 409), (BadImage, 422), (ConfigError, 422), (MalleError, 400))

    async def malle_error(request: Request, err: MalleError) -> JSONResponse:
        status = next(code for kind, code in statuses if isinstance(err, kind))
        return error(status, str(err))

    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        cause = err.__cause__
        if isinstance(cause, BodyTooLarge):
            return error(413, str(cause))
        return error(err.status_code, str(err.detail))

    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in err.errors())
        return error(422, problems or "malformed request")

    app.add_exception_handler(MalleError, malle_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)


def _add_collection_routes(app: FastAPI, bank: Bank) -> None:
    @app.get("/v1/health")
    def health() -> dict:
        return {"status": "ok", "collections": len(bank.collections())}

    @app.get("/v1/collections")
    def list_collections() -> dict:
        return {"collections": [c.public() for c in bank.collections()]}

    @app.post("/v1/collections", status_code=201)
    def create_collection(spec: NewCollection) -> dict:
        return bank.create_collection(spec.name, spec.method, spec.threshold, index=spec.index).public()

    @app.get("/v1/collections/{name}")
    def get_collection(name: str) -> dict:
        return bank.collection(name).public()

    @app.delete("/v1/collections/{name}")
    def delete_collection(name: str) -> dict:
        bank.delete_collection(name)
        return {"deleted": name}


def _add_item_routes(app: FastAPI, bank: Bank, limit: int) -> None:
    @app.post("/v1/collections/{name}/items", status_code=201,
              responses={200: {"description": "these bytes were there already: that item"}})
    def add_item(name: str, file: Annotated[UploadFile, File()],
                 metadata: Annotated[str | None, Form(description="a JSON object")] = None):
        bank.collection(name, count=False)  # an unknown collection is a 404 before the upload is decoded
        item, created = bank.add_bytes(name, read_upload(file, limit, "file"), file.filename or "upload", metadata)
        body = {**item.public(), "created": created}
        return body if created else JSONResponse(body, status_code=200)

    @app.get("/v1/collections/{name}/items")
    def list_items(name: str, offset: Annotated[int, Query(ge=0)] = 0,
                   limit_: Annotated[int, Query(alias="limit", ge=1, le=1000)] = 100) -> dict:
        coll = bank.collection(name)
        items = bank.store.items(name, offset=offset, limit=limit_)
        return {"count": coll.count, "offset": offset, "items": [i.public() for i in items]}

    @app.get("/v1/collections/{name}/items/{item_id}")
    def get_item(name: str, item_id: int) -> dict:
        return bank.store.item(name, item_id).public()

    @app.get("/v1/collections/{name}/items/{item_id}/thumbnail", response_class=Response,
             responses={200: {"content": {"image/jpeg": {}}}})
    def get_thumbnail(name: str, item_id: int) -> Response:
        data = bank.store.thumbnail(name, item_id)
        if data is None:
            raise NotFound(f"item {item_id} has no thumbnail (added from codes, without its image)")
        return Response(data, media_type="image/jpeg")

    @app.delete("/v1/collections/{name}/items/{item_id}")
    def remove_item(name: str, item_id: int) -> dict:
        return bank.remove(name, item_id).public()


def _add_match_routes(app: FastAPI, bank: Bank, limit: int) -> None:
    @app.post("/v1/collections/{name}/match")
    def match(name: str, file: Annotated[UploadFile, File()],
              k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
              threshold: Annotated[float | None, Query(description="default: the collection's")] = None) -> dict:
        bank.collection(name, count=False)
        return bank.match_bytes(name, read_upload(file, limit, "file"), k, threshold).public()

    @app.post("/v1/compare")
    def compare(file_a: Annotated[UploadFile, File()], file_b: Annotated[UploadFile, File()],
                methods: Annotated[str | None, Query(description="comma-separated; default: every calibrated "
                                                                 "method that runs here")] = None) -> dict:
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
