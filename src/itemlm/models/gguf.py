"""GGUF models (the embedded SmolLM2 ships as one): de-quantized once into a safetensors folder,
cached under a name that holds the file's full sha256."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from itemlm.errors import InputError
from itemlm.io import atomic_write_text
from itemlm.paths import data_home


def file_sha256(path: Path, index: Path) -> str:
    """sha256 of a whole file, computed once and remembered in `index` (JSON) by resolved path,
    size and modification time: a file changed in place is hashed again."""
    path = path.resolve()
    stat = path.stat()
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    try:
        known = json.loads(index.read_text()) if index.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        known = {}  # a damaged index only costs a re-hash
    if key not in known:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                digest.update(block)
        known[key] = digest.hexdigest()
        index.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(index, json.dumps(known, indent=1))
    return known[key]


def gguf_cache_folder(gguf: Path, cache_dir: str | Path | None = None) -> Path:
    """<cache_dir or data_home/llm>/<stem>-<sha256 of the whole file, 16 hex digits>: two exports
    of one base model never share a conversion."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else data_home() / "llm"
    return root / f"{gguf.stem}-{file_sha256(gguf, root / 'file-hashes.json')[:16]}"


def convert_gguf(gguf: Path, cache_dir: str | Path | None = None) -> Path:
    """De-quantize a GGUF model once into a safetensors folder (model + tokenizer) and return it.

    Written under a temporary name and renamed, so a folder that exists is complete; two processes
    converting at once both succeed and one copy wins.
    """
    folder = gguf_cache_folder(gguf, cache_dir)
    if (folder / "config.json").is_file():
        return folder
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    except (ValueError, KeyError, OSError) as err:
        raise InputError(f"transformers could not read this GGUF file: {str(err).splitlines()[0]}", path=gguf) from err
    # The de-quantized weights are plain float32 tensors; drop the GGUF quantizer so that
    # save_pretrained writes an ordinary checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            os.replace(staging, folder)
        except OSError:
            if not (folder / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder
