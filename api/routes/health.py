"""GET /healthz: liveness, no I/O (the benchmark's baseline)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

health_router = APIRouter()


@health_router.get("/healthz", include_in_schema=False)
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})
