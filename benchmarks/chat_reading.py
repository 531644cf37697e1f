"""How long the chat takes to read what people write, with no LLM: the part of a turn that runs
before the model and, for an OpenAI client, over every earlier message of the conversation.

    .venv/bin/python benchmarks/chat_reading.py --out docs/results/chat_reading_ml100k.json

On the ML-100K catalogue (the recbole wheel's copy): a typical message ("I loved Heat and
Casino but not Fargo, something newer"), and the largest conversation the server accepts, 100
messages of 4,000 characters, written three ways: titles and clauses ("I loved Heat; ..."), one
genre word repeated ("comedy comedy ..."), and 2,000 one-letter clauses ("x;x;..."). Each is
absorbed the way the server absorbs an OpenAI client's earlier messages (`ChatSession.absorb`).
Numbers only go to --out.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from itemlm.chat.session import ChatSession
from itemlm.data.dataset import build_dataset
from itemlm.data.recbole import read_recbole
from itemlm.paths import embedded_ml100k_folder
from itemlm.models.catalogue import Catalogue

MAX_MESSAGES, MAX_CHARS = 100, 4000


def long_message(unit: str) -> str:
    return (unit * (MAX_CHARS // len(unit) + 1))[:MAX_CHARS]


def conversation(unit: str) -> list[dict]:
    return [{"role": "user", "content": long_message(unit)} for _ in range(MAX_MESSAGES)]


def seconds(work, repeats: int) -> float:
    """The median of `repeats` timings of `work()`."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    dataset = build_dataset("ml-100k", read_recbole(embedded_ml100k_folder()))
    catalogue = Catalogue(dataset.items, [[] for _ in range(dataset.num_users)], np.zeros((dataset.num_items, 2), np.float32),
                          np.zeros((dataset.num_users, 2), np.float32))
    model = SimpleNamespace(catalogue=catalogue)
    started = time.perf_counter()
    index = ChatSession(model).index
    index_seconds = time.perf_counter() - started

    def absorbing(messages):
        return lambda: ChatSession(model, index=index).absorb(messages)

    cases = {
        "typical message": [{"role": "user", "content": "I loved Heat and Casino but not Fargo, something newer"}],
        "100 x 4,000 characters of titles and clauses": conversation("I loved Heat; hated Casino, more comedy. "),
        "100 x 4,000 characters of one genre word": conversation("comedy "),
        "100 x 4,000 characters of one-letter clauses": conversation("x;"),
    }
    results = {name: seconds(absorbing(messages), args.repeats) for name, messages in cases.items()}
    for name, value in results.items():
        print(f"{name:48s} {value:8.3f} s")
    record = {"index_build_seconds": round(index_seconds, 3), "absorb_seconds": {k: round(v, 4) for k, v in results.items()},
              "repeats": args.repeats, "machine": platform.processor() or platform.machine()}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
