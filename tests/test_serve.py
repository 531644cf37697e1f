"""`itemlm serve` on a tiny trained model: every endpoint, bad bodies, keys, sessions, the worker queue."""

import json
import threading
import time

import numpy as np
import pytest
from fastapi import HTTPException
from fastapi.testclient import TestClient

from itemlm.models.ilm import ItemLanguageModel
from itemlm.serve.app import ModelWorker, create_app
from itemlm.serve.run import is_loopback, serve_model
from itemlm.serve.store import SessionStore
from itemlm.errors import InputError
from itemlm.train.stage2 import train_stage2
from tests.test_stage2 import tiny_config


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    from tests.test_llm import make_tiny_llm

    root = tmp_path_factory.mktemp("serve")
    make_tiny_llm(root / "llm")
    config = tiny_config(root / "llm", root / "home", root / "run", bridge="mlp", steps=2)
    return train_stage2(config, progress=False, evaluate=False)


@pytest.fixture(scope="module")
def model(model_folder):
    return ItemLanguageModel.from_pretrained(model_folder).eval()


@pytest.fixture
def client(model, tmp_path):
    with TestClient(create_app(model, SessionStore(tmp_path / "sessions.sqlite"), model_name="tiny")) as test_client:
        yield test_client


def ask(client, text, session_id=None, **extra):
    body = {"messages": [{"role": "user", "content": text}], **extra}
    if session_id:
        body["session_id"] = session_id
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_conversation_keeps_its_context_and_never_repeats_an_item(client, model):
    first = ask(client, "I loved Toy Story and Aladdin", k=5)
    assert first["object"] == "chat.completion" and first["choices"][0]["message"]["role"] == "assistant"
    extras = first["itemlm"]
    items = extras["items"]
    titles = [item["title"] for item in items]
    assert extras["kind"] == "recommendations" and len(items) == 5 and len(set(titles)) == 5
    assert not {"Toy Story (1995)", "Aladdin (1992)"} & set(titles)
    assert all(item["reason"].startswith(item["title"]) for item in items)
    assert first["usage"]["completion_tokens"] > 0
    second = ask(client, "something newer", session_id=extras["session_id"], k=5)
    later = second["itemlm"]["items"]
    assert later and not {i["id"] for i in later} & {i["id"] for i in items}
    assert all(int(item["year"]) > 1995 for item in later if item["year"])
    question = ask(client, "what is Aladdin about?", session_id=extras["session_id"])
    assert question["itemlm"]["kind"] == "description" and question["itemlm"]["about"]["title"] == "Aladdin (1992)"
    assert question["choices"][0]["message"]["content"].startswith("Aladdin (1992): ")
    view = client.get(f"/v1/sessions/{extras['session_id']}").json()
    assert [t["role"] for t in view["turns"]] == ["user", "assistant"] * 3
    assert [t["title"] for t in view["turns"][1]["items"]] == titles
    assert {i["title"] for i in view["liked"]} == {"Toy Story (1995)", "Aladdin (1992)"}


def test_an_openai_client_without_a_session_sends_the_whole_conversation(client):
    messages = [
        {"role": "system", "content": "You are a movie expert."},
        {"role": "user", "content": "I loved Heat"},
        {"role": "assistant", "content": "1. Casino (1995) - because ..."},
        {"role": "user", "content": "I hated Casino. Something less violent please."},
    ]
    reply = client.post("/v1/chat/completions", json={"model": "whatever", "messages": messages, "temperature": 0.2}).json()
    view = client.get(f"/v1/sessions/{reply['itemlm']['session_id']}").json()
    assert [i["title"] for i in view["liked"]] == ["Heat (1995)"] and [i["title"] for i in view["disliked"]] == ["Casino (1995)"]
    assert any(c.startswith("no ") for c in view["constraints"])
    assert "Casino (1995)" not in [i["title"] for i in reply["itemlm"]["items"]]


def test_a_streamed_answer_is_server_sent_events_ending_with_the_items(client):
    body = {"messages": [{"role": "user", "content": "I loved Toy Story"}], "stream": True, "k": 3}
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        events = [line[len("data: "):] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and len(chunks) >= 4  # role, understood, list, stop
    items = chunks[-1]["itemlm"]["items"]
    assert len(items) == 3 and all(item["reason"] in text for item in items)


def test_feedback_recommendations_and_items(client, model):
    session_id = ask(client, "I loved Heat")["itemlm"]["session_id"]
    toy_story = client.get("/v1/items", params={"query": "toy story"}).json()[0]
    assert toy_story["title"] == "Toy Story (1995)"
    assert client.get("/v1/items", params={"query": "toy stroy"}).json()[0]["title"] == "Toy Story (1995)"
    liked = client.post(f"/v1/sessions/{session_id}/feedback", json={"item": toy_story["id"], "liked": True}).json()
    assert "Toy Story (1995)" in [i["title"] for i in liked["liked"]]
    disliked = client.post(f"/v1/sessions/{session_id}/feedback", json={"item": toy_story["id"], "liked": False}).json()
    assert "Toy Story (1995)" in [i["title"] for i in disliked["disliked"]] and "Toy Story (1995)" not in [i["title"] for i in disliked["liked"]]
    history = [toy_story["id"], client.get("/v1/items", params={"query": "aladdin"}).json()[0]["id"]]
    recs = client.post("/v1/recommendations", json={"history": history, "k": 4, "exclude": ["3"]}).json()
    ids = [item["id"] for item in recs["items"]]
    assert recs["mode"] == "generate" and len(ids) == 4 == len(set(ids)) and not set(ids) & set(history + ["3"])
    assert all(item["reason"] and item["score"] is not None for item in recs["items"])
    by_user = client.post("/v1/recommendations", json={"user": 0, "k": 2, "reasons": False}).json()
    assert len(by_user["items"]) == 2 and all(item["reason"] is None for item in by_user["items"])
    # free text: the items it names are the liked ones the reasons start from; a <user:N> bans no item
    by_text = client.post("/v1/recommendations", json={"text": "I loved <item:0>; what would <user:1> pick?", "k": 3}).json()
    ids = [item["id"] for item in by_text["items"]]
    assert len(ids) == 3 and model.catalogue.items["item_id"].astype(str).iloc[0] not in ids
    assert all(item["reason"] for item in by_text["items"])
    lone_surrogate = client.post("/v1/chat/completions", headers={"content-type": "application/json"},  # JSON may escape one
                                 content=b'{"messages": [{"role": "user", "content": "I loved Heat \\ud800"}]}')
    assert lone_surrogate.status_code == 422 and "lone UTF-16 surrogate" in lone_surrogate.text  # not the tokenizer's 500
    detail = client.get(f"/v1/items/{toy_story['id']}").json()
    assert detail["title"] == "Toy Story (1995)" and isinstance(detail["model_description"], str) and "comedy" in detail["tags"]
    assert client.get(f"/v1/items/{toy_story['id']}", params={"describe": False}).json()["model_description"] is None
    # an item whose text training never read says so, and the model's description of it is the genres it reads
    unread = int(np.flatnonzero(model.catalogue.text_held_out)[0])
    unread_detail = client.get(f"/v1/items/{model.catalogue.items['item_id'].iloc[unread]}").json()
    read = model.catalogue.items["item_id"].astype(str).tolist().index(toy_story["id"])
    assert unread_detail["model_read_text"] is False and detail["model_read_text"] is not bool(model.catalogue.text_held_out[read])
    assert unread_detail["model_description"] == model.describe(unread)
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["items"] == model.catalogue.num_items and health["sessions"] >= 1
    page = client.get("/")
    assert page.status_code == 200 and "/v1/chat/completions" in page.text and "text/html" in page.headers["content-type"]
    assert client.delete(f"/v1/sessions/{session_id}").status_code == 204
    assert client.get(f"/v1/sessions/{session_id}").status_code == 404


@pytest.mark.parametrize(
    "method, path, body, status, words",
    [
        ("post", "/v1/chat/completions", {}, 422, "messages"),
        ("post", "/v1/chat/completions", {"messages": []}, 422, "messages"),
        ("post", "/v1/chat/completions", {"messages": [{"role": "assistant", "content": "hi"}]}, 422, "role 'user'"),
        ("post", "/v1/chat/completions", {"messages": [{"role": "user", "content": "x" * 4001}]}, 422, "content"),
        ("post", "/v1/chat/completions", {"messages": [{"role": "robot", "content": "hi"}]}, 422, "role"),
        # an earlier message in many parts counts as the text they join to
        ("post", "/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "text", "text": "x" * 3000}] * 3},
                                                       {"role": "user", "content": "hi"}]}, 422, "longer than 4000 characters"),
        ("post", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "k": 0}, 422, "k"),
        ("post", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000}, 422, "max_tokens"),
        ("post", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "session_id": "../etc"}, 422, "session_id"),
        ("post", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "session_id": "nosuchsession"}, 404, "session_id"),
        ("post", "/v1/recommendations", {"history": ["1"], "user": 3}, 422, "exactly one"),
        ("post", "/v1/recommendations", {}, 422, "exactly one"),
        ("post", "/v1/recommendations", {"history": ["no-such-item"]}, 404, "history"),
        ("post", "/v1/recommendations", {"history": ["1"] * 201}, 422, "history"),
        ("post", "/v1/recommendations", {"history": ["1"], "k": 51}, 422, "k"),
        ("post", "/v1/recommendations", {"user": 10**9}, 404, "user"),
        ("post", "/v1/recommendations", {"text": "hi", "mode": "rank"}, 422, "ranker"),
        ("post", "/v1/recommendations", {"text": "<user:0>" * 51}, 422, "more than 50 items and users"),
        ("post", "/v1/recommendations", {"history": ["1"], "surprise": 1}, 422, "surprise"),
        ("get", "/v1/items?query=", None, 422, "query"),
        ("get", "/v1/items/no-such-item", None, 404, "no-such-item"),
        ("get", "/v1/sessions/nosuchsession", None, 404, "nosuchsession"),
        ("post", "/v1/sessions/nosuchsession/feedback", {"item": "1", "liked": True}, 404, "nosuchsession"),
        ("delete", "/v1/sessions/nosuchsession", None, 404, "nosuchsession"),
    ],
)
def test_bad_requests_get_a_clear_4xx_naming_the_field(client, method, path, body, status, words):
    response = getattr(client, method)(path, **({"json": body} if body is not None else {}))
    assert response.status_code == status, response.text
    assert words in json.dumps(response.json()["detail"])


def test_an_api_key_guards_every_v1_route(model, tmp_path):
    app = create_app(model, SessionStore(tmp_path / "s.sqlite"), api_key="correct-horse")
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200 and client.get("/").status_code == 200
        assert client.get("/v1/items", params={"query": "heat"}).status_code == 401
        wrong = client.get("/v1/items", params={"query": "heat"}, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        right = client.get("/v1/items", params={"query": "heat"}, headers={"Authorization": "Bearer correct-horse"})
        assert right.status_code == 200 and right.json()[0]["title"] == "Heat (1995)"
        assert client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}).status_code == 401


def test_an_open_address_needs_a_key_and_loopback_is_the_default(model_folder):
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and not is_loopback("0.0.0.0")
    with pytest.raises(InputError, match="--api-key"):
        serve_model(model_folder, host="0.0.0.0")
    with pytest.raises(InputError, match="at least 8"):
        serve_model(model_folder, host="0.0.0.0", api_key="short")
    with pytest.raises(InputError, match="--consensus must be 0"):
        serve_model(model_folder, consensus=-1)


def test_the_worker_runs_one_job_at_a_time_and_refuses_beyond_its_queue():
    import asyncio

    worker = ModelWorker(max_waiting=4)
    running, overlaps = [], []

    def job(index):
        running.append(index)
        overlaps.append(len(running))
        time.sleep(0.02)
        running.remove(index)
        return index

    async def main():
        done = await asyncio.gather(*(worker.run(job, i) for i in range(4)))
        assert done == list(range(4))
        gate = threading.Event()
        blockers = [worker.submit(gate.wait) for _ in range(4)]
        with pytest.raises(HTTPException) as refused:
            await worker.run(job, 99)
        gate.set()
        for blocker in blockers:
            blocker.result(timeout=5)
        return refused.value.status_code

    assert asyncio.run(main()) == 503
    worker.shutdown()  # a job's result is out before its done-callback has counted it: wait for the thread
    assert overlaps == [1, 1, 1, 1] and worker.waiting == 0


def test_sessions_survive_a_new_store_on_the_same_file(model, tmp_path):
    path = tmp_path / "s.sqlite"
    with TestClient(create_app(model, SessionStore(path))) as client:
        session_id = ask(client, "I loved Heat", k=2)["itemlm"]["session_id"]
    with TestClient(create_app(model, SessionStore(path))) as client:
        again = ask(client, "something newer", session_id=session_id, k=2)
        assert len(client.get(f"/v1/sessions/{session_id}").json()["turns"]) == 4 and again["itemlm"]["items"]


def test_a_corrupt_session_database_is_one_clear_error(tmp_path):
    path = tmp_path / "bad.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(InputError, match="session database"):
        SessionStore(path)


# ---------------------------------------------------------------- schema fuzzing: no request ends in a 5xx
def test_no_generated_request_is_a_server_error(model, tmp_path):
    """Requests generated from the OpenAPI description, valid and invalid, for every operation."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable

    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(model, SessionStore(tmp_path / "fuzz.sqlite")))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8
    seen, no_invalid = [], []
    for operation in operations:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

            @given(operation.as_strategy(generation_mode=mode))
            @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def no_server_error(case):
                response = case.call()
                seen.append(response.status_code)
                assert response.status_code < 500, f"{case.method} {case.path}: {response.status_code} {response.text[:300]}"

            try:
                no_server_error()
            except Unsatisfiable:  # no invalid request exists (no parameters) or none that reaches the app
                assert mode == schemathesis.GenerationMode.NEGATIVE
                no_invalid.append(operation.label)
    assert len(seen) >= 200 and any(code < 300 for code in seen) and any(code == 422 for code in seen)
    assert len(no_invalid) <= len(operations) // 2, no_invalid


# ---------------------------------------------------------------- sessions: deletion, retention, where they live
def test_a_session_deleted_while_its_turn_runs_stays_deleted(model, tmp_path, monkeypatch):
    from itemlm.chat.session import ChatSession

    store = SessionStore(tmp_path / "s.sqlite")
    with TestClient(create_app(model, store)) as client:
        session_id = ask(client, "I loved Heat", k=2)["itemlm"]["session_id"]
        real_respond = ChatSession.respond

        def deleted_meanwhile(self, text):  # a DELETE that lands while the model answers
            assert client.delete(f"/v1/sessions/{session_id}").status_code == 204
            return real_respond(self, text)

        monkeypatch.setattr(ChatSession, "respond", deleted_meanwhile)
        turn = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "more comedy"}],
                                                          "session_id": session_id, "k": 2})
        assert turn.status_code == 404 and "deleted" in turn.json()["detail"]
        assert client.get(f"/v1/sessions/{session_id}").status_code == 404 and store.get(session_id) is None


def test_the_store_keeps_the_most_recently_used_sessions(tmp_path):
    store = SessionStore(tmp_path / "s.sqlite", max_sessions=3)
    for name in "abc":
        store.create(name, {"turns": [name]})
        time.sleep(0.01)
    assert store.update("a", {"turns": ["a", "again"]})  # used again: now the most recent
    time.sleep(0.01)
    store.create("d", {"turns": ["d"]})
    assert store.count() == 3 and store.get("b") is None and store.get("a") == {"turns": ["a", "again"]}
    assert not store.update("b", {"turns": ["b"]}) and store.get("b") is None  # dropped stays dropped
    with pytest.raises(InputError, match="max-sessions"):
        SessionStore(tmp_path / "t.sqlite", max_sessions=0)


def test_a_session_database_that_cannot_be_made_is_one_clear_error(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(InputError, match="a-file.*cannot create"):
        SessionStore(tmp_path / "a-file" / "sessions.sqlite")


def test_serving_a_folder_that_is_not_a_model_creates_nothing(tmp_path):
    with pytest.raises(InputError, match="no bridge.json"):
        serve_model(tmp_path / "typo" / "model")
    assert not (tmp_path / "typo").exists()


# ---------------------------------------------------------------- recommendations: one line per title, the mode used
def test_a_recommendation_list_holds_one_item_per_title_and_no_twin_of_a_consumed_item(client, model):
    titles = model.catalogue.titles
    twins = next((a, b) for a in range(len(titles)) for b in range(a + 1, len(titles)) if titles[a] == titles[b])
    ids = model.catalogue.items["item_id"].astype(str).tolist()
    recs = client.post("/v1/recommendations", json={"history": [ids[twins[0]]], "k": 50, "reasons": False, "mode": "generate"}).json()
    listed = [item["title"] for item in recs["items"]]
    assert len(listed) == 50 and len(set(listed)) == 50 and titles[twins[0]] not in listed


def test_auto_mode_ranks_only_what_it_can_rank_and_says_so(model, monkeypatch):
    monkeypatch.setattr(model, "ranker", object())  # a model with a ranker
    monkeypatch.setattr(model.catalogue, "histories", [[], [3, 4]])
    assert model.uses_ranking(history=[1]) and model.uses_ranking(user=1)
    assert not model.uses_ranking(user=0)  # no training items: generated from the user's vector
    assert not model.uses_ranking(text="I loved <item:1>") and model.uses_ranking("rank", text="x")
    assert not model.uses_ranking("generate", history=[1])


def test_free_texts_do_not_grow_the_prompt_cache_without_end(model, monkeypatch):
    import itemlm.models.ilm as ilm

    monkeypatch.setattr(ilm, "MAX_CACHED_PIECES", 3)
    model._piece_ids.clear()
    for n in range(10):
        model._ids("Recommend something.", False)  # a template, used all the time: kept
        model._ids(f"a free text number {n}", False)
    assert len(model._piece_ids) == 3 and ("Recommend something.", False) in model._piece_ids
    assert model._ids("a free text number 9", False) == model.llm.tokenizer("a free text number 9", add_special_tokens=False).input_ids


def test_a_keyless_server_answers_to_its_loopback_names_only_and_refuses_huge_bodies(model, tmp_path):
    from itemlm.serve.app import MAX_BODY_BYTES, host_name

    assert [host_name(h) for h in ("localhost:8000", "127.0.0.1", "[::1]:8000", "::1", "evil.example:80")] == [
        "localhost", "127.0.0.1", "::1", "::1", "evil.example"]
    app = create_app(model, SessionStore(tmp_path / "s.sqlite"), trusted_hosts=["localhost", "127.0.0.1", "::1"])
    with TestClient(app, base_url="http://localhost:8000") as client:
        assert client.get("/healthz").status_code == 200
        rebound = client.get("/v1/items", params={"query": "heat"}, headers={"host": "attacker.example:8000"})
        assert rebound.status_code == 400 and "Host" in rebound.json()["detail"]
        huge = client.post("/v1/chat/completions", content=b"{}", headers={"content-length": str(MAX_BODY_BYTES + 1),
                                                                           "content-type": "application/json"})
        assert huge.status_code == 413


def test_a_session_of_another_catalogue_is_refused_not_misread(client, model):
    session_id = ask(client, "I loved Heat", k=2)["itemlm"]["session_id"]
    store = client.app.state.store
    store.update(session_id, {**store.get(session_id), "catalogue": "another-model"})
    for response in (client.get(f"/v1/sessions/{session_id}"),
                     client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "more"}], "session_id": session_id})):
        assert response.status_code == 409 and "another catalogue" in response.json()["detail"]
