"""The names presets choose from: stage-1 variants and stage-2 bridges (readable without torch)."""

VARIANTS = {
    "ilm-it": (),
    "ilm-it-ii": ("ii",),
    "ilm-it-ui": ("ui",),
    "ilm-it-ii-ui": ("ii", "ui"),
}
"""Stage-1 variant -> the pair losses it adds to item-text alignment (ii: item-item, ui: user-item)."""

BRIDGES = ("ilm", "ilm-rand", "mlp", "text-only")
"""How stage 2 turns CF vectors into LLM inputs: the pre-trained Q-Former, a random one, a two-layer
MLP (CoLLM-style), or no vectors at all (items by title)."""
