"""Build tiny Llama-family models with random weights and a byte-level tokenizer, in seconds, on disk.

Byte-level on purpose: every multi-byte UTF-8 character spans several tokens, so streaming and stop-string code
meets split characters all the time. The folder is a normal HF folder (config.json, model.safetensors,
tokenizer.json, chat template), loadable by transformers and by llmaas alike.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 0, 1, 2 as in SmolLM2
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_byte_tokenizer(out_dir: Path, chat_template: str | None = CHATML_TEMPLATE) -> int:
    """Write a byte-level BPE tokenizer with no merges (3 specials + 256 bytes). Returns the vocab size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import PreTrainedTokenizerFast

    alphabet = ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL_TOKENS)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|im_end|>",
    )
    if chat_template:
        fast.chat_template = chat_template
    fast.save_pretrained(out_dir)
    return len(vocab)


def build_tiny_llama(
    out_dir: Path,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    max_position_embeddings: int = 512,
    tie_word_embeddings: bool = True,
    chat_template: str | None = CHATML_TEMPLATE,
    seed: int = 0,
    init_std: float = 0.08,
) -> Path:
    """A random-weight LlamaForCausalLM folder (fp32 safetensors) with the byte tokenizer.

    init_std 0.15 gives varied greedy continuations (0.08 tends to repeat one token), for parity tests.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab_size = build_byte_tokenizer(out_dir, chat_template)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        tie_word_embeddings=tie_word_embeddings,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    # Larger-than-default init so that random models produce varied, non-degenerate token distributions.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, init_std)
    model.save_pretrained(out_dir, safe_serialization=True)
    (out_dir / "llmaas_tiny.json").write_text(json.dumps({"seed": seed}))
    return out_dir


def greedy_on_tiny(core: Any, tokenizer: Any, max_tokens: int = 16) -> dict[str, list[int]]:
    """Greedy tokens (EOS ignored) of three chat prompts of 1, 7 and 30 words, run to the end on `core`."""
    from llmaas.engine.types import EngineRequest, SamplingParams

    for i, n in enumerate((1, 7, 30)):
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": "ab " * n}])
        params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
        core.add_request(EngineRequest(f"r{i}", prompt, params))
    out: dict[str, list[int]] = {}
    while core.has_work():
        for ev in core.step():
            out.setdefault(ev.request_id, []).extend(ev.token_ids)
    return out
