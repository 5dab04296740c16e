"""The HTTP interface (starlette): `POST /predict`, `POST /update`, `GET /healthz`,
`GET /metrics`. Requests are checked on the event loop, before anything is queued: a
malformed one gets 400 (or 413 when too large) with `{"error": message}` and never
reaches the model. docs/rec-serving.md lists the fields and status codes.
"""

from __future__ import annotations

import hmac
import json
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from anychip.errors import ArgumentError
from anychip.rec.serve.batching import Batcher, Overloaded
from anychip.rec.serve.features import Query, now
from anychip.rec.serve.metrics import Metrics
from anychip.rec.serve.model import ServedModel, StaleUpdate
from anychip.rec.serve.process import InferenceProcess

MAX_CANDIDATES = 1000  # per request (also at most --max-batch): more is 413
MAX_PREDICT_BYTES = 64 * 1024  # a /predict body; 1000 candidates of 10 digits fit
RETRY_AFTER_S = 1  # what a 503 asks the client to wait
INT64 = (-(2**63), 2**63 - 1)


class BadRequest(Exception):
    """A request the server refuses with `status` and a message."""

    def __init__(self, message: str, status: int = 400, kind: str = "bad_request") -> None:
        super().__init__(message)
        self.status, self.kind = status, kind


def _int(x: Any, what: str) -> int:
    if type(x) is not int or not INT64[0] <= x <= INT64[1]:
        raise BadRequest(f"{what} must be an integer (int64), got {json.dumps(x)[:40]}")
    return x


def parse_predict(body: bytes, cap: int) -> tuple[Query, int]:
    """The request's query and k; BadRequest on anything malformed."""
    if len(body) > MAX_PREDICT_BYTES:
        raise BadRequest(f"body of {len(body)} bytes exceeds {MAX_PREDICT_BYTES}", 413, "too_large")
    try:
        req = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:  # (nested too deep)
        raise BadRequest(f"body is not JSON: {e}") from None
    if not isinstance(req, dict):
        raise BadRequest(f"body must be a JSON object, got {type(req).__name__}")
    unknown = sorted(set(req) - {"user_id", "candidates", "k", "context"})
    if unknown:
        raise BadRequest(f"unknown fields {unknown}")
    for field in ("user_id", "candidates"):
        if field not in req:
            raise BadRequest(f"missing field {field!r}")
    user = _int(req["user_id"], "user_id")
    cands = req["candidates"]
    if not isinstance(cands, list) or not cands:
        raise BadRequest("candidates must be a non-empty list of item ids")
    if len(cands) > cap:
        raise BadRequest(f"{len(cands)} candidates exceed the cap of {cap}", 413, "too_large")
    # one pass in C for the usual request; the slow path names the first bad candidate
    if not all(type(c) is int for c in cands) or min(cands) < INT64[0] or max(cands) > INT64[1]:
        for c in cands:
            _int(c, "each candidate")
    k = len(cands) if req.get("k") is None else _int(req["k"], "k")
    if k < 1:
        raise BadRequest(f"k must be >= 1, got {k}")
    ctx = req.get("context")
    if ctx is None:
        ctx = {}
    if not isinstance(ctx, dict):
        raise BadRequest("context must be an object")
    stamp = now() if ctx.get("timestamp") is None else _int(ctx["timestamp"], "context.timestamp")
    return Query(user, np.array(cands, np.int64), stamp), k


async def _body(request: Request, limit: int) -> bytes:
    """The request's body, read no further than `limit` + 1 bytes (parse_predict refuses
    a longer one), so an oversized body never fills memory."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BadRequest(f"body of {declared} bytes exceeds {limit}", 413, "too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            break
    return b"".join(chunks)


def _error(message: str, status: int, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


class Server:
    """The served model, its batcher and metrics, and the token guarding `/update`. With
    the worker in its own process, `model` and `batcher` are both its InferenceProcess."""

    def __init__(
        self,
        model: ServedModel | InferenceProcess,
        batcher: Batcher | InferenceProcess,
        metrics: Metrics,
        token: str | None,
    ) -> None:
        self.model, self.batcher, self.metrics, self.token = model, batcher, metrics, token
        self.cap = min(MAX_CANDIDATES, model.max_batch)
        metrics.version = model.version

    async def predict(self, request: Request) -> Response:
        start = time.perf_counter()
        self.metrics.request()
        try:
            query, k = parse_predict(await _body(request, MAX_PREDICT_BYTES), self.cap)
            version, items, scores = await self.batcher.submit(query, k)
        except BadRequest as e:
            self.metrics.error(e.kind)
            return _error(str(e), e.status)
        except ClientDisconnect:
            self.metrics.error("bad_request")
            return _error("the body ended early (client disconnected)", 400)
        except Overloaded as e:
            self.metrics.error("overloaded")
            return JSONResponse({"error": f"overloaded: {e}"}, status_code=503,
                                headers={"Retry-After": str(RETRY_AFTER_S)})  # fmt: skip
        except Exception as e:  # a failed batch: the server goes on
            print(f"rec serve: {type(e).__name__}: {e}", file=sys.stderr)
            self.metrics.error("internal")
            return _error(f"internal error: {type(e).__name__}: {e}", 500)
        self.metrics.served(time.perf_counter() - start)
        return JSONResponse({"version": version, "items": items, "scores": scores})

    def _authorized(self, request: Request) -> bool:
        if not self.token:
            return False
        got = request.headers.get("authorization", "")
        scheme, _, value = got.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode(), self.token.encode()
        )

    async def update(self, request: Request) -> Response:
        if not self._authorized(request):
            self.metrics.error("unauthorized")
            why = "a wrong or missing token" if self.token else "no token configured"
            return _error(f"unauthorized: {why} (Authorization: Bearer <token>)", 401)
        try:
            body = await request.body()
        except ClientDisconnect:  # a publisher gone mid-body: nothing to apply
            self.metrics.error("bad_update")
            return _error("the body ended early (client disconnected)", 400)
        try:
            version = await run_in_threadpool(self.apply, body, "post")
        except StaleUpdate as e:
            self.metrics.error("conflict")
            return _error(str(e), 409, version=e.version)
        except ArgumentError as e:
            self.metrics.error("bad_update")
            return _error(str(e), 400)
        return JSONResponse({"version": version})

    def apply(self, data: bytes, source: str) -> int:
        """Decode and apply an update's bytes (off the event loop); its new version."""
        version = self.model.apply_bytes(data)
        self.metrics.update(source, version, self.model.last_swap_s)
        return version

    async def healthz(self, request: Request) -> Response:
        if not self.batcher.alive():  # the inference process exited: 503, so it is replaced
            return JSONResponse({"status": "down", "version": self.model.version}, 503)
        return JSONResponse({"status": "ok", "version": self.model.version})

    async def metrics_text(self, request: Request) -> Response:
        self.metrics.queue_depth = self.batcher.depth()
        return PlainTextResponse(
            self.metrics.text(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )


def make_app(server: Server) -> Starlette:
    """The ASGI app; the batcher's worker runs for the app's lifespan."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        server.batcher.start()
        try:
            yield
        finally:
            server.batcher.stop()

    routes = [
        Route("/predict", server.predict, methods=["POST"]),
        Route("/update", server.update, methods=["POST"]),
        Route("/healthz", server.healthz, methods=["GET"]),
        Route("/metrics", server.metrics_text, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
