"""A stage-2 run killed with SIGKILL at two random moments and once inside a checkpoint write, then
resumed until it finishes, ends with the same bridge weights as an uninterrupted run."""

import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from tests.test_llm import make_tiny_llm

pytestmark = pytest.mark.slow

# every step checkpointed, so a kill anywhere loses at most one step of work
SETTINGS = ["bridge=mlp", "mlp_tokens=2", "llm_dtype=float32", "steps=6", "batch_size=4", "checkpoint_every=1", "log_every=1",
            "warmup_steps=1", "history_length=3", "max_target_tokens=12", "mf.factors=8", "mf.iterations=2", "dataset=ml-100k"]
KILL_IN_CHECKPOINT = (
    "import os, signal, sys, itemlm.train.checkpoint as c\n"
    "real = c.save_file\n"
    "def dying(*args, **kwargs):\n"
    "    real(*args, **kwargs)\n"
    "    os.kill(os.getpid(), signal.SIGKILL)  # the weights are written, the trainer state is not\n"
    "c.save_file = dying\n"
    "from itemlm.cli import main\n"
    "sys.argv = ['itemlm'] + sys.argv[1:]\n"
    "main()\n"
)


def command(llm, home, out, resume=True, script=None):
    head = [sys.executable, "-c", script, "stage2"] if script else [sys.executable, "-m", "itemlm.cli", "stage2"]
    return head + ["--config", "stage2-quick", "--no-evaluate", *(["--resume"] if resume else []),
                   *SETTINGS, f"llm={llm}", f"data_home={home}", f"output_dir={out}"]


def weights(out):
    return load_file(str(out / "model" / "bridge.safetensors"))


def test_sigkill_at_three_moments_then_resume_gives_identical_weights(tmp_path):
    llm, home = tmp_path / "llm", tmp_path / "home"
    make_tiny_llm(llm)
    straight = tmp_path / "straight"
    started = time.perf_counter()
    subprocess.run(command(llm, home, straight, resume=False), check=True, capture_output=True)
    full = time.perf_counter() - started
    reference = weights(straight)
    rng = random.Random(0)
    for trial in range(3):
        out = tmp_path / f"killed-{trial}"
        if trial == 0:  # inside a checkpoint write, deterministically
            subprocess.run(command(llm, home, out, script=KILL_IN_CHECKPOINT), capture_output=True)
        else:
            process = subprocess.Popen(command(llm, home, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.3, 1.0) * full)
            process.send_signal(signal.SIGKILL)
            process.wait()
        for _ in range(3):  # resume until it finishes (a resume is itself never killed here)
            if (out / "model" / "bridge.safetensors").exists():
                break
            result = subprocess.run(command(llm, home, out), capture_output=True, text=True)
            assert result.returncode == 0, result.stderr[-2000:]
        got = weights(out)
        assert all(torch.equal(reference[k], got[k]) for k in reference), f"trial {trial}"
