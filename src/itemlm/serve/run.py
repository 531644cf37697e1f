"""Start the server: load the model once, open the session store, refuse an open port without a key."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from itemlm.errors import InputError


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve_model(
    model_folder: Path, *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None, db: Path | None = None,
    cors_origins: list[str] | None = None, max_waiting: int = 64, consensus: int = 0, max_sessions: int = 10_000,
) -> None:
    api_key = api_key or None  # ITEMLM_API_KEY="" is no key
    if not is_loopback(host) and not api_key:
        raise InputError(f"--host {host} opens the server beyond this machine: give --api-key (or set ITEMLM_API_KEY)")
    if api_key is not None and len(api_key) < 8:
        raise InputError("--api-key must be at least 8 characters")
    if not 1 <= port <= 65535:
        raise InputError(f"--port must be in 1..65535, got {port}")
    if max_waiting < 1:
        raise InputError(f"--max-waiting must be at least 1, got {max_waiting}")
    if consensus < 0:
        raise InputError(f"--consensus must be 0 (greedy answers) or more, got {consensus}")
    import uvicorn

    from itemlm.models.ilm import ItemLanguageModel
    from itemlm.serve.app import create_app
    from itemlm.serve.store import SessionStore

    if not (Path(model_folder) / "bridge.json").exists():  # before the session database is made beside it
        raise InputError("not an itemlm model folder (no bridge.json); train one with `itemlm stage2`", path=model_folder)
    run_folder = Path(model_folder).resolve().parent  # the model's run: its name, and where sessions go by default
    store = SessionStore(db or run_folder / "sessions.sqlite", max_sessions)  # a bad --db is said before the model loads
    model = ItemLanguageModel.from_pretrained(model_folder)
    model.eval()
    model.consensus = consensus  # free answers: greedy, or the consensus of greedy + n samples (models/consensus.py)
    # without a key, only requests addressed to a loopback name: no web page reaches it through DNS rebinding
    trusted = None if api_key else sorted({"localhost", "127.0.0.1", "::1", host})
    app = create_app(model, store, api_key=api_key, cors_origins=cors_origins, model_name=run_folder.name or "itemlm",
                     max_waiting=max_waiting, trusted_hosts=trusted)
    print(f"itemlm serve: http://{host}:{port}/  (API docs at /docs, sessions in {store.path})", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
