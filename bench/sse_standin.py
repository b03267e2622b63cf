"""A tiny SSE upstream for bench.gateway: each event carries the time it was written."""

import asyncio
import sys
import time

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route


async def stream(request: Request) -> StreamingResponse:
    count = int(request.query_params.get("events", "40"))

    async def events():
        for _ in range(count):
            yield f"data: {time.time():.6f}\n\n".encode()
            await asyncio.sleep(0.02)

    return StreamingResponse(events(), media_type="text/event-stream")


app = Starlette(
    routes=[
        Route("/api/v1/conversations/s", stream),
        Route("/health/ready", lambda r: StreamingResponse(iter([b"ok"]))),
    ]
)

if __name__ == "__main__":
    uvicorn.run(app, port=int(sys.argv[1]), log_level="warning")
