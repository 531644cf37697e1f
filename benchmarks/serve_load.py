"""A bounded load test of `itemlm serve` on loopback: many concurrent sessions, several turns each.

    .venv/bin/python benchmarks/serve_load.py --model runs/stage2/standard/model --sessions 50 --turns 10 \
        --out docs/results/serve_load.json [--screenshot docs/serve_page.png]

Starts the server as its own process, runs `--sessions` conversations at once, each `--turns`
turns long (titles liked, refinements, a question about an item, a dislike; non-streamed chat
completions), and reports errors, the latency of each turn (p50 / p95 / max, seconds), turns per
second and the server's peak resident memory. With --screenshot, a headless chromium (Playwright,
the system browser) also holds one conversation on the page and saves a picture of it.
Numbers only go to --out (no text: the command is in docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil

LIKES = ["Toy Story", "Aladdin", "Heat", "Casino", "Fargo", "Star Wars", "Babe", "Braveheart", "Apollo 13", "Clueless",
         "Twelve Monkeys", "Seven", "Jumanji", "Sabrina", "GoldenEye", "Get Shorty", "Copycat", "Dead Man Walking"]
REFINEMENTS = ["something newer", "less violent please", "more comedy", "something older", "more drama"]


def script(rng: random.Random, turns: int) -> list[str]:
    """One person's turns: a like, then a mix of refinements, questions, more likes and a dislike."""
    said = [f"I loved {rng.choice(LIKES)} and {rng.choice(LIKES)}"]
    while len(said) < turns:
        kind = rng.random()
        if kind < 0.4:
            said.append(rng.choice(REFINEMENTS))
        elif kind < 0.6:
            said.append(f"what is {rng.choice(LIKES)} about?")
        elif kind < 0.8:
            said.append(f"I also liked {rng.choice(LIKES)}")
        else:
            said.append(f"I hated {rng.choice(LIKES)}")
    return said


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, db: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "itemlm.cli", "serve", "--model", str(model), "--port", str(port),
                                "--db", str(db), "--max-waiting", "1000"])
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.5)
    process.kill()
    raise SystemExit("the server did not start within 5 minutes")


async def conversation(client: httpx.AsyncClient, turns: list[str], latencies: list[float], errors: list[str]) -> None:
    session_id = None
    for text in turns:
        body = {"messages": [{"role": "user", "content": text}], "k": 5, **({"session_id": session_id} if session_id else {})}
        start = time.perf_counter()
        try:
            response = await client.post("/v1/chat/completions", json=body)
            latencies.append(time.perf_counter() - start)
            if response.status_code != 200:
                errors.append(f"{response.status_code}: {response.text[:200]}")
                continue
            session_id = response.json()["itemlm"]["session_id"]
        except httpx.HTTPError as error:
            errors.append(repr(error))


def watch_memory(pid: int, peak: list[int], stop: threading.Event) -> None:
    process = psutil.Process(pid)
    while not stop.is_set():
        try:
            peak[0] = max(peak[0], process.memory_info().rss)
        except psutil.Error:
            return
        time.sleep(0.2)


def screenshot(url: str, path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox", "--disable-dev-shm-usage"])
        page = browser.new_page(viewport={"width": 1100, "height": 1000})
        page.goto(url)
        for text, cards in (("I loved Toy Story and Aladdin", 1), ("something newer", 2)):
            page.fill("#message", text)
            page.press("#message", "Enter")
            page.wait_for_function(f"document.querySelectorAll('.assistant .cards').length === {cards}", timeout=300_000)
        page.screenshot(path=str(path), full_page=True)
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--screenshot", type=Path)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    scripts = [script(rng, args.turns) for _ in range(args.sessions)]
    with tempfile.TemporaryDirectory() as folder:
        process, url = start_server(args.model, Path(folder) / "sessions.sqlite")
        peak, stop = [0], threading.Event()
        threading.Thread(target=watch_memory, args=(process.pid, peak, stop), daemon=True).start()
        latencies: list[float] = []
        errors: list[str] = []

        async def run() -> float:
            limits = httpx.Limits(max_connections=args.sessions + 5)
            async with httpx.AsyncClient(base_url=url, timeout=3600, limits=limits) as client:
                start = time.perf_counter()
                await asyncio.gather(*(conversation(client, turns, latencies, errors) for turns in scripts))
                return time.perf_counter() - start

        try:
            seconds = asyncio.run(run())
            if args.screenshot:
                screenshot(url, args.screenshot)
        finally:
            stop.set()
            process.terminate()
            process.wait(timeout=60)

    values = np.array(latencies)
    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "sessions": args.sessions, "turns_per_session": args.turns, "requests": len(latencies), "errors": len(errors),
        "wall_seconds": round(seconds, 1), "turns_per_second": round(len(latencies) / seconds, 3),
        "latency_seconds": {"p50": round(float(np.percentile(values, 50)), 3), "p95": round(float(np.percentile(values, 95)), 3),
                            "max": round(float(values.max()), 3)},
        "peak_rss_gb": round(peak[0] / 2**30, 2),
    }
    print(json.dumps(result, indent=2))
    for error in errors[:5]:
        print("error:", error)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
