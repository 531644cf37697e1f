"""The user-facing commands end to end: `itemlm chat` on a tiny model, `itemlm demo --fast` for real."""

import subprocess
import sys

import pytest

from itemlm.config import load_config
from itemlm.train.stage2 import Stage2Config, train_stage2
from tests.test_llm import make_tiny_llm


def test_chat_command_answers_and_survives_unknown_titles(tmp_path):
    llm = tmp_path / "llm"
    make_tiny_llm(llm)
    config = load_config(Stage2Config, "stage2-quick", [
        "bridge=mlp", f"llm={llm}", f"data_home={tmp_path / 'home'}", f"output_dir={tmp_path / 'run'}",
        "llm_dtype=float32", "steps=2", "batch_size=2", "mf.factors=8", "mf.iterations=2",
    ])
    model = train_stage2(config, progress=False, evaluate=False)
    result = subprocess.run(
        [sys.executable, "-m", "itemlm.cli", "chat", "--model", str(model), "--k", "3"],
        input="I loved Star Trek Generations and Toy Story\nwhat about Zzyzx Qwerty\nsomething newer\nquit\n",
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "Toy Story (1995)" in result.stdout and "1. " in result.stdout
    assert "newer than 1995" in result.stdout and "could not find a title" in result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_demo_runs_the_whole_pipeline_on_the_embedded_assets(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "itemlm.cli", "demo", "--fast", "--runs", str(tmp_path / "runs"), "--data-home", str(tmp_path / "home")],
        capture_output=True, text=True, timeout=1200,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for expected in ("MF-als", "stage 2 done", "names_title", "truth:", "what the chat says of it", "itemlm chat --model"):
        assert expected in result.stdout, expected
