"""LoraManager: per-row deltas equal PEFT's LoRA layers (mixed batch), LRU, refusals, and engine parity with PEFT."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from llmaas.engine.lora import MODULES, AdapterError, LoraManager

MLP = ("gate_proj", "up_proj", "down_proj")
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")  # transformers, via PEFT


def _make_adapter(base_dir: Path, out: Path, seed: int, **lora_kw: Any) -> Any:
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    base = LlamaForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(lora_dropout=0.0, **lora_kw))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:  # PEFT starts B at zero; make both sides matter
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    model.save_pretrained(str(out))
    return model.eval()


@pytest.fixture(scope="module")
def adapters(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Any]]:
    pytest.importorskip("peft")
    root = tmp_path_factory.mktemp("adapters")
    a = _make_adapter(tiny_model_dir, root / "a", 1, r=4, lora_alpha=8, target_modules=list(MODULES))
    b = _make_adapter(
        tiny_model_dir,
        root / "b",
        2,
        r=2,
        lora_alpha=16,
        use_rslora=True,
        target_modules=["q_proj", "v_proj", "down_proj"],
        alpha_pattern={"down_proj": 4},
    )
    return {"a": (root / "a", a), "b": (root / "b", b)}


def _config(tiny_model_dir: Path) -> Any:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(str(tiny_model_dir))


def _peft_module(model: Any, layer: int, module: str) -> Any:
    block = model.base_model.model.model.layers[layer]
    return getattr(block.mlp if module in MLP else block.self_attn, module)


def test_mixed_batch_deltas_match_peft(tiny_model_dir: Path, adapters: dict[str, tuple[Path, Any]]) -> None:
    mgr = LoraManager(_config(tiny_model_dir), max_loras=4)
    for name, (path, _) in adapters.items():
        mgr.register(name, path)
    ids: list[str | None] = ["a", None, "b", "a", "b", None, "a"]
    ctx = mgr.prepare(ids)
    assert ctx is not None and mgr.num_loaded == 2
    _check_against_peft(mgr, ctx, ids, {n: m for n, (_, m) in adapters.items()})


def _check_against_peft(mgr: LoraManager, ctx: Any, ids: list[str | None], models: dict[str, Any]) -> None:
    g = torch.Generator().manual_seed(0)
    for layer in range(2):
        for module in MODULES:
            d_in = mgr.dims[module][0]
            x = torch.randn(len(ids), d_in, generator=g)
            delta = ctx.delta(layer, module, x)
            assert delta is not None  # adapter a targets every module
            for row, name in enumerate(ids):
                if name is None:
                    assert bool((delta[row] == 0).all())
                    continue
                peft_mod = _peft_module(models[name], layer, module)
                xr = x[row : row + 1]
                with torch.no_grad():
                    if hasattr(peft_mod, "lora_A"):  # PEFT's LoRA layer: base output + its delta
                        expected = peft_mod(xr) - peft_mod.base_layer(xr)
                    else:  # a module this adapter leaves alone
                        expected = torch.zeros(1, mgr.dims[module][1])
                torch.testing.assert_close(delta[row : row + 1], expected, rtol=1e-5, atol=1e-6)


def test_many_adapters_in_one_batch_and_stack_invalidation(
    tiny_model_dir: Path, adapters: dict[str, tuple[Path, Any]], tmp_path: Path
) -> None:
    c_path, d_path = tmp_path / "c", tmp_path / "d"
    c = _make_adapter(tiny_model_dir, c_path, 3, r=3, lora_alpha=6, target_modules=["o_proj", "gate_proj", "up_proj"])
    d = _make_adapter(
        tiny_model_dir, d_path, 4, r=8, lora_alpha=4, target_modules=list(MODULES), rank_pattern={"k_proj": 2}
    )
    models = {"a": adapters["a"][1], "b": adapters["b"][1], "c": c, "d": d}
    mgr = LoraManager(_config(tiny_model_dir), max_loras=4)
    for name, path in (("a", adapters["a"][0]), ("b", adapters["b"][0]), ("c", c_path), ("d", d_path)):
        mgr.register(name, path)
    ids: list[str | None] = ["d", "a", None, "c", "b", "d", "c", "a", None, "b"]
    _check_against_peft(mgr, mgr.prepare(["a", "b"]), ["a", "b"], models)  # a smaller set first: its own stacks
    _check_against_peft(mgr, mgr.prepare(ids), ids, models)
    _check_against_peft(mgr, mgr.prepare(["d"] * 3), ["d"] * 3, models)  # one adapter: the unmasked path
    mgr.register("a", d_path)  # new weights for a loaded id: cached stacks must not keep the old ones
    _check_against_peft(mgr, mgr.prepare(ids), ids, {**models, "a": d})


def test_untargeted_module_gives_none_and_single_adapter_fast_path(
    tiny_model_dir: Path, adapters: dict[str, tuple[Path, Any]]
) -> None:
    mgr = LoraManager(_config(tiny_model_dir))
    mgr.register("b", adapters["b"][0])
    assert mgr.prepare([None, None]) is None
    ctx = mgr.prepare(["b", "b", "b"])
    assert ctx is not None
    assert ctx.delta(0, "k_proj", torch.randn(3, 64)) is None  # b does not target k_proj
    x = torch.randn(3, 64)
    peft_q = _peft_module(adapters["b"][1], 1, "q_proj")
    with torch.no_grad():
        torch.testing.assert_close(ctx.delta(1, "q_proj", x), peft_q(x) - peft_q.base_layer(x))


def test_lru_keeps_at_most_max_loras(tiny_model_dir: Path, adapters: dict[str, tuple[Path, Any]]) -> None:
    mgr = LoraManager(_config(tiny_model_dir), max_loras=1)
    mgr.register("a", adapters["a"][0])
    mgr.register("b", adapters["b"][0])
    assert "a" in mgr and "zzz" not in mgr and mgr.num_loaded == 0  # lazy
    mgr.prepare(["a"])
    mgr.prepare(["b"])
    assert mgr.num_loaded == 1
    mgr.prepare(["a", "b"])  # one step may need more than max_loras: both stay for that step
    assert mgr.num_loaded == 2
    mgr.prepare(["a"])
    assert mgr.num_loaded == 1
    mgr.register("a", adapters["a"][0])  # the API re-registers on every request: loaded weights stay
    assert mgr.num_loaded == 1
    mgr.register("a", adapters["b"][0])  # a new folder for a known id replaces its weights
    assert mgr.num_loaded == 0
    with pytest.raises(AdapterError, match="not registered"):
        mgr.prepare(["zzz"])


def test_refuses_what_it_cannot_apply(
    tiny_model_dir: Path, adapters: dict[str, tuple[Path, Any]], tmp_path: Path
) -> None:
    import shutil

    mgr = LoraManager(_config(tiny_model_dir))
    src = adapters["a"][0]
    cfg = json.loads((src / "adapter_config.json").read_text())

    def variant(name: str, **changes: Any) -> Path:
        d = tmp_path / name
        shutil.copytree(src, d)
        (d / "adapter_config.json").write_text(json.dumps({**cfg, **changes}))
        return d

    with pytest.raises(AdapterError, match="DoRA"):
        mgr.register("x", variant("dora", use_dora=True))
    with pytest.raises(AdapterError, match="modules_to_save"):
        mgr.register("x", variant("mts", modules_to_save=["lm_head"]))
    with pytest.raises(AdapterError, match="targets modules other"):
        mgr.register("x", variant("emb", target_modules=["embed_tokens", "q_proj"]))
    pickled = variant("pickled")
    (pickled / "adapter_model.safetensors").rename(pickled / "adapter_model.bin")
    with pytest.raises(AdapterError, match="pickle is never loaded"):
        mgr.register("x", pickled)
    with pytest.raises(AdapterError, match="adapter_config.json"):
        mgr.register("x", tmp_path)

    bigger = _config(tiny_model_dir)
    bigger.hidden_size, bigger.head_dim = 128, 32
    other = LoraManager(bigger)
    other.register("a", src)  # config is fine; shapes are checked on load
    with pytest.raises(AdapterError, match="do not fit"):
        other.prepare(["a"])


# --- through the real engine: token-identical greedy output with PEFT ---------------------------------


def test_engine_generation_matches_peft(
    tiny_model_dir: Path, adapters: dict[str, tuple[Path, Any]], tmp_path: Path
) -> None:
    from transformers import LlamaForCausalLM

    from llmaas.config import ModelSpec, Settings
    from llmaas.engine.factory import build_chat_engine
    from llmaas.engine.models.loader import load_model
    from llmaas.engine.types import EngineRequest, SamplingParams

    spec = ModelSpec(name="tiny", source=str(tiny_model_dir), dtype="float32", kv_cache_mb=4)
    loaded = load_model(spec, Settings(data_dir=tmp_path))
    engine = build_chat_engine(spec, loaded, torch.device("cpu"), torch.float32)
    for name, (path, _) in adapters.items():
        engine.register_adapter(name, path)
    prompt = loaded.tokenizer.apply_chat_template([{"role": "user", "content": "Tell me a story"}])
    n_new = 12

    def reference(model: Any) -> list[int]:
        with torch.no_grad():
            out = model.generate(
                torch.tensor([prompt]),
                max_new_tokens=n_new,
                min_new_tokens=n_new,
                do_sample=False,
                attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            )
        return out[0, len(prompt) :].tolist()

    base = LlamaForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32).eval()
    expected = {"a": reference(adapters["a"][1]), "b": reference(adapters["b"][1]), None: reference(base)}
    assert len({tuple(v) for v in expected.values()}) == 3  # the adapters really change the output

    async def run() -> dict[str | None, list[int]]:
        await engine.start()
        try:

            async def one(adapter: str | None) -> list[int]:
                params = SamplingParams(max_tokens=n_new, temperature=0.0, ignore_eos=True)
                ids: list[int] = []
                async for ev in engine.generate([EngineRequest(f"r-{adapter}", prompt, params, adapter_id=adapter)]):
                    ids += ev.token_ids
                return ids

            results = await asyncio.gather(one("a"), one("b"), one(None))  # one mixed batch
            return dict(zip(["a", "b", None], results))
        finally:
            await engine.shutdown()

    assert asyncio.run(run()) == expected
