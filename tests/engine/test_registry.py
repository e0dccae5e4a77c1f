"""ModelRegistry and device/dtype choice: models by name, the architecture registry, lifecycle, clear errors."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
import torch

from llmaas.config import ModelSpec, Settings
from llmaas.engine import device as device_mod
from llmaas.engine.device import cpu_supports_bf16, pick_device, pick_dtype
from llmaas.engine.registry import ModelRegistry, builder_for, register_architecture
from llmaas.engine.types import EngineRequest, GrammarSpec, SamplingParams
from llmaas.errors import ModelNotFound


def spec(**kw: object) -> ModelSpec:
    return ModelSpec(**{"name": "m", "source": "x", **kw})  # type: ignore[arg-type]


# --- device / dtype ------------------------------------------------------------------------------------


def test_cpu_bf16_flags(tmp_path: Path) -> None:
    with_bf16 = tmp_path / "a"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n")
    without = tmp_path / "b"
    without.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 fma\n")
    assert cpu_supports_bf16(str(with_bf16)) and not cpu_supports_bf16(str(without))
    assert not cpu_supports_bf16(str(tmp_path / "missing"))


def test_pick_dtype(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setattr(device_mod, "cpu_supports_bf16", lambda: True)
    assert pick_dtype(spec(), cpu) == torch.bfloat16
    monkeypatch.setattr(device_mod, "cpu_supports_bf16", lambda: False)
    assert pick_dtype(spec(), cpu) == torch.float32
    assert pick_dtype(spec(dtype="float32"), cpu) == torch.float32
    with caplog.at_level(logging.WARNING):
        assert pick_dtype(spec(dtype="bfloat16"), cpu) == torch.bfloat16
    assert "100x slower" in caplog.text


def test_pick_device() -> None:
    assert pick_device(spec(device="cpu")).type == "cpu"
    if torch.cuda.is_available():
        assert pick_device(spec()).type == "cuda"
    else:
        assert pick_device(spec()).type == "cpu"
        with pytest.raises(RuntimeError, match="no CUDA"):
            pick_device(spec(device="cuda"))


# --- architecture registry -----------------------------------------------------------------------------


def test_architectures_register_like_extensions() -> None:
    native = builder_for("LlamaForCausalLM")
    assert builder_for("MistralForCausalLM") is native and builder_for("Qwen2ForCausalLM") is native
    assert builder_for("GPT2LMHeadModel") is not native  # the transformers fallback

    @register_architecture("MyOwnForCausalLM")
    def mine(spec, loaded, device, dtype, settings):  # type: ignore[no-untyped-def]
        return "engine"

    assert builder_for("MyOwnForCausalLM") is mine


# --- the registry over real (tiny) models --------------------------------------------------------------


@pytest.fixture(scope="module")
def registry(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelRegistry:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("data"),
        models=[
            ModelSpec(name="tiny", source=str(tiny_model_dir), dtype="float32", kv_cache_mb=4),
            ModelSpec(name="emb", source="builtin:all-minilm-l6-v2", kind="embedding", dtype="float32"),
        ],
    )
    return ModelRegistry.from_settings(settings)


def test_models_by_name(registry: ModelRegistry) -> None:
    infos = {m.id: m for m in registry.list()}
    assert set(infos) == {"tiny", "emb"}
    assert infos["tiny"].kind == "chat" and infos["tiny"].max_model_len == registry.chat("tiny").max_model_len
    assert infos["emb"].kind == "embedding" and infos["emb"].max_model_len == 254
    assert infos["tiny"].owned_by == "llmaas" and infos["tiny"].created > 0
    assert registry.embedder("emb").dimensions == 384
    with pytest.raises(ModelNotFound, match="does not exist"):
        registry.chat("emb")  # an embedding model is not a chat model
    with pytest.raises(ModelNotFound):
        registry.embedder("tiny")
    with pytest.raises(ModelNotFound) as e:
        registry.chat("x" * 10_000)
    assert len(e.value.message) < 200


def test_start_generate_stats_shutdown(registry: ModelRegistry) -> None:
    async def go() -> tuple[list[int], str]:
        await registry.start()
        try:
            engine = registry.chat("tiny")
            prompt = engine.tokenizer.apply_chat_template([{"role": "user", "content": "hi"}])
            req = EngineRequest("r1", prompt, SamplingParams(max_tokens=5, temperature=0.0, ignore_eos=True))
            ids: list[int] = []
            async for ev in engine.generate([req]):
                ids += ev.token_ids
            vecs, _ = await registry.embedder("emb").embed(["hello"])
            assert len(vecs[0]) == 384
            return ids, ev.finish_reason.value if ev.finish_reason else ""
        finally:
            await registry.shutdown()

    ids, reason = asyncio.run(go())
    assert len(ids) == 5 and reason == "length"
    assert registry.stats()["tiny"].steps >= 1


# --- architectures without a native builder: the transformers fallback ---------------------------------


@pytest.fixture(scope="module")
def tiny_gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    from tests.support.tiny import build_byte_tokenizer

    out = tmp_path_factory.mktemp("tiny-gpt2")
    vocab = build_byte_tokenizer(out)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(vocab_size=vocab, n_positions=128, n_embd=32, n_layer=2, n_head=2, bos_token_id=1, eos_token_id=2)
    )
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.1)
    model.save_pretrained(out)
    return out


def test_unknown_architecture_uses_fallback(tiny_gpt2_dir: Path, tmp_path: Path) -> None:
    from transformers import GPT2LMHeadModel

    from llmaas.engine.client import AsyncEngine
    from llmaas.engine.models.hf_runner import HFRunner

    settings = Settings(data_dir=tmp_path, models=[ModelSpec(name="g", source=str(tiny_gpt2_dir), dtype="float32")])
    reg = ModelRegistry.from_settings(settings)
    engine = reg.chat("g")
    assert isinstance(engine, AsyncEngine) and isinstance(engine.core.runner, HFRunner)
    assert engine.max_model_len == 128
    prompt = engine.tokenizer.encode("Once upon a time")
    ref = GPT2LMHeadModel.from_pretrained(str(tiny_gpt2_dir), dtype=torch.float32).eval()
    with torch.no_grad():
        out = ref.generate(
            torch.tensor([prompt]),
            max_new_tokens=10,
            min_new_tokens=10,
            do_sample=False,
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        )
    expected = out[0, len(prompt) :].tolist()

    async def collect(req: EngineRequest) -> list:  # type: ignore[type-arg]
        return [ev async for ev in engine.generate([req])]

    async def go() -> None:
        await reg.start()
        try:
            greedy = SamplingParams(max_tokens=10, temperature=0.0, ignore_eos=True, logprobs=2)
            evs = await collect(EngineRequest("a", prompt, greedy, echo_prompt_logprobs=True))
            assert [t for ev in evs for t in ev.token_ids] == expected
            assert evs[-1].finish_reason.value == "length" and evs[-1].num_output_tokens == 10  # type: ignore[union-attr]
            assert "".join(ev.text for ev in evs) == engine.tokenizer.decode(expected)
            assert evs[0].prompt_logprobs is not None and len(evs[0].prompt_logprobs) == len(prompt)
            assert evs[1].prompt_logprobs is None and len(evs[0].logprobs[0].top) == 2  # type: ignore[index]

            text = engine.tokenizer.decode(expected)
            stop = text[3:5]
            evs = await collect(
                EngineRequest("b", prompt, SamplingParams(max_tokens=10, temperature=0.0, ignore_eos=True, stop=[stop]))
            )
            assert "".join(ev.text for ev in evs) == text[: text.index(stop)]
            assert evs[-1].finish_reason.value == "stop"  # type: ignore[union-attr]

            seeded = SamplingParams(max_tokens=8, temperature=1.0, seed=5, ignore_eos=True)
            runs = [
                [t for ev in await collect(EngineRequest(f"s{i}", prompt, seeded)) for t in ev.token_ids]
                for i in range(2)
            ]
            assert runs[0] == runs[1]

            grammar = engine.tokenizer.compile_grammar(GrammarSpec("json_schema", '{"enum": ["yes", "no"]}'))
            evs = await collect(
                EngineRequest(
                    "j",
                    prompt,
                    SamplingParams(max_tokens=20, temperature=1.0, seed=3, grammar=grammar, ignore_eos=True),
                )
            )
            assert "".join(ev.text for ev in evs) in ('"yes"', '"no"') and evs[-1].finish_reason.value == "stop"  # type: ignore[union-attr]

            stream = engine.generate([EngineRequest("c", prompt, SamplingParams(max_tokens=100, temperature=0.0))])
            await stream.__anext__()
            await stream.aclose()  # a client that goes away aborts the sequence
            with pytest.raises(Exception, match="adapters"):  # the API registers an adapter before using it
                engine.register_adapter("x", tmp_path)
        finally:
            await reg.shutdown()

    asyncio.run(go())


def test_fallback_streams_advance_together_and_survive_preemption(tiny_gpt2_dir: Path, tmp_path: Path) -> None:
    """The transformers runner behind EngineCore: concurrent sequences (chunked prefill, then decodes side by side)
    and sequences preempted for KV space (recomputed from their start) give what each gives alone."""
    from transformers import GPT2LMHeadModel

    from llmaas.engine.core import EngineCore
    from llmaas.engine.detokenizer import IncrementalDetokenizer
    from llmaas.engine.kv_cache import KVCacheManager
    from llmaas.engine.models.hf_runner import HFRunner
    from llmaas.engine.models.loader import load_model
    from llmaas.engine.sampler import Sampler
    from llmaas.engine.scheduler import Scheduler

    loaded = load_model(ModelSpec(name="g", source=str(tiny_gpt2_dir)), Settings(data_dir=tmp_path))
    model = GPT2LMHeadModel.from_pretrained(str(tiny_gpt2_dir), dtype=torch.float32).eval()
    tok = loaded.tokenizer
    prompts = [tok.encode(t) for t in ("Once upon a time", "The quick brown fox jumps", "x")]

    preemptions = []

    def run(indices: list[int], num_blocks: int) -> dict[str, list[int]]:
        scheduler = Scheduler(
            KVCacheManager(num_blocks, 4),
            max_num_seqs=3,
            max_num_batched_tokens=16,
            max_model_len=128,
            eos_token_ids=list(tok.eos_token_ids),
        )
        core = EngineCore(
            HFRunner(model, torch.device("cpu"), 259),
            scheduler,
            Sampler(tok),
            tok,
            IncrementalDetokenizer,
            max_model_len=128,
        )
        for i in indices:
            core.add_request(
                EngineRequest(f"r{i}", prompts[i], SamplingParams(max_tokens=20, temperature=0.0, ignore_eos=True))
            )
        out: dict[str, list[int]] = {}
        while core.has_work():
            for ev in core.step():
                out.setdefault(ev.request_id, []).extend(ev.token_ids)
                assert ev.error is None
        assert not core.runner._caches  # every finished sequence released its cache
        preemptions.append(scheduler.num_preemptions)
        return out

    alone = {k: v for i in range(3) for k, v in run([i], 64).items()}
    assert run([0, 1, 2], 64) == alone
    assert run([0, 1, 2], 12) == alone  # 48 slots for ~90 tokens: some sequences are preempted and recomputed
    assert preemptions[-1] > 0


# --- the default configuration: the real SmolLM2 GGUF and MiniLM --------------------------------------


@pytest.mark.slow
def test_default_models_answer() -> None:
    import os
    import tempfile

    root = Path(os.environ.get("LLMAAS_TEST_MODEL_CACHE", Path(tempfile.gettempdir()) / "llmaas-test-models"))
    reg = ModelRegistry.from_settings(Settings(data_dir=root))  # default models; the GGUF conversion is cached there
    assert {m.id for m in reg.list()} == {"SmolLM2-135M-Instruct", "all-MiniLM-L6-v2"}
    engine = reg.chat("SmolLM2-135M-Instruct")
    prompt = engine.tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}])

    async def go() -> str:
        await reg.start()
        try:
            params = SamplingParams(max_tokens=16, temperature=0.0)
            return "".join([ev.text async for ev in engine.generate([EngineRequest("r", prompt, params)])])
        finally:
            await reg.shutdown()

    assert asyncio.run(go()) == "The capital of France is Paris."
