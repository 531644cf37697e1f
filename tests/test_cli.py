import json
import subprocess
import sys

import pytest


def run(*args, home):
    return subprocess.run(
        [sys.executable, "-m", "itemlm.cli", *args],
        capture_output=True,
        text=True,
        env={"ITEMLM_HOME": str(home), "PATH": "/usr/bin:/bin"},
        timeout=300,
    )


def test_help_lists_every_verb(tmp_path):
    result = run("--help", home=tmp_path)
    assert result.returncode == 0
    for verb in ("data", "cf", "stage1", "demo"):
        assert verb in result.stdout


def test_version_prints_the_package_version(tmp_path):
    from itemlm import __version__

    result = run("--version", home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"itemlm {__version__}"


def test_stats_of_the_embedded_dataset(tmp_path):
    result = run("data", "stats", "ml-100k", "--json", home=tmp_path)
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert (stats["users"], stats["items"], stats["interactions"]) == (943, 1682, 100000)


@pytest.mark.parametrize(
    "args, message",
    [
        (("data", "prepare", "mine", "--source", "/no/such/folder"), "/no/such/folder: source not found"),
        (("data", "stats", "never-prepared"), "is not prepared"),
        (("cf", "eval", "ml-100k", "--model", "/nowhere"), "/nowhere: no embeddings.safetensors"),
        (("stage1", "--config", "no-such-preset"), "no preset named 'no-such-preset'"),
        (("stage1", "bogus_key=1"), "'bogus_key' is not a setting"),
        (("stage1", "--config", "stage1-quick", "steps.x=5"), "override 'steps.x=5': 'steps' is a single setting"),
        (("stage2", "task_weights=[1,2]"), "'task_weights' must be a mapping"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, args, message):
    result = run(*args, home=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_a_bad_source_file_names_file_and_line(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    (source / "u.data").write_text("1\t2\t5\t881250949\n1\t3\tfive\t881250950\n")
    result = run("data", "prepare", "mine", "--source", str(source), home=tmp_path)
    assert result.returncode == 2
    assert "u.data:2" in result.stderr


def test_prepare_train_eval_round_trip(tmp_path):
    assert run("cf", "train", "ml-100k", "--iterations", "5", home=tmp_path).returncode == 0
    result = run("cf", "eval", "ml-100k", "--json", home=tmp_path)
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert set(metrics) == {"MostPop", "MF-als"}
    assert metrics["MF-als"]["HR@10"] > metrics["MostPop"]["HR@10"]


def test_chat_refuses_a_list_length_it_cannot_give(tmp_path):
    result = run("chat", "--model", str(tmp_path), "--k", "0", home=tmp_path)  # 0 used to list the whole catalogue
    assert result.returncode == 2 and "--k" in result.stderr and "Traceback" not in result.stderr
