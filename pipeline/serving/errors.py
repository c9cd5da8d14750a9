"""Every HTTP error is made here, in OpenAI's shape: {"error": {message, type, param, code}}."""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from ragpacer.pipeline.core.errors import InputError, RagpacerError, StageFailed
from ragpacer.pipeline.serving.admission import Overloaded

log = logging.getLogger("ragpacer.http")


class APIError(Exception):
    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type = status, message, type
        self.code, self.param, self.headers = code, param, headers


def error_body(message: str, type: str, code: str | None = None,
               param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def to_api_error(exc: BaseException) -> APIError:
    """Map any exception to the most specific API error; never leak internals."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, InputError):
        return APIError(400, str(exc), code=exc.code, param=exc.param)
    if isinstance(exc, Overloaded):
        return APIError(503, str(exc), type="service_unavailable", code="overloaded",
                        headers={"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))})
    if isinstance(exc, StageFailed):
        return APIError(503, f"the {exc.stage} stage is unavailable; retry shortly",
                        type="service_unavailable", code="stage_unavailable",
                        headers={"Retry-After": "1"})
    if isinstance(exc, RequestValidationError | ValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        msg = first.get("msg", "invalid request")
        if first.get("type") == "json_invalid":
            return APIError(400, "the request body is not valid JSON", code="invalid_json")
        return APIError(400, f"{'.'.join(loc) or 'body'}: {msg}", param=".".join(loc) or None,
                        code="invalid_value")
    if isinstance(exc, HTTPException):
        return APIError(exc.status_code, str(exc.detail), code=None)
    if isinstance(exc, RagpacerError):
        return APIError(503, "the service cannot answer right now", type="service_unavailable",
                        headers={"Retry-After": "1"})
    log.exception("unhandled error", exc_info=exc)
    return APIError(500, "internal error", type="server_error")


def response_for(exc: BaseException) -> JSONResponse:
    err = to_api_error(exc)
    return JSONResponse(error_body(err.message, err.type, err.code, err.param),
                        status_code=err.status, headers=err.headers)


async def handle(request: Request, exc: Exception) -> JSONResponse:
    return response_for(exc)
