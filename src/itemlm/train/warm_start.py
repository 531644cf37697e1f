"""Bridge warm start: before stage 2, fit the bridge so that an item's vectors *are* its title.

The frozen LLM already reads its own token embeddings. So, for every item whose text training may
read, the bridge's `num_tokens` output vectors are regressed onto the LLM's input embeddings of
that item's title tokens ("Toy Story (1995)", padded with the embedding of a space). This needs
no LLM forward at all (seconds on 2 CPU cores, where one stage-2 step costs a few), and
afterwards the untrained LLM can already name many items from their vectors alone. Text-held-out
items are never used.

Users are vectors too ("users as special items"), and an untouched user vector comes out of a
head fitted to items alone as something the LLM has never seen (ten times the norm of a token
embedding, measured). So when the stage-2 data has user profiles, each user's vectors are fitted
as well, onto the embeddings of the opening tokens of that user's training profile ("Mostly drama,
comedy and action;"), with a smaller weight (`user_weight`) so that items keep most of the fit.

An item's last `tag_tokens` vectors can hold its tags instead (" Drama", " Thriller": the first
token of each of its first tags), with their own, larger ridge penalty (`tag_ridge`): titles do not
carry over to items whose text was held out, but genres are in the CF vectors, and smoother tag
vectors let the LLM read them for those items too (`tag_accuracy` measures it).

The fit has two parts. First the bridge's last linear layer (`head`) is solved in closed form:
ridge regression of the title embeddings on what the head reads (`head_inputs`), which for the
MLP interpolates every distinguishable text-seen item in about two seconds. Then `steps` AdamW
steps refine the whole bridge by gradient (what a Q-Former, whose head is shared by its query
tokens, needs most).

Losses (`WarmStartConfig.loss`):
    mse       mean squared error, relative to the targets' mean square (the default)
    cosine    1 - cosine similarity per vector (direction only)
A cross-entropy that makes each vector's nearest vocabulary embedding the right token was tried
and dropped: with a Q-Former bridge it reached nearest-token accuracy 0.93 yet the LLM named no
item (its margin term rewards longer vectors, likely what the LLM could not read). How well a fit reads is reported as the
nearest-token accuracy over the title vocabulary.

The same loss can stay on during stage 2 as an anchor (`anchor_weight`), so that the LM loss
refines the vectors rather than wiping out what the warm start gave.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from itemlm.errors import InputError
from itemlm.io import read_safetensors
from itemlm.models.llm import FrozenLLM
from itemlm.models.modes import module_mode

LOSSES = ("mse", "cosine")


@dataclass
class WarmStartConfig:
    enabled: bool = False
    solve: bool = True  # the head in closed form first (ridge regression)
    ridge: float = 1e-5  # its penalty, relative to the mean square norm of the head's inputs
    steps: int = 600  # then AdamW steps on the whole bridge
    batch_size: int = 256
    learning_rate: float = 1e-3
    warmup_steps: int = 30
    loss: str = "mse"
    anchor_weight: float = 0.0  # during stage 2: loss + anchor_weight * this regression on a batch of items
    anchor_batch_size: int = 64
    users: bool = True  # also fit user vectors onto their profiles' opening tokens (closed form)
    user_weight: float = 0.1  # a user row's weight in that fit, an item row's being 1
    tag_tokens: int = 0  # the last this many vectors of an item are fitted to its tags (genres) instead of its title
    tag_ridge: float | None = None  # their own ridge penalty where the head writes each vector apart (MLP); None: `ridge`

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise InputError(f"unknown warm_start.loss '{self.loss}': expected one of {', '.join(LOSSES)}")
        if self.steps < 0 or self.batch_size < 1 or self.anchor_batch_size < 1:
            raise InputError("warm_start.steps must be >= 0 and the batch sizes >= 1")
        if not self.ridge > 0:
            raise InputError(f"warm_start.ridge must be > 0, got {self.ridge}")
        if self.tag_tokens < 0:
            raise InputError(f"warm_start.tag_tokens must be >= 0, got {self.tag_tokens}")
        if self.tag_ridge is not None and not self.tag_ridge > 0:
            raise InputError(f"warm_start.tag_ridge must be > 0, got {self.tag_ridge}")
        if not self.user_weight > 0:
            raise InputError(f"warm_start.user_weight must be > 0, got {self.user_weight}")


@dataclass
class TitleTargets:
    """Per item: the LLM's embeddings of its first `num_tokens` title tokens, and the token ids
    (per user, with `kind` 1: those of its profile's opening)."""

    items: Tensor  # (n,) item indices (user indices when kind is 1)
    token_ids: Tensor  # (n, num_tokens)
    embeddings: Tensor  # (n, num_tokens, hidden) float32
    vocabulary: Tensor  # (v,) the distinct token ids of all targets (for the nearest-token accuracy)
    vocabulary_embeddings: Tensor  # (v, hidden) float32
    classes: Tensor  # (n, num_tokens) each target token's position in `vocabulary`
    kind: int = 0  # 0 items, 1 users

    def __len__(self) -> int:
        return len(self.items)


def space_token_id(llm: FrozenLLM) -> int:
    """The token that pads a target shorter than the bridge's vectors."""
    return llm.tokenizer(" ", add_special_tokens=False).input_ids[-1]


def title_token_ids(llm: FrozenLLM, titles: list[str], num_tokens: int) -> Tensor:
    """(n, num_tokens) token ids of each title, cut or padded with a space token."""
    if num_tokens < 1:
        raise InputError("the warm start needs a bridge with at least one output vector per item")
    space = space_token_id(llm)
    encoded = llm.tokenizer(list(titles), add_special_tokens=False).input_ids
    return torch.tensor([(ids + [space] * num_tokens)[:num_tokens] for ids in encoded], dtype=torch.long)


def tag_token_ids(llm: FrozenLLM, tags: list[list[str]], num_tokens: int) -> Tensor:
    """(n, num_tokens): the first token of each of an item's first `num_tokens` tags (" Drama",
    " Thriller"), padded with a space token."""
    space = space_token_id(llm)
    firsts = {tag: llm.tokenizer(" " + tag, add_special_tokens=False).input_ids[0] for row in tags for tag in row}
    return torch.tensor([([firsts[t] for t in row] + [space] * num_tokens)[:num_tokens] for row in tags], dtype=torch.long)


def title_targets(
    llm: FrozenLLM, items: np.ndarray, titles: list[str] | dict[int, str], num_tokens: int, kind: int = 0,
    tags: list[list[str]] | None = None, tag_tokens: int = 0,
) -> TitleTargets:
    """Targets of `items` (users with kind 1), each the opening tokens of `titles[i]`; with
    `tag_tokens`, the last that many vectors are the item's tags instead (`tag_token_ids` of `tags[i]`)."""
    if not 0 <= tag_tokens < num_tokens:
        raise InputError(f"warm_start.tag_tokens must be between 0 and the bridge's {num_tokens} vectors per item minus one, got {tag_tokens}")
    token_ids = title_token_ids(llm, [titles[i] for i in items], num_tokens - tag_tokens)
    if tag_tokens:
        token_ids = torch.cat([token_ids, tag_token_ids(llm, [tags[i] for i in items], tag_tokens)], dim=1)
    return targets_from_ids(llm, items, token_ids, kind)


def targets_from_ids(llm: FrozenLLM, items: np.ndarray, token_ids: Tensor, kind: int = 0) -> TitleTargets:
    vocabulary, classes = token_ids.unique(return_inverse=True)
    with torch.no_grad():
        embeddings = llm.embed(token_ids).float().cpu()
        vocabulary_embeddings = llm.embed(vocabulary).float().cpu()
    return TitleTargets(torch.as_tensor(items, dtype=torch.long), token_ids, embeddings, vocabulary, vocabulary_embeddings, classes, kind)


def profile_targets(llm: FrozenLLM, profiles: dict[int, str], num_tokens: int) -> TitleTargets:
    """User targets: the opening tokens of each user's profile text (`profiles`: user -> text)."""
    return title_targets(llm, np.array(sorted(profiles), dtype=np.int64), profiles, num_tokens, kind=1)


class TitleRegression(nn.Module):
    """The warm-start loss of a batch of bridge outputs against their title targets."""

    def __init__(self, targets: TitleTargets, loss: str):
        super().__init__()
        self.loss_kind = loss
        self.register_buffer("vocabulary_embeddings", targets.vocabulary_embeddings, persistent=False)
        self.register_buffer("target_embeddings", targets.embeddings, persistent=False)
        self.register_buffer("target_classes", targets.classes, persistent=False)
        self.mean_square = float(targets.embeddings.square().mean())

    def forward(self, outputs: Tensor, rows: Tensor) -> Tensor:
        """outputs: (b, num_tokens, hidden) bridge vectors of target rows `rows`; a scalar loss."""
        outputs = outputs.float()
        target = self.target_embeddings[rows]
        if self.loss_kind == "cosine":
            return (1 - F.cosine_similarity(outputs, target, dim=-1)).mean()
        return (outputs - target).square().mean() / self.mean_square

    def nearest_logits(self, outputs: Tensor) -> Tensor:
        """-(squared distance to each vocabulary embedding), without the |output|^2 term (the
        same for every candidate)."""
        vocab = self.vocabulary_embeddings
        return 2 * outputs @ vocab.T - vocab.square().sum(1)

    @torch.no_grad()
    def token_accuracy(self, outputs: Tensor, rows: Tensor) -> float:
        """Share of vectors whose nearest title-vocabulary embedding is the target token."""
        predicted = self.nearest_logits(outputs.float()).argmax(-1)
        return float((predicted == self.target_classes[rows]).float().mean())


def bridge_outputs(bridge: nn.Module, vectors: Tensor, rows: Tensor, items: Tensor, kind: int = 0) -> Tensor:
    """The bridge's vectors for `items[rows]`, all of one kind (0 items, 1 users: `vectors` are then users')."""
    chosen = items[rows]
    cf = vectors[chosen]
    return bridge(cf, torch.full((len(chosen),), kind, dtype=torch.long, device=cf.device))


def ridge_regression(inputs: Tensor, targets: Tensor, ridge: float, weights: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(weight [f, out], bias [out]) minimizing sum_i w_i |inputs_i @ weight + bias - targets_i|^2 +
    penalty |weight|^2, penalty = `ridge` x the (weighted) mean square norm of the centered inputs,
    float64 throughout; `weights` default to 1. Solved in the smaller of the two equivalent forms:
    the f x f normal equations, or the n x n kernel ones."""
    x, y = inputs.double(), targets.double()
    w = torch.ones(len(x), dtype=x.dtype, device=x.device) if weights is None else weights.to(x).clamp(min=0)
    w = (w / w.mean())[:, None]
    x_mean, y_mean = (w * x).mean(0), (w * y).mean(0)
    x, y = (x - x_mean) * w.sqrt(), (y - y_mean) * w.sqrt()
    n, f = x.shape
    penalty = ridge * float(x.square().sum(1).mean().clamp(min=1e-12))
    if f <= n:
        weight = torch.linalg.solve(x.T @ x + penalty * torch.eye(f, dtype=x.dtype, device=x.device), x.T @ y)
    else:
        weight = x.T @ torch.linalg.solve(x @ x.T + penalty * torch.eye(n, dtype=x.dtype, device=x.device), y)
    return weight, y_mean - x_mean @ weight


@torch.no_grad()
def solve_head(
    bridge: nn.Module, groups: list[tuple[Tensor, TitleTargets, float]], ridge: float, tag_tokens: int = 0, tag_ridge: float | None = None,
) -> bool:
    """Set the bridge's last linear layer to the ridge fit of the target embeddings on its inputs.
    `groups`: (CF vectors of every item -- or user --, their targets, the weight of each row), the
    vectors on the bridge's device. A ridge fit is one independent fit per output column, so a head
    that writes all of an item's vectors at once (the MLP's) can give its last `tag_tokens` vectors
    their own, larger penalty `tag_ridge`: smoother tag vectors carry over to unseen items better.
    A head shared by query tokens (the Q-Former's shared adapter) writes tag and title vectors with the same
    columns, so there every vector gets `ridge`. Returns whether `tag_ridge` was applied."""
    head: nn.Linear = bridge.head
    device = head.weight.device
    inputs, wanted, weights = [], [], []
    for vectors, targets, weight in groups:
        rows = targets.items.to(device)
        with module_mode(bridge, training=False):  # the fit reads what inference reads: no dropout in the Q-Former's outputs
            read = bridge.head_inputs(vectors[rows], torch.full((len(rows),), targets.kind, dtype=torch.long, device=device)).float()
        read = read.reshape(-1, read.shape[-1])  # per item (MLP) or per query token (Q-Former)
        inputs.append(read)
        wanted.append(targets.embeddings.to(device).reshape(len(read), -1))
        weights.append(torch.full((len(read),), float(weight), device=device))
    inputs, wanted = torch.cat(inputs), torch.cat(wanted)
    if wanted.shape[1] != head.out_features:
        raise InputError(f"the bridge's head writes {head.out_features} numbers per input, the title targets have {wanted.shape[1]}")
    weights = torch.cat(weights)
    weight, bias = ridge_regression(inputs, wanted, ridge, weights)
    width = groups[0][1].embeddings.shape[-1]  # one vector's numbers
    own_tag_fit = tag_ridge is not None and tag_tokens > 0 and head.out_features == bridge.num_tokens * width
    if own_tag_fit:
        tail = slice(head.out_features - tag_tokens * width, None)
        weight[:, tail], bias[tail] = ridge_regression(inputs, wanted[:, tail], tag_ridge, weights)
    head.weight.copy_(weight.T.to(head.weight.dtype))
    head.bias.copy_(bias.to(head.bias.dtype))
    return own_tag_fit


def warm_start_bridge(
    bridge: nn.Module,
    item_vectors: np.ndarray,
    targets: TitleTargets,
    config: WarmStartConfig,
    *,
    seed: int = 0,
    progress: bool = True,
    users: tuple[np.ndarray, TitleTargets] | None = None,
) -> dict:
    """Fit `bridge` to the title targets: its head in closed form (`config.solve`), then AdamW
    on the whole bridge (minibatches, warmup then cosine decay). `users`: (every user's CF
    vector, profile targets), fitted with the items in the closed form when `config.users`.

    Returns what it reached: the loss and the nearest-token accuracy over all target items (also
    right after the closed-form head, under "solved"; the users' under "users"), and the seconds.
    """
    from itemlm.train.schedule import warmup_cosine

    started = time.perf_counter()
    device = next(bridge.parameters()).device
    regression = TitleRegression(targets, config.loss).to(device)
    vectors = torch.as_tensor(item_vectors, dtype=torch.float32, device=device)
    items = targets.items.to(device)
    solved, user_fit = None, None
    if config.solve:
        groups = [(vectors, targets, 1.0)]
        if users is not None and config.users and len(users[1]):
            user_vectors = torch.as_tensor(users[0], dtype=torch.float32, device=device)
            groups.append((user_vectors, users[1], config.user_weight))
        own_tag_fit = solve_head(bridge, groups, config.ridge, config.tag_tokens, config.tag_ridge)
        solved = evaluate_fit(bridge, vectors, items, regression) | {"seconds": round(time.perf_counter() - started, 1)}
        if config.tag_tokens and config.tag_ridge is not None:
            solved["tag_ridge_applied"] = own_tag_fit  # False for a head shared by query tokens
        if len(groups) > 1:
            profiles = TitleRegression(users[1], config.loss).to(device)
            user_fit = evaluate_fit(bridge, user_vectors, users[1].items.to(device), profiles, kind=1)
    if config.steps == 0:
        report = solved or evaluate_fit(bridge, vectors, items, regression)
        return report | {"steps": 0, "loss_kind": config.loss, "solved": solved, "users": user_fit, "seconds": round(time.perf_counter() - started, 1)}
    parameters = [p for p in bridge.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=0.0)
    scheduler = warmup_cosine(optimizer, config.warmup_steps, config.steps)
    generator = torch.Generator().manual_seed(seed)
    order, cursor = torch.randperm(len(targets), generator=generator), 0
    bar = tqdm(range(config.steps), desc="warm start", disable=not progress)
    with module_mode(bridge, training=True):
        for _ in bar:
            if cursor + config.batch_size > len(order):  # epochs of shuffled minibatches
                order, cursor = torch.randperm(len(targets), generator=generator), 0
            rows = order[cursor : cursor + config.batch_size].to(device)
            cursor += config.batch_size
            loss = regression(bridge_outputs(bridge, vectors, rows, items), rows)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            bar.set_postfix(loss=f"{loss.item():.4f}")
    report = evaluate_fit(bridge, vectors, items, regression)
    return report | {"steps": config.steps, "loss_kind": config.loss, "solved": solved, "users": user_fit, "seconds": round(time.perf_counter() - started, 1)}


@torch.no_grad()
def evaluate_fit(bridge: nn.Module, vectors: Tensor, items: Tensor, regression: TitleRegression, batch: int = 512, kind: int = 0) -> dict:
    losses, accuracies, sizes = [], [], []
    with module_mode(bridge, training=False):
        for start in range(0, len(items), batch):
            rows = torch.arange(start, min(start + batch, len(items)), device=items.device)
            outputs = bridge_outputs(bridge, vectors, rows, items, kind)
            losses.append(float(regression(outputs, rows)))
            accuracies.append(regression.token_accuracy(outputs, rows))
            sizes.append(len(rows))
    return {
        "loss": round(float(np.average(losses, weights=sizes)), 5),
        "token_accuracy": round(float(np.average(accuracies, weights=sizes)), 4),
        "items": int(len(items)),
    }


@torch.no_grad()
def tag_accuracy(llm: FrozenLLM, bridge: nn.Module, item_vectors: np.ndarray, items: np.ndarray, tags: list[list[str]], tag_tokens: int) -> float:
    """How often each of the bridge's last `tag_tokens` vectors of `items` has the item's tag token
    as its nearest tag embedding: asked of text-held-out items, whose tags the fit never read, it
    says whether the tag vectors carry over to items known by their interactions alone."""
    targets = targets_from_ids(llm, items, tag_token_ids(llm, [tags[i] for i in items], tag_tokens))
    device = next(bridge.parameters()).device
    vectors = torch.as_tensor(item_vectors, dtype=torch.float32, device=device)
    regression, items, width = TitleRegression(targets, "mse").to(device), targets.items.to(device), tag_tokens
    rows = torch.arange(len(items), device=device)
    with module_mode(bridge, training=False):
        outputs = bridge_outputs(bridge, vectors, rows, items)[:, -width:]
    return regression.token_accuracy(outputs, rows)


class TitleAnchor:
    """The warm-start loss kept on during stage 2, on a fresh random batch of items each step.

    Its targets are the title embeddings, or (`hold_current`) the bridge's own vectors at some
    step: a mixture after a naming phase then keeps what the naming phase taught."""

    def __init__(self, targets: TitleTargets, item_vectors: np.ndarray, config: WarmStartConfig, device: torch.device, seed: int):
        self.targets, self.loss_kind, self.device = targets, config.loss, device
        self.titles = TitleRegression(targets, config.loss).to(device)
        self.current: TitleRegression | None = None
        self.current_since: int | None = None
        self.vectors = torch.as_tensor(item_vectors, dtype=torch.float32, device=device)
        self.items = targets.items.to(device)
        self.weight, self.batch_size = config.anchor_weight, config.anchor_batch_size
        self.seed = seed

    def hold_current(self, bridge: nn.Module, step: int, file: Path | None = None, write: bool = True) -> None:
        """Make the bridge's vectors at `step` the "current" targets. With `file`, they are read
        from there when it holds that step's (a resumed run: the weights have moved on since),
        else taken from the bridge and (`write`) saved there."""
        from safetensors.torch import save_file

        if self.current_since == step:
            return
        saved = read_safetensors(file, "anchor targets file") if file is not None and file.exists() else {}
        if int(saved.get("step", torch.tensor(-1))) == step:
            held = saved["vectors"]
        else:
            with torch.no_grad(), module_mode(bridge, training=False):
                rows = torch.arange(len(self.items), device=self.items.device)
                held = torch.cat([bridge_outputs(bridge, self.vectors, chunk, self.items).float() for chunk in rows.split(512)]).cpu()
            if file is not None and write:
                temporary = file.with_suffix(".tmp")
                save_file({"vectors": held.contiguous(), "step": torch.tensor(step)}, str(temporary))
                temporary.replace(file)
        self.current = TitleRegression(replace(self.targets, embeddings=held), self.loss_kind).to(self.device)
        self.current_since = step

    def loss(self, bridge: nn.Module, step: int, weight: float | None = None, targets: str = "titles") -> Tensor:
        """The anchor term of `step` (its batch depends only on the seed and the step: resumable);
        `weight` replaces the configured anchor weight (a curriculum phase's own); `targets`:
        "titles" or "current" (after `hold_current`)."""
        regression = self.current if targets == "current" else self.titles
        if regression is None:
            raise RuntimeError("the anchor holds no current vectors yet: call hold_current first")
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        rows = torch.randint(len(self.items), (self.batch_size,), generator=generator).to(self.items.device)
        return (self.weight if weight is None else weight) * regression(bridge_outputs(bridge, self.vectors, rows, self.items), rows)
