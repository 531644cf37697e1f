"""`itemlm serve` as a real process: SIGKILL mid-conversation and carry on; the chat page in a real browser."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]



@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    from tests.test_llm import make_tiny_llm
    from tests.test_stage2 import tiny_config
    from itemlm.train.stage2 import train_stage2

    root = tmp_path_factory.mktemp("serve-process")
    make_tiny_llm(root / "llm")
    return train_stage2(tiny_config(root / "llm", root / "home", root / "run", bridge="mlp", steps=2), progress=False, evaluate=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, model_folder: Path, db: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "itemlm.cli", "serve", "--model", str(model_folder), "--port", str(self.port), "--db", str(db)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited: {self.process.stdout.read().decode()[-2000:]}")
            try:
                if json.loads(urllib.request.urlopen(f"{self.url}/healthz", timeout=2).read())["status"] == "ok":
                    return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("the server did not answer /healthz within 120 s")

    def post(self, path: str, body: dict) -> dict:
        request = urllib.request.Request(f"{self.url}{path}", json.dumps(body).encode(), {"Content-Type": "application/json"})
        return json.loads(urllib.request.urlopen(request, timeout=120).read())

    def get(self, path: str) -> dict:
        return json.loads(urllib.request.urlopen(f"{self.url}{path}", timeout=60).read())

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def ask(server: Server, text: str, session_id: str | None = None) -> dict:
    body = {"messages": [{"role": "user", "content": text}], "k": 3, **({"session_id": session_id} if session_id else {})}
    return server.post("/v1/chat/completions", body)


def test_sigkill_mid_conversation_then_the_same_session_carries_on(model_folder, tmp_path):
    db = tmp_path / "sessions.sqlite"
    server = Server(model_folder, db)
    try:
        first = ask(server, "I loved Toy Story and Aladdin")
        session_id = first["itemlm"]["session_id"]
        ask(server, "something newer", session_id)
        import threading

        # a third turn is in flight when the process dies
        threading.Thread(target=lambda: _quietly(ask, server, "more comedy", session_id), daemon=True).start()
        time.sleep(0.05)
        server.kill()
    finally:
        server.stop()
    server = Server(model_folder, db)
    try:
        view = server.get(f"/v1/sessions/{session_id}")
        assert len(view["turns"]) in (4, 6)  # the turn in flight is either wholly stored or not at all
        assert {i["title"] for i in view["liked"]} == {"Toy Story (1995)", "Aladdin (1992)"}
        shown = {i["id"] for turn in view["turns"] for i in turn["items"]}
        later = ask(server, "I hated Heat", session_id)
        assert later["itemlm"]["session_id"] == session_id and not {i["id"] for i in later["itemlm"]["items"]} & shown
        assert len(server.get(f"/v1/sessions/{session_id}")["turns"]) == len(view["turns"]) + 2
    finally:
        server.stop()


def _quietly(function, *args):
    try:
        function(*args)
    except Exception:
        pass


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_the_chat_page_in_a_real_browser(model_folder, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    if chromium() is None:
        pytest.skip("no chromium on this machine (Debian: apt-get install chromium); .ci/run installs it")
    server = Server(model_folder, tmp_path / "sessions.sqlite")
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox", "--disable-dev-shm-usage"])
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(server.url)
            page.fill("#message", "I loved Toy Story and Aladdin")
            page.press("#message", "Enter")
            page.wait_for_selector(".assistant .card", timeout=120_000)
            page.wait_for_function("document.querySelectorAll('.assistant .cards').length === 1 && document.querySelectorAll('.card').length >= 5")
            titles = page.locator(".card h3").all_inner_texts()
            assert len(titles) == 5 and len(set(titles)) == 5 and "Toy Story (1995)" not in titles
            page.fill("#message", "something newer")
            page.press("#message", "Enter")
            page.wait_for_function("document.querySelectorAll('.assistant .cards').length === 2", timeout=120_000)
            newer = page.locator(".assistant .cards").nth(1).locator("h3").all_inner_texts()
            assert newer and not set(newer) & set(titles)
            page.locator(".card").first.locator("button").first.click()  # like the first card
            page.wait_for_selector(".card button.on")
            page.reload()
            page.wait_for_function("document.querySelectorAll('.assistant .cards').length === 2", timeout=60_000)
            assert page.locator(".user .bubble").all_inner_texts() == ["I loved Toy Story and Aladdin", "something newer"]
            assert page.locator(".assistant .cards").first.locator("h3").all_inner_texts() == titles
            browser.close()
        (session_id,) = stored_session_ids(tmp_path / "sessions.sqlite")
        assert titles[0] in [item["title"] for item in server.get(f"/v1/sessions/{session_id}")["liked"]]
    finally:
        server.stop()


def stored_session_ids(db: Path) -> list[str]:
    import sqlite3

    with sqlite3.connect(db) as connection:
        return [row[0] for row in connection.execute("SELECT id FROM sessions")]
