"""Every error the service answers: a JSON ``Error`` (``error``, ``code``, ``request_id``) with its status.

Errors a user causes are ``MalleError`` subclasses, each mapped to one status and code here. Anything
else is a bug: ``malle.service.flood.RequestContext`` answers it with a JSON 500 and logs its traceback.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.routing import Match

from malle.bank import Conflict, NotFound
from malle.errors import BadImage, ConfigError, MalleError, WeightsUnavailable
from malle.service.guard import BodyTooLarge
from malle.service.schemas import Error, ErrorCode

# Most specific first: a WeightsUnavailable is no ConfigError, every kind here is a MalleError.
KINDS: tuple[tuple[type[MalleError], int, ErrorCode], ...] = (
    (NotFound, 404, "not_found"), (Conflict, 409, "conflict"), (BadImage, 422, "bad_image"),
    (WeightsUnavailable, 422, "method_unavailable"), (ConfigError, 422, "bad_field"), (MalleError, 400, "bad_request"))
HTTP_CODES: dict[int, ErrorCode] = {
    400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 413: "too_large",
    422: "bad_field", 429: "rate_limited", 503: "busy"}
DESCRIPTIONS = {400: "a malformed request (not a form, a broken multipart body)", 401: "missing or wrong API key",
                404: "no such collection, item or route", 405: "method not allowed (see Allow)",
                409: "the collection exists already", 413: "the upload or body is over the limit",
                422: "a field, file or code that cannot be used (see code)", 429: "over the rate (see Retry-After)",
                500: "an internal error (the log has its traceback under the request id)",
                503: "too many requests in flight (see Retry-After)"}
ALWAYS = (400, 401, 404, 405, 413, 422, 429, 500, 503)  # any route can answer these


def request_id(scope) -> str | None:
    return scope.get("state", {}).get("request_id")


def body(scope, status: int, message: str, code: ErrorCode | None = None) -> dict:
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")  # a lone surrogate echoed from input
    return Error(error=message, code=code or HTTP_CODES.get(status, "bad_request"),
                 request_id=request_id(scope)).model_dump()


def responses(*statuses: int) -> dict:
    """``responses=`` for a route: every status any route can answer, and ``statuses`` of its own."""
    return {status: {"model": Error, "description": DESCRIPTIONS[status]} for status in sorted({*ALWAYS, *statuses})}


def allowed(request: Request) -> list[str]:
    """Every method some route answers at this path."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, APIRoute) and route.matches(request.scope)[0] != Match.NONE:
            methods |= route.methods or set()
    return sorted(methods)


def add_handlers(app: FastAPI) -> None:
    async def malle_error(request: Request, err: MalleError) -> JSONResponse:
        status, code = next((s, c) for kind, s, c in KINDS if isinstance(err, kind))
        return JSONResponse(body(request.scope, status, str(err), code), status_code=status)

    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        if isinstance(err.__cause__, BodyTooLarge):
            return JSONResponse(body(request.scope, 413, str(err.__cause__)), status_code=413)
        headers = dict(getattr(err, "headers", None) or {})
        if err.status_code == 405:  # Starlette names the first route's methods; GET, HEAD and DELETE are routes apart
            headers["Allow"] = ", ".join(allowed(request))
        return JSONResponse(body(request.scope, err.status_code, str(err.detail)), status_code=err.status_code,
                            headers=headers)

    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in err.errors())
        return JSONResponse(body(request.scope, 422, problems or "malformed request", "bad_field"), status_code=422)

    # Starlette's stub types every handler as taking any Exception; each is registered for its own class.
    app.add_exception_handler(MalleError, malle_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, invalid)  # type: ignore[arg-type]
