"""`itemlm serve`: an OpenAI-compatible chat API, a recommendations API and a web page over one model.

    POST /v1/chat/completions      OpenAI chat schema, streamed (server-sent events) or not;
                                   the answer's items as data under "itemlm"
    POST /v1/recommendations       history, user or text -> top-k items with scores and reasons
    GET  /v1/items?query=          fuzzy title search
    GET  /v1/items/{id}            an item's metadata and the model's description of it
    GET  /v1/sessions/{id}         a stored conversation (the page restores itself from it)
    POST /v1/sessions/{id}/feedback  like / dislike an item
    DELETE /v1/sessions/{id}
    GET  /healthz, /docs, /openapi.json, /  (the chat page)

The model runs one request at a time on one worker thread, in arrival order, so concurrent
requests never interleave on it; requests beyond `max_waiting` get 503 at once instead of a
timeout. Conversations live in SQLite (`SessionStore`) and survive a restart. With an API key,
every /v1 route wants `Authorization: Bearer KEY`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

from itemlm.chat.session import ChatSession, Reply
from itemlm.chat.titles import TitleIndex
from itemlm.errors import InputError
from itemlm.models.ilm import ItemLanguageModel
from itemlm.tasks.templates import find_placeholders
from itemlm.serve.schemas import (
    SESSION_PATTERN,
    ChatCompletionRequest,
    Feedback,
    Item,
    ItemDetail,
    RecommendationRequest,
    Recommendations,
    SessionView,
)
from itemlm.serve.store import SessionStore

SessionId = Annotated[str, Path(pattern=SESSION_PATTERN, max_length=64)]
MAX_BODY_BYTES = 4 * 2**20  # the largest valid chat body (100 messages of 4,000 characters, JSON-escaped) fits
TWIN_MARGIN = 5  # extra items asked of the model, so that a list without same-title twins still has k


def host_name(host_header: str) -> str:
    """The name in a Host header, without its port: "localhost:8000" -> "localhost", "[::1]:8000" -> "::1"."""
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


class ModelWorker:
    """One thread that owns the model: jobs run one at a time, in order; a full queue says so at once."""

    def __init__(self, max_waiting: int = 64):
        self.max_waiting = max_waiting
        self.waiting = 0
        self._count = threading.Lock()
        self.start()

    def start(self) -> None:
        """A fresh thread for the model (an app's lifespan may start it again after a shutdown)."""
        if getattr(self, "_executor", None) is None or self._executor._shutdown:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="itemlm-model")

    def _admit(self) -> None:
        with self._count:
            if self.waiting >= self.max_waiting:
                raise HTTPException(503, f"the model is busy ({self.waiting} requests waiting); try again shortly")
            self.waiting += 1

    def _leave(self, *_) -> None:
        with self._count:
            self.waiting -= 1

    def submit(self, job, *args):
        """Queue `job` behind the others (503 when the queue is full); returns its concurrent future."""
        self._admit()
        future = self._executor.submit(job, *args)
        future.add_done_callback(self._leave)
        return future

    async def run(self, job, *args):
        """Queue `job` and wait for its result."""
        return await asyncio.wrap_future(self.submit(job, *args))

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


class ItemViews:
    """Item ids <-> catalogue rows, and the JSON view of an item."""

    def __init__(self, model: ItemLanguageModel):
        items = model.catalogue.items
        self.model = model
        self.ids = [str(i) for i in items["item_id"]]
        self.index_of = {item_id: index for index, item_id in enumerate(self.ids)}
        self.titles = TitleIndex(model.catalogue)
        self.records = items.to_dict("records")
        # which catalogue a stored session's item rows refer to (a --db shared by models of other data)
        self.digest = hashlib.sha256("\n".join(self.ids).encode()).hexdigest()[:16]

    def index(self, item_id: str, field: str = "item") -> int:
        if item_id not in self.index_of:
            raise HTTPException(404, f"{field}: no item with id {item_id!r} in this catalogue")
        return self.index_of[item_id]

    def view(self, index: int, score: float | None = None, reason: str | None = None) -> Item:
        year = self.records[index].get("year")
        return Item(id=self.ids[index], title=self.model.catalogue.titles[index], year=str(year) if year not in (None, "") else None,
                    tags=sorted(self.titles.tags[index]), score=score, reason=reason)


def create_app(
    model: ItemLanguageModel, store: SessionStore, *, api_key: str | None = None, cors_origins: list[str] | None = None,
    model_name: str = "itemlm", max_waiting: int = 64, trusted_hosts: list[str] | None = None,
) -> FastAPI:
    """`trusted_hosts`: the Host names a request may carry (None: any). A server on loopback without a
    key trusts only loopback names, so a web page cannot reach it through a name it rebinds to 127.0.0.1."""
    catalogue = ItemViews(model)
    worker = ModelWorker(max_waiting)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        worker.start()
        yield
        worker.shutdown()  # the running job ends; nothing waiting starts

    app = FastAPI(title="itemlm", version="0.1.0", summary="A conversational recommender that reads item vectors.", lifespan=lifespan)
    app.state.worker, app.state.store = worker, store
    if cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=cors_origins, allow_methods=["*"], allow_headers=["*"])

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if trusted_hosts is not None and host_name(request.headers.get("host", "")) not in trusted_hosts:
            return JSONResponse({"detail": "untrusted Host header (this server answers to its loopback names only)"}, status_code=400)
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            return JSONResponse({"detail": f"request body over {MAX_BODY_BYTES // 2**20} MiB"}, status_code=413)
        return await call_next(request)

    def require_key(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not (given.startswith("Bearer ") and secrets.compare_digest(given[7:].encode(), api_key.encode())):
            raise HTTPException(401, "missing or wrong API key (send 'Authorization: Bearer KEY')", headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(InputError)
    async def input_error(_: Request, error: InputError):
        return JSONResponse({"detail": str(error)}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError):
        # FastAPI's own answer echoes the input, which fails to encode when it is not Unicode; where and what suffice
        return JSONResponse({"detail": [{key: problem[key] for key in ("type", "loc", "msg") if key in problem} for problem in error.errors()]},
                            status_code=422)

    def new_session(k: int, max_tokens: int | None) -> ChatSession:
        return ChatSession(model, k=k, index=catalogue.titles, max_new_tokens=max_tokens or 48)

    def stored(session_id: str) -> dict:
        state = store.get(session_id)
        if state is None:
            raise HTTPException(404, f"session_id: no session {session_id!r} (omit session_id to start one)")
        if state.get("catalogue", catalogue.digest) != catalogue.digest:
            raise HTTPException(409, f"session_id: session {session_id!r} was made with another catalogue's model; start a new one")
        return state

    # ------------------------------------------------------------------ chat
    def open_chat(body: ChatCompletionRequest) -> tuple[str, ChatSession]:
        """The session a turn belongs to: the stored one, or a new one that took in the earlier messages."""
        session = new_session(body.k, body.max_tokens)
        if body.session_id is not None:
            return body.session_id, session.load_state(stored(body.session_id))
        session.absorb([{"role": m.role, "content": m.text()} for m in body.messages[:-1]])
        return store.new_id(), session

    def save(session_id: str, session: ChatSession, *, new: bool) -> None:
        """Keep the session after a turn: a new one is stored, a stored one updated unless it was
        deleted meanwhile (the turn does not bring it back)."""
        state = {**session.state(), "catalogue": catalogue.digest}
        if new:
            store.create(session_id, state)
        elif not store.update(session_id, state):
            raise HTTPException(404, f"session_id: session {session_id!r} was deleted while this request ran")

    def chat_turn(body: ChatCompletionRequest) -> tuple[str, Reply, dict]:
        session_id, session = open_chat(body)
        reply = session.respond(body.messages[-1].text())
        save(session_id, session, new=body.session_id is None)
        return session_id, reply, usage(body, reply.text)  # counted on the worker: tokenizing long bodies blocks no one

    def completion_extras(session_id: str, reply: Reply) -> dict:
        items = [catalogue.view(r.item, r.score, r.reason).model_dump() for r in reply.items]
        about = catalogue.view(reply.about).model_dump() if reply.about is not None else None
        return {"session_id": session_id, "kind": reply.kind, "items": items, "about": about}

    def usage(body: ChatCompletionRequest, answer: str) -> dict:
        prompt = sum(len(model.llm.encode(m.text())) for m in body.messages)
        completion = len(model.llm.encode(answer))
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    @app.post("/v1/chat/completions", dependencies=[Depends(require_key)])
    async def chat_completions(body: ChatCompletionRequest):
        if body.session_id is not None:
            stored(body.session_id)  # a clear 404 before any streaming starts
        completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if not body.stream:
            session_id, reply, used = await worker.run(chat_turn, body)
            return JSONResponse({
                "id": completion_id, "object": "chat.completion", "created": created, "model": model_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text}, "finish_reason": "stop"}],
                "usage": used, "itemlm": completion_extras(session_id, reply),
            }, headers={"X-Session-Id": session_id})

        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue = asyncio.Queue()

        def streamed_turn():
            def send(kind, value):
                loop.call_soon_threadsafe(pieces.put_nowait, (kind, value))
            try:
                session_id, session = open_chat(body)
                for piece in session.respond_stream(body.messages[-1].text()):
                    send("piece", piece)
                save(session_id, session, new=body.session_id is None)
                send("done", (session_id, session.last_reply))
            except Exception as error:  # reported in the stream: the status line has already gone out
                send("error", error)

        worker.submit(streamed_turn)

        def chunk(delta: dict, finish: str | None = None, **extra) -> str:
            body_ = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model_name,
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
            return f"data: {json.dumps(body_)}\n\n"

        async def events():
            yield chunk({"role": "assistant", "content": ""})
            while True:
                kind, value = await pieces.get()
                if kind == "piece":
                    yield chunk({"content": value})
                elif kind == "done":
                    yield chunk({}, "stop", itemlm=completion_extras(*value))
                    break
                else:
                    message = str(value) if isinstance(value, (InputError, HTTPException)) else "internal error"
                    yield chunk({}, "error", error={"message": message})
                    break
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    # ------------------------------------------------------------------ sessions
    def session_view(session_id: str, state: dict) -> SessionView:
        session = new_session(5, None).load_state(state)
        turns = [{**turn, "items": [catalogue.view(r["item"], r.get("score"), r.get("reason")).model_dump() for r in turn.get("items", [])]}
                 for turn in session.turns]
        return SessionView(session_id=session_id, turns=turns, liked=[catalogue.view(i) for i in session.prefs.liked],
                           disliked=[catalogue.view(i) for i in session.prefs.disliked], constraints=session.active_constraints())

    @app.get("/v1/sessions/{session_id}", dependencies=[Depends(require_key)])
    def get_session(session_id: SessionId) -> SessionView:
        return session_view(session_id, stored(session_id))

    @app.post("/v1/sessions/{session_id}/feedback", dependencies=[Depends(require_key)])
    async def feedback(session_id: SessionId, body: Feedback) -> SessionView:
        index = catalogue.index(body.item, "item")
        stored(session_id)

        def apply() -> dict:  # on the worker, so it never races a turn of the same session
            session = new_session(5, None).load_state(stored(session_id))
            session.like(index) if body.liked else session.dislike(index)
            save(session_id, session, new=False)
            return session.state()

        return session_view(session_id, await worker.run(apply))

    @app.delete("/v1/sessions/{session_id}", dependencies=[Depends(require_key)], status_code=204, response_class=Response)
    def delete_session(session_id: SessionId) -> Response:
        if not store.delete(session_id):
            raise HTTPException(404, f"session_id: no session {session_id!r}")
        return Response(status_code=204)

    # ------------------------------------------------------------------ recommendations and items
    @app.post("/v1/recommendations", dependencies=[Depends(require_key)])
    async def recommendations(body: RecommendationRequest) -> Recommendations:
        history = [catalogue.index(i, "history") for i in body.history] if body.history else None
        exclude = [catalogue.index(i, "exclude") for i in body.exclude]
        if body.user is not None and body.user >= len(model.catalogue.histories):
            raise HTTPException(404, f"user: no user {body.user} (0..{len(model.catalogue.histories) - 1})")

        def recommend() -> list[Item]:
            if history:
                liked = history
            elif body.user is not None:
                liked = model.catalogue.histories[body.user]
            else:  # free text: the items it names are what the person likes
                liked = [index for kind, index, _, _ in find_placeholders(body.text or "") if kind == "item"]
            # an item listed twice under one title (MovieLens has 18) is one item: never the twin of one
            # consumed or excluded, never twice in a list
            banned = sorted({twin for item in [*liked, *exclude] for twin in catalogue.titles.twins(item)})
            answer = model.recommend(history=history, user=body.user, text=body.text, k=body.k + TWIN_MARGIN, exclude=banned,
                                     mode=body.mode)
            ranked, titles_listed = [], set()
            for item, title, score in answer:
                if title not in titles_listed and len(ranked) < body.k:
                    titles_listed.add(title)
                    ranked.append((item, title, score))
            reasons = model.explain(liked, [item for item, _, _ in ranked]) if body.reasons and liked else [None] * len(ranked)
            return [catalogue.view(item, score, reason) for (item, _, score), reason in zip(ranked, reasons)]

        mode = "rank" if model.uses_ranking(body.mode, history=history, user=body.user, text=body.text) else "generate"
        return Recommendations(items=await worker.run(recommend), mode=mode)

    @app.get("/v1/items", dependencies=[Depends(require_key)])
    def search_items(query: Annotated[str, Query(min_length=1, max_length=200)],
                     limit: Annotated[int, Query(ge=1, le=50)] = 10) -> list[Item]:
        return [catalogue.view(index) for index in catalogue.titles.search(query, limit)]

    @app.get("/v1/items/{item_id}", dependencies=[Depends(require_key)])
    async def get_item(item_id: Annotated[str, Path(max_length=200)], describe: bool = True) -> ItemDetail:
        index = catalogue.index(item_id)
        text = catalogue.records[index].get("description")
        said = await worker.run(lambda: model.describe(index)) if describe else None
        return ItemDetail(**catalogue.view(index).model_dump(), description=str(text) if text else None, model_description=said,
                          model_read_text=not model.catalogue.text_held_out[index])

    # ------------------------------------------------------------------ service
    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok", "model": model_name, "items": model.catalogue.num_items, "bridge": model.bridge_kind,
                "ranking_mode": model.ranker is not None, "waiting": worker.waiting, "sessions": store.count()}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return resources.files("itemlm.serve").joinpath("static/index.html").read_text(encoding="utf-8")

    return app
