"""Ranking mode: the frozen LLM orders a retriever's candidates in one forward pass.

The prompt shows the user's recent items and the candidates, each labelled by a letter, all as
item vectors from the bridge (one pooled vector per item, so 10 history items and 20 candidates
cost ~110 tokens):

    A user chose these movies, oldest first: <item:3><item:71>...
    Candidates: A<item:50> B<item:181> ...
    Which candidate will the user choose next? Answer with its letter.

The answer is read, not generated: the LLM's next-token logits of the letters A, B, ... are the
candidates' scores (a verbalizer). A small head adds what the LLM cannot see, the retriever's own
confidence: score_i = w_llm * log_softmax(letter logits)_i + w_retriever * z_i + bias_i, where z is
the retriever's score standardized over the candidates and bias_i a learned per-position prior
(the candidates are listed in retriever order). Trained with cross-entropy over the candidates;
the LLM stays frozen. The rest of the catalogue follows the candidates in retriever order, so
rankings stay full-catalogue.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor, nn

from itemlm.errors import InputError
from itemlm.io import read_json_object, read_safetensors
from itemlm.rank.retriever import RETRIEVERS, Retriever, top_candidates, without
from itemlm.tasks.templates import item_placeholder

LABELS = tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
NOUNS = {"movies": "movies", "products": "products"}


@dataclass
class RankingConfig:
    enabled: bool = False
    retriever: str = "sasrec"  # sasrec | mf
    candidates: int = 20
    history: int = 10  # most recent items shown to the LLM
    head_learning_rate: float = 1e-2  # the head's three kinds of weights start far from their values
    train_positions: int = 0  # rows for the bridge from each user's last N training positions too
    calibrate: bool = False  # fit the head on the validation rows after training (the bridge then never trains on them)
    calibration_penalty: float = 1.0  # L2 penalty of that fit on the position prior (per row)

    def __post_init__(self):
        if self.retriever not in RETRIEVERS:
            raise InputError(f"unknown ranking.retriever '{self.retriever}': expected one of {', '.join(RETRIEVERS)}")
        if not 2 <= self.candidates <= len(LABELS):
            raise InputError(f"ranking.candidates must be between 2 and {len(LABELS)}, got {self.candidates}")
        if self.head_learning_rate <= 0:
            raise InputError(f"ranking.head_learning_rate must be positive, got {self.head_learning_rate}")
        if self.history < 1:
            raise InputError(f"ranking.history must be at least 1, got {self.history}")
        if self.train_positions < 0 or self.calibration_penalty < 0:
            raise InputError("ranking.train_positions and ranking.calibration_penalty must be >= 0")


def ranking_prompt(history: list[int], candidates: list[int], domain: str = "movies") -> str:
    noun = NOUNS.get(domain, "items")
    # no separators between vectors, one token of label per candidate: ~110 tokens for 10 + 20 items
    chosen = "".join(item_placeholder(i) for i in history)
    listed = " ".join(f"{label}{item_placeholder(item)}" for label, item in zip(LABELS, candidates))
    return (f"A user chose these {noun}, oldest first: {chosen}.\nCandidates: {listed}\n"
            "Which candidate will the user choose next? Answer with its letter.")


class RankingHead(nn.Module):
    """Mixes the LLM's letter scores with the retriever's confidence and a per-position prior."""

    def __init__(self, candidates: int):
        super().__init__()
        self.llm_weight = nn.Parameter(torch.tensor(1.0))
        self.retriever_weight = nn.Parameter(torch.tensor(1.0))
        self.position_bias = nn.Parameter(torch.zeros(candidates))

    def forward(self, letter_logits: Tensor, retriever_scores: Tensor) -> Tensor:
        z = retriever_scores.float()
        z = (z - z.mean(1, keepdim=True)) / z.std(1, keepdim=True).clamp(min=1e-6)
        n = letter_logits.shape[1]
        return self.llm_weight * F.log_softmax(letter_logits.float(), dim=1) + self.retriever_weight * z + self.position_bias[:n]


def paired_standard_error(a: Tensor, b: Tensor) -> Tensor:
    """The standard error of the mean of the per-row differences a - b."""
    difference = a - b
    return difference.std() / len(difference) ** 0.5 if len(difference) > 1 else torch.tensor(float("inf"))


def full_head_wins(full: Tensor, retriever: Tensor) -> bool:
    """Whether per-row held-out losses say the full head beats the retriever's order by more than
    one standard error of their paired difference (the one-standard-error rule): on a few hundred
    rows, a smaller edge is as likely noise, and the simpler ranking is kept."""
    return bool(retriever.mean() - full.mean() > paired_standard_error(full, retriever))


class Ranker(nn.Module):
    """Retriever + head: what ranking mode adds to an ItemLanguageModel (saved in its folder)."""

    def __init__(self, retriever: Retriever, config: RankingConfig):
        super().__init__()
        self.retriever, self.config = retriever, config
        self.head = RankingHead(config.candidates)

    def letter_ids(self, tokenizer, n: int) -> list[int]:
        """The token ids of the first `n` candidate letters (tokenized once per ranker)."""
        if getattr(self, "_letters", None) is None:
            ids = [tokenizer(label, add_special_tokens=False).input_ids for label in LABELS]
            if any(len(i) != 1 for i in ids):
                raise InputError("this LLM's tokenizer splits a candidate letter into several tokens; ranking mode needs one token each")
            self._letters = [i[0] for i in ids]
        return self._letters[:n]

    def letter_logits(self, model, prompts: list[str], n: int) -> Tensor:
        """[B, n] the LLM's next-token logits of the first `n` candidate letters after each prompt."""
        batch = model.collate(prompts, side="left", pooled=True)
        hidden = model.llm.forward_embeds(model.embed(batch), batch.attention_mask).hidden_states[:, -1]
        letters = torch.tensor(self.letter_ids(model.llm.tokenizer, n), device=hidden.device)
        return model.llm.logits(hidden, letters)  # the letters' rows of the LM head only, not the vocabulary

    def candidate_scores(self, model, prompts: list[str], retriever_scores: Tensor) -> Tensor:
        """[B, n] scores of the candidates listed in `prompts` (gradients reach the bridge and head)."""
        logits = self.letter_logits(model, prompts, retriever_scores.shape[1])
        return self.head(logits, retriever_scores.to(logits.device))

    def calibrate(self, model, samples: list, batch_size: int = 16, steps: int = 100, folds: int = 5) -> dict:
        """Fit the head alone (bridge and LLM fixed) on ranking rows the bridge never trained on:
        full-batch L-BFGS on the cross-entropy over candidates plus `calibration_penalty` x the
        squared position prior, from the retriever's order (LLM weight 0).

        A few hundred rows can fit noise, so the full head has to earn its place: `folds`-fold
        cross-validation compares its held-out cross-entropy with that of the retriever's order
        alone (only the retriever's weight free, which keeps that order). The full head wins only
        when it is better by more than one standard error of the paired per-row difference
        (`full_head_wins`); the winner is fitted on every row and kept, and the returned numbers
        say which (`llm_used`) and why."""
        if not samples:
            return {"rows": 0}
        with torch.no_grad():
            logits = torch.cat([
                self.letter_logits(model, [s.prompt for s in samples[i : i + batch_size]], len(samples[0].candidates)).float().cpu()
                for i in range(0, len(samples), batch_size)
            ])
        scores = torch.tensor([s.candidate_scores for s in samples], dtype=torch.float32)
        targets = torch.tensor([LABELS.index(s.target) for s in samples])
        order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(0))
        held_out = {"full": torch.zeros(len(samples)), "retriever": torch.zeros(len(samples))}  # per-row held-out loss
        for fold in order.chunk(min(folds, len(samples))):
            train = torch.ones(len(samples), dtype=torch.bool)
            train[fold] = False
            if not train.any():
                break
            for kind in held_out:
                head = self._fit_head(logits[train], scores[train], targets[train], full=kind == "full", steps=steps)
                with torch.no_grad():
                    held_out[kind][fold] = F.cross_entropy(head(logits[fold], scores[fold]), targets[fold], reduction="none")
        llm_used = full_head_wins(held_out["full"], held_out["retriever"])
        head = self._fit_head(logits, scores, targets, full=llm_used, steps=steps)
        with torch.no_grad():
            loss = float(F.cross_entropy(head(logits, scores), targets))
        self.head.load_state_dict(head.state_dict())
        return {"rows": len(samples), "loss": round(loss, 4), "llm_weight": round(head.llm_weight.item(), 4),
                "retriever_weight": round(head.retriever_weight.item(), 4), "llm_used": llm_used,
                "cv_loss_full_head": round(float(held_out["full"].mean()), 4),
                "cv_loss_retriever_order": round(float(held_out["retriever"].mean()), 4),
                "cv_difference_standard_error": round(float(paired_standard_error(held_out["full"], held_out["retriever"])), 4)}

    def _fit_head(self, logits: Tensor, scores: Tensor, targets: Tensor, *, full: bool, steps: int) -> RankingHead:
        """A head fitted from the retriever's order; `full=False` frees only the retriever's weight."""
        head = RankingHead(logits.shape[1])
        with torch.no_grad():
            head.llm_weight.zero_()
        free = list(head.parameters()) if full else [head.retriever_weight]  # only these move
        optimizer = torch.optim.LBFGS(free, lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")
        penalty = self.config.calibration_penalty / len(targets)

        def objective():
            optimizer.zero_grad()
            loss = F.cross_entropy(head(logits, scores), targets) + penalty * head.position_bias.square().sum()
            loss.backward()
            return loss

        optimizer.step(objective)
        return head

    def loss(self, model, prompts: list[str], retriever_scores: Tensor, targets: Tensor) -> Tensor:
        """Mean cross-entropy over the candidates; `targets` are the true items' positions."""
        return F.cross_entropy(self.candidate_scores(model, prompts, retriever_scores), targets.to(model.llm.device))

    @torch.no_grad()
    def rank(self, model, histories: list[list[int]], exclude: list[list[int]] | None = None, batch_size: int = 16) -> Tensor:
        """[B, num_items] full-catalogue scores: the candidates in the ranker's order above every
        other item, the others in retriever order, excluded items at -inf."""
        retrieved = without(self.retriever.scores(histories), exclude if exclude is not None else histories)
        items, scores = top_candidates(retrieved, self.config.candidates)
        ranked = torch.full_like(retrieved, -torch.inf)
        # a head that gives the LLM no weight (calibration kept the retriever's order) scores the
        # candidates the same whatever the letters' logits are: the LLM's forward is skipped
        llm_reads = bool(self.head.llm_weight != 0)
        for start in range(0, len(histories), batch_size):
            rows = slice(start, start + batch_size)
            # nan_to_num: a catalogue smaller than n + excluded puts excluded items among the candidates
            retriever_scores = torch.nan_to_num(scores[rows], neginf=-1e9)
            if llm_reads:
                prompts = [
                    ranking_prompt(list(h)[-self.config.history :], c.tolist(), model.catalogue.domain)
                    for h, c in zip(histories[rows], items[rows])
                ]
                head = self.candidate_scores(model, prompts, retriever_scores).float().cpu()
            else:
                head = self.head(torch.zeros_like(retriever_scores), retriever_scores).float().cpu()
            ranked[rows].scatter_(1, items[rows], torch.where(torch.isfinite(scores[rows]), head, -torch.inf))
        # every non-candidate just below the lowest candidate, in retriever order (a shift per row,
        # not a large offset: that would merge close candidate scores into float ties)
        is_candidate = torch.zeros_like(retrieved, dtype=torch.bool).scatter_(1, items, True)
        lowest = torch.where(torch.isfinite(ranked), ranked, torch.inf).min(1, keepdim=True).values
        others = torch.where(is_candidate, -torch.inf, retrieved)  # excluded items stay -inf
        highest = others.max(1, keepdim=True).values
        shift = (lowest.nan_to_num(posinf=0.0) - 1.0) - highest.nan_to_num(neginf=0.0)
        return torch.where(is_candidate, ranked, others + shift)

    # ------------------------------------------------------------------ saving
    def save_pretrained(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.retriever.save_pretrained(folder / "retriever")
        save_file({k: v.detach().contiguous() for k, v in self.head.state_dict().items()}, str(folder / "head.safetensors"))
        (folder / "ranking.json").write_text(json.dumps(asdict(self.config), indent=2))

    @classmethod
    def from_pretrained(cls, folder: Path) -> "Ranker":
        raw = read_json_object(folder / "ranking.json", "ranking config")
        head = read_safetensors(folder / "head.safetensors", "ranking head weights file")
        retriever = Retriever.from_pretrained(folder / "retriever")
        try:
            ranker = cls(retriever, RankingConfig(**raw))
            ranker.head.load_state_dict(head)
        except (ValueError, KeyError, TypeError, RuntimeError) as error:
            raise InputError(f"unreadable ranking folder ({type(error).__name__}: {str(error).splitlines()[0][:160]})", path=folder) from None
        return ranker.eval()
