"""The REST API over one bank (FastAPI; OpenAPI at ``/docs``). These routes and fields are a contract:

* ``GET /v1/health``;
* ``GET /v1/collections``; ``POST /v1/collections`` JSON ``{"name", "method", "threshold"?, "index"?}`` -> 201
  with ``Location``;
* ``GET /v1/collections/{name}`` -> ``{"name", "method", "count", "threshold", ...}``;
  ``DELETE /v1/collections/{name}``;
* ``POST /v1/collections/{name}/items``: multipart ``file`` and optional ``metadata`` (a JSON object as a
  string) -> 201 ``{"id", "sha256", "filename", ..., "created": true}`` with ``Location``; the same bytes
  again -> 200 with that item and ``"created": false``; ``GET .../items`` (a page), ``GET``/``DELETE
  .../items/{id}``, ``GET .../items/{id}/thumbnail`` (a small JPEG; 404 for an item added as a code);
* ``POST /v1/collections/{name}/match``: multipart ``file``, query ``k``, ``threshold`` and
  ``allow_low_quality`` -> ``{"threshold", "matches": [{"id", "filename", "score", "is_match", "metadata"}],
  "quality", "quality_reason"}``, best first;
* ``POST /v1/collections/{name}/lookup``: JSON ``{"codes": [...]}`` (as ``malle hash`` prints them), query
  ``k`` and ``threshold`` -> ``{"results": [one match result per code]}``, no image sent;
* ``POST /v1/compare``: multipart ``file_a`` and ``file_b``, query ``methods`` -> a score per method.

Every GET also answers HEAD. Scores and thresholds are in each method's unit: cosine similarity (higher is
closer) or Hamming distance in bits (lower is closer). Every error is a JSON ``Error`` ``{"error", "code",
"request_id"}`` (``malle.service.statuses``; docs/guides/service-contract.md lists them). Handlers are plain
functions, so FastAPI runs them on its thread pool: uploads decode concurrently, matches that arrive together are
encoded in one pass (``malle.service.batching``), and the bank serialises writes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

from fastapi import Depends, FastAPI, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.security import APIKeyHeader, HTTPBearer

from malle.bank import Bank
from malle.service import schemas
from malle.service.batching import DEFAULT_BATCH, DEFAULT_WAIT_MS, MatchBatcher
from malle.service.flood import Flood, RequestContext
from malle.service.guard import Guard
from malle.service.routes import CollectionName, add_item_routes, add_match_routes, get_and_head
from malle.service.statuses import add_handlers, responses

MAX_UPLOAD_BYTES = 32 * 2**20  # one image; a bomb is refused by its pixel count whatever its size
FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the metadata field
MAX_IN_FLIGHT = 64


def create_app(bank: Bank, api_key: str | None = None, max_upload_bytes: int = MAX_UPLOAD_BYTES,
               rate: float | None = None, burst: float | None = None, max_in_flight: int = MAX_IN_FLIGHT,
               cors_origins: Sequence[str] = (), batch_size: int = DEFAULT_BATCH,
               batch_wait_ms: float = DEFAULT_WAIT_MS, on_shutdown: Callable[[], None] | None = None) -> FastAPI:
    """The API over ``bank``; ``rate`` (requests a second per key, None: no limit), ``cors_origins`` (none:
    browsers on other origins get no access); matches arriving together are encoded in passes of up to
    ``batch_size`` (``malle.service.batching``); ``on_shutdown`` runs once the server has stopped."""
    batcher = MatchBatcher(bank, batch_size, batch_wait_ms)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        batcher.close()
        if on_shutdown is not None:
            on_shutdown()

    app = FastAPI(title="Malle copy-detection service", version="1", dependencies=_security(api_key), lifespan=lifespan,
                  description="Banks of reference images, matched with thresholds calibrated by the Malle lab. "
                              "Every error is a JSON Error with a stable code; every response carries X-Request-ID.")
    add_handlers(app)
    _public_schema_names(app)
    _add_collection_routes(app, bank)
    add_item_routes(app, bank, max_upload_bytes)
    add_match_routes(app, bank, batcher, max_upload_bytes)
    # add_middleware wraps what is there: the last added runs first.
    app.add_middleware(Flood, rate=rate, burst=burst, max_in_flight=max_in_flight, keyed=api_key is not None)
    app.add_middleware(Guard, key=api_key, max_body_bytes=max_upload_bytes * 2 + FORM_OVERHEAD)
    if cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "HEAD", "POST",
                                                                                           "DELETE"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID"],
                           expose_headers=["X-Request-ID", "Location", "Retry-After"])
    app.add_middleware(RequestContext)
    return app


def _public_schema_names(app: FastAPI) -> None:
    """The schema names the bank's objects plainly (``Collection``, not the class ``CollectionBody``)."""
    plain = app.openapi

    def openapi() -> dict:
        if not app.openapi_schema:
            app.openapi_schema = schemas.rename_components(plain())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend its schema


def _security(api_key: str | None) -> list:
    """The key schemes, declared so /docs can send a key; the guard middleware is what checks it."""
    if api_key is None:
        return []
    return [Depends(HTTPBearer(auto_error=False, description="Authorization: Bearer KEY")),
            Depends(APIKeyHeader(name="X-API-Key", auto_error=False, description="X-API-Key: KEY"))]


def _add_collection_routes(app: FastAPI, bank: Bank) -> None:
    @get_and_head(app, "/v1/health", response_model=schemas.Health, responses=responses())
    def health():
        return {"status": "ok", "collections": len(bank.collections())}

    @get_and_head(app, "/v1/collections", response_model=schemas.CollectionList,
                   responses=responses())
    def list_collections():
        return {"collections": [c.public() for c in bank.collections()]}

    @app.post("/v1/collections", status_code=201, response_model=schemas.CollectionBody, responses=responses(409),
              response_description="created; Location names it")
    def create_collection(spec: schemas.NewCollection, response: Response):
        made = bank.create_collection(spec.name, spec.method, spec.threshold, index=spec.index).public()
        response.headers["Location"] = f"/v1/collections/{made['name']}"
        return made

    @get_and_head(app, "/v1/collections/{name}", response_model=schemas.CollectionBody,
                   responses=responses())
    def get_collection(name: CollectionName):
        return bank.collection(name).public()

    @app.delete("/v1/collections/{name}", response_model=schemas.Deleted, responses=responses())
    def delete_collection(name: CollectionName):
        bank.delete_collection(name)
        return {"deleted": name}
