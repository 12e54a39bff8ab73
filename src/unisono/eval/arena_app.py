"""The arena's rater page: a FastAPI app over the arena's database (`unisono eval arena serve`).

    GET  /                         the page: two clips of the same prompt (A and B), a choice, a reason
    GET  /api/next?voter=NAME      the next match this voter has not voted on (system names hidden)
    GET  /audio/{match}/{side}     a match's clip (left or right)
    POST /api/vote                 {"match_id", "voter", "winner": left|right|tie, "reason"}: 201, or
                                   400 (no reason, bad winner, bad JSON), 404 (no such match), 409 (voted already)
    GET  /api/report               vote counts and the humans' win rates so far
"""


import json
import threading
from pathlib import Path

from unisono.eval.arena import DB_FILE, ArenaStore, VoteError, aggregate

STATIC = Path(__file__).parent / "static"


def create_arena_app(run: Path):
    from fastapi import FastAPI, Request
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

    run = Path(run)
    if not (run / DB_FILE).is_file():
        raise FileNotFoundError(f"{run} holds no arena ({DB_FILE}); build one with `unisono eval arena build`")
    store, lock = ArenaStore(run / DB_FILE), threading.Lock()
    app = FastAPI(title="unisono arena", docs_url=None, redoc_url=None)

    def error(message: str, status: int) -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": "invalid_request_error"}}, status_code=status)

    @app.get("/")
    def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "arena.html").read_text(encoding="utf-8"))

    @app.get("/api/next")
    def next_match(voter: str = ""):
        if not voter.strip():
            return error("say who is voting: ?voter=NAME", 400)
        with lock:
            m = store.next_match(voter.strip())
        if m is None:
            return {"match": None}
        return {"match": {"id": m["id"], "text": m["text"], "language": m["language"], "instruct": m["instruct"],
                          "left": f"audio/{m['id']}/left", "right": f"audio/{m['id']}/right"}}

    @app.get("/audio/{match_id}/{side}")
    def audio(match_id: int, side: str):
        if side not in ("left", "right"):
            return error("side is left or right", 400)
        with lock:
            m = store.match(match_id)
        if m is None:
            return error(f"there is no match {match_id}", 404)
        path = (run / m[f"{side}_audio"]).resolve()
        if not path.is_file() or run.resolve() not in path.parents:
            return error(f"the clip of match {match_id} is missing", 404)
        return FileResponse(path, media_type="audio/wav")

    @app.post("/api/vote", status_code=201)
    async def vote(request: Request):
        try:
            body = json.loads(await request.body())
            if not isinstance(body, dict):
                raise ValueError
        except ValueError:
            return error("the body must be a JSON object: {match_id, voter, winner, reason}", 400)
        try:
            with lock:
                vote_id = store.vote(body.get("match_id"), body.get("voter"), body.get("winner"), body.get("reason"))
        except VoteError as e:
            return error(str(e), e.status)
        return {"vote": vote_id}

    @app.get("/api/report")
    def report():
        with lock:
            counts = store.counts()
            result = aggregate(store, "humans", rounds=0)
        return {**counts, "systems": result.systems,
                "win_rate": {s: result.overall(i) for i, s in enumerate(result.systems)}}

    return app
