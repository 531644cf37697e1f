"""The machine and library versions a bench ran on, as the report states them."""

from __future__ import annotations

import os
import platform


def environment() -> dict:
    """itemlm, Python, torch and transformers versions, the machine, its CPUs, memory (GiB) and GPU (or None)."""
    import torch
    import transformers

    from itemlm import __version__

    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "itemlm": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "transformers": transformers.__version__, "machine": platform.machine(), "system": platform.platform(),
        "cpus": len(os.sched_getaffinity(0)), "memory_gb": round(memory, 1),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
