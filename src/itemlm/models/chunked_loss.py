"""The training loss of a frozen LM head: next-token cross-entropy on labelled positions only,
computed in chunks of rows so that the (tokens x vocabulary) logits are never held at once."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -100


def label_positions(labels: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Flat indices into (batch * time) of the positions that predict a label, and those labels.

    labels[t] is the token at t, so position t - 1 predicts it; it counts only when that position
    is a real token (a label right after left padding has nothing real to predict it from).
    Computed where `labels` lives: on the host for batches built there, which costs no sync.
    """
    targets = labels[:, 1:]
    keep = (targets != IGNORE_INDEX) & attention_mask[:, :-1].to(labels.device).bool()
    rows, columns = keep.nonzero(as_tuple=True)
    return rows * labels.shape[1] + columns, targets[rows, columns]


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Per-row cross-entropy of `hidden @ weight.T (+ bias)` without ever holding all the logits.

    The LM head is frozen, so the only gradient needed is the one of `hidden`; it is computed in
    the same pass as the loss, one chunk of rows at a time, and kept (rows x hidden, small). The
    backward pass only scales it. Optional Gemma-2-style soft-capping of the logits.
    """

    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, chunk_rows: int, softcap: float):
        losses = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        for start in range(0, hidden.shape[0], chunk_rows):
            chunk = slice(start, start + chunk_rows)
            logits = F.linear(hidden[chunk], weight, bias).float()
            if softcap:
                capped = torch.tanh(logits / softcap)
                logits = capped * softcap
            target = targets[chunk].unsqueeze(1)
            log_norm = logits.logsumexp(dim=1)
            losses[chunk] = log_norm - logits.gather(1, target).squeeze(1)
            if grad_hidden is not None:
                grad_logits = (logits - log_norm.unsqueeze(1)).exp_()
                grad_logits.scatter_add_(1, target, torch.full_like(target, -1.0, dtype=grad_logits.dtype))
                if softcap:
                    grad_logits.mul_(1.0 - capped.square())
                grad_hidden[chunk] = grad_logits.to(weight.dtype) @ weight
        ctx.save_for_backward(grad_hidden)
        return losses

    @staticmethod
    def backward(ctx, grad_losses: Tensor):
        (grad_hidden,) = ctx.saved_tensors
        return grad_hidden * grad_losses.unsqueeze(1).to(grad_hidden.dtype), None, None, None, None, None


def chunked_linear_cross_entropy(
    hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, chunk_rows: int = 4096, softcap: float = 0.0
) -> Tensor:
    """Per-row next-token losses (float32) of a frozen LM head, `chunk_rows` rows of logits at a time."""
    if weight.requires_grad or (bias is not None and bias.requires_grad):
        raise ValueError("chunked_linear_cross_entropy is for a frozen LM head (no gradient for its weight)")
    return _ChunkedLinearCrossEntropy.apply(hidden, weight, bias, targets, max(1, int(chunk_rows)), float(softcap))
