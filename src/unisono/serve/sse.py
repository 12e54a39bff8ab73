"""Server-sent events: JSON objects as `data:` lines, as OpenAI's streaming endpoints send them."""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import StreamingResponse

DONE = b"data: [DONE]\n\n"


def event(data: Any) -> bytes:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def response(chunks) -> StreamingResponse:
    return StreamingResponse(chunks, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
