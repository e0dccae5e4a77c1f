"""The Llama family (Llama 2/3, Mistral, Qwen2, SmolLM) over the paged KV cache, written the gpt-fast way.

One forward computes a flattened batch of T tokens from many sequences (prefill chunks and decodes mixed): the
projections run once over all T rows; only attention is per *group* of rows: where kernels/paged_attention builds,
every decode and prefill row in one call that reads the paged cache in place; else all decodes together and each
prefill chunk alone, over K/V gathered by block table (SDPA). The element-wise steps between the matmuls (rotary +
K/V write, residual add + RMSNorm, SiLU * up) are fused passes where kernels/fused runs. On CPU the projections run
on packed bf16 weights (our kernel's panels or oneDNN's), int8 weights or GGUF blocks (`engine/cpu.py`'s `Linear`).

Reads HF-named weights (q/k/v fused into one matmul, gate/up into another); supports GQA, tied embeddings,
rope_theta, llama3 rope_scaling, attention/MLP biases (Qwen2's qkv bias). It is not a trainer, does not own the
KV memory budget (runner.py sizes it) and does not sample.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llmaas.engine.cpu import Linear, TiedEmbedding
from llmaas.engine.kernels import block_linear, fused
from llmaas.engine.kernels.paged_attention import paged_attention


@dataclass
class ModelArgs:
    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    intermediate_size: int
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False

    @property
    def q_size(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.n_kv_heads * self.head_dim

    @classmethod
    def from_hf_config(cls, config: Any) -> ModelArgs:
        c = config.get_text_config() if hasattr(config, "get_text_config") else config
        n_heads = c.num_attention_heads
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // n_heads
        rope_theta = getattr(c, "rope_theta", None)
        scaling = getattr(c, "rope_scaling", None) or getattr(c, "rope_parameters", None)
        if rope_theta is None and isinstance(scaling, dict):  # transformers 5 keeps it in rope_parameters
            rope_theta = scaling.get("rope_theta")
        if isinstance(scaling, dict) and scaling.get("rope_type", scaling.get("type", "default")) in ("default", None):
            scaling = None
        return cls(
            vocab_size=c.vocab_size,
            dim=c.hidden_size,
            n_layers=c.num_hidden_layers,
            n_heads=n_heads,
            n_kv_heads=getattr(c, "num_key_value_heads", None) or n_heads,
            head_dim=head_dim,
            intermediate_size=c.intermediate_size,
            norm_eps=getattr(c, "rms_norm_eps", 1e-5),
            rope_theta=float(rope_theta or 10000.0),
            rope_scaling=dict(scaling) if scaling else None,
            max_position_embeddings=getattr(c, "max_position_embeddings", 2048),
            tie_word_embeddings=bool(getattr(c, "tie_word_embeddings", False)),
        )


class LoraHook(Protocol):
    def delta(self, layer_idx: int, module: str, x: Tensor) -> Tensor | None: ...


@dataclass
class AttnGroup:
    """Sequences attended together, keys from the cache: read in place by the paged kernel when `lens` is set (a row
    per token, any mix of decodes and prefill chunks), else S sequences with Q query rows each, gathered and masked
    by `mask`."""

    rows: Tensor | None  # [S*Q] token rows of the flattened batch (None = all rows, in order)
    block_table: Tensor  # [S, max_blocks] block ids
    # [1, S, G*Q, L] additive, in the model dtype: 0 = attend, -inf = not (broadcast over KV heads); None with
    # `lens`. Additive, built once per forward: SDPA converted a bool mask to this in every layer.
    mask: Tensor | None
    num_seqs: int
    q_len: int
    lens: Tensor | None = None  # [R] keys visible to each row: attention through kernels/paged_attention
    first_row: int | None = None  # set when `rows` is one contiguous range from here: views instead of index copies
    row_seq: Tensor | None = None  # [R] the block-table row of each row, with `lens` (None: row r is sequence r)


@dataclass
class ForwardBatch:
    input_ids: Tensor  # [T]
    positions: Tensor  # [T]
    slot_mapping: Tensor  # [T] flat cache slot of each token
    groups: list[AttnGroup]
    logit_rows: Tensor  # [R] rows whose logits are wanted
    lora: LoraHook | None = None


# --- rotary ----------------------------------------------------------------------------------------------


def _inv_freq(args: ModelArgs) -> Tensor:
    d = args.head_dim
    inv = 1.0 / (args.rope_theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
    s = args.rope_scaling
    if s is None:
        return inv
    kind = s.get("rope_type", s.get("type"))
    if kind != "llama3":
        raise NotImplementedError(f"rope_scaling type {kind!r} is not supported by the native engine")
    # Llama 3.1's frequency-dependent scaling (same arithmetic as transformers' _compute_llama3_parameters).
    factor, low, high = s["factor"], s.get("low_freq_factor", 1.0), s.get("high_freq_factor", 4.0)
    old_len = s["original_max_position_embeddings"]
    low_wl, high_wl = old_len / low, old_len / high
    wavelen = 2 * math.pi / inv
    inv_l = torch.where(wavelen > low_wl, inv / factor, inv)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * inv_l / factor + smooth * inv_l
    is_medium = ~(wavelen < high_wl) & ~(wavelen > low_wl)
    return torch.where(is_medium, smoothed, inv_l)


def rope_tables(args: ModelArgs, max_len: int) -> tuple[Tensor, Tensor]:
    """cos, sin: [max_len, head_dim] in fp32 (HF's rotate_half layout: both halves share a frequency)."""
    freqs = torch.outer(torch.arange(max_len, dtype=torch.float32), _inv_freq(args))  # [L, D/2]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


# --- modules ---------------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        # Normalize in fp32, scale in the model dtype: HF's LlamaRMSNorm bit for bit (checked).
        return fused.rms_norm(x, self.weight, self.eps)


def _lora(lora: LoraHook | None, y: Tensor, layer: int, name: str, x: Tensor) -> Tensor:
    if lora is not None:
        d = lora.delta(layer, name, x)
        if d is not None:
            y = y + d.to(y.dtype)
    return y


class Attention(nn.Module):
    def __init__(self, args: ModelArgs, layer_idx: int, qkv_bias: bool, o_bias: bool) -> None:
        super().__init__()
        self.args, self.layer_idx = args, layer_idx
        self.wqkv = Linear(args.dim, args.q_size + 2 * args.kv_size, bias=qkv_bias)
        self.wo = Linear(args.q_size, args.dim, bias=o_bias)
        self.scale = 1.0 / math.sqrt(args.head_dim)

    def forward(self, x: Tensor, b: ForwardBatch, cos: Tensor, sin: Tensor, k_cache: Tensor, v_cache: Tensor) -> Tensor:
        # x: [T, dim]; k_cache, v_cache: [Hkv, num_blocks, block_size, D]
        a, i = self.args, self.layer_idx
        T = x.shape[0]
        qkv = self.wqkv(x)  # [T, q_size + 2 kv_size]
        if b.lora is not None:
            q, k, v = qkv.split([a.q_size, a.kv_size, a.kv_size], dim=-1)
            qkv = torch.cat([_lora(b.lora, t, i, n, x) for t, n in ((q, "q_proj"), (k, "k_proj"), (v, "v_proj"))], -1)
        q = fused.rope_write_kv(qkv, cos, sin, b.slot_mapping, k_cache, v_cache, a.n_heads, a.n_kv_heads)  # [T, H, D]
        if len(b.groups) == 1 and b.groups[0].rows is None:  # all decodes, or one prefill chunk alone
            y = self._attend(q, b.groups[0], k_cache, v_cache)
        else:
            y = torch.empty_like(q)  # [T, H, D]
            for g in b.groups:
                if g.first_row is not None:
                    n = g.num_seqs * g.q_len
                    y.narrow(0, g.first_row, n).copy_(self._attend(q.narrow(0, g.first_row, n), g, k_cache, v_cache))
                    continue
                rows = g.rows if g.rows is not None else torch.arange(T, device=x.device)
                y.index_copy_(0, rows, self._attend(q.index_select(0, rows), g, k_cache, v_cache))
        attn_in = y.reshape(T, a.q_size)
        return _lora(b.lora, self.wo(attn_in), i, "o_proj", attn_in)

    def _attend(self, q: Tensor, g: AttnGroup, k_cache: Tensor, v_cache: Tensor) -> Tensor:
        # q: [S*Q, H, D] -> [S*Q, H, D]; GQA without repeating K/V: each KV head's G query heads become rows.
        # KV heads lead and sequences follow ([Hkv, S, ...]) so that the gathered K/V are contiguous, one [L, D]
        # matrix per (head, sequence): no transpose copy before SDPA.
        a = self.args
        if g.lens is not None:
            return paged_attention(q, k_cache, v_cache, g.block_table, g.lens, self.scale, g.row_seq)
        S, Q, Hkv, D = g.num_seqs, g.q_len, a.n_kv_heads, a.head_dim
        G = a.n_heads // Hkv
        qg = q.view(S, Q, Hkv, G, D).permute(2, 0, 3, 1, 4).reshape(Hkv, S, G * Q, D)
        k = gather_kv(k_cache, g.block_table)  # [Hkv, S, L, D]
        v = gather_kv(v_cache, g.block_table)
        if Q == 1 and S >= 8:  # batched decode: G query rows per (head, sequence) are too few for SDPA's tiling;
            # two batched matmuls take ~0.4 ms per layer where SDPA took ~1 ms (SmolLM2, 32 sequences, bf16). With
            # one sequence SDPA's single call wins (~10% of a step): fewer ops.
            scores = torch.matmul(qg, k.transpose(-1, -2)).float().mul_(self.scale)  # [Hkv, S, G, L] fp32
            scores.add_(g.mask)  # type: ignore[arg-type]  # mask is set when lens is None
            o = torch.matmul(scores.softmax(dim=-1).to(v.dtype), v)  # [Hkv, S, G, D]
        else:
            o = F.scaled_dot_product_attention(qg, k, v, attn_mask=g.mask, scale=self.scale)
        return o.view(Hkv, S, G, Q, D).permute(1, 3, 0, 2, 4).reshape(S * Q, a.n_heads, D)


def gather_kv(cache: Tensor, block_table: Tensor) -> Tensor:
    # cache: [Hkv, N, bs, D], block_table: [S, nb] -> [Hkv, S, nb*bs, D], contiguous
    S, nb = block_table.shape
    Hkv, _, bs, D = cache.shape
    return cache.index_select(1, block_table.reshape(-1)).view(Hkv, S, nb * bs, D)


class MLP(nn.Module):
    def __init__(self, args: ModelArgs, layer_idx: int, bias: bool) -> None:
        super().__init__()
        self.layer_idx, self.inter = layer_idx, args.intermediate_size
        self.w_gate_up = Linear(args.dim, 2 * args.intermediate_size, bias=bias)
        self.w_down = Linear(args.intermediate_size, args.dim, bias=bias)

    def forward(self, x: Tensor, lora: LoraHook | None) -> Tensor:
        gate_up = self.w_gate_up(x)  # [T, 2I]
        if lora is not None:
            gate, up = gate_up.split([self.inter, self.inter], dim=-1)
            i = self.layer_idx
            gate_up = torch.cat([_lora(lora, gate, i, "gate_proj", x), _lora(lora, up, i, "up_proj", x)], dim=-1)
        h = fused.silu_mul(gate_up)
        return _lora(lora, self.w_down(h), self.layer_idx, "down_proj", h)


class Block(nn.Module):
    def __init__(self, args: ModelArgs, i: int, qkv_bias: bool, o_bias: bool, mlp_bias: bool) -> None:
        super().__init__()
        self.attn = Attention(args, i, qkv_bias, o_bias)
        self.mlp = MLP(args, i, mlp_bias)
        self.attn_norm = RMSNorm(args.dim, args.norm_eps)
        self.mlp_norm = RMSNorm(args.dim, args.norm_eps)

    def forward(
        self, x: Tensor, delta: Tensor | None, b: ForwardBatch, cos: Tensor, sin: Tensor, kc: Tensor, vc: Tensor
    ) -> tuple[Tensor, Tensor]:
        """(h, mlp_out) with the residual stream x + delta + attn = h and the block's output h + mlp_out: the last
        add is left to the next block's input norm (or the final norm), which does it in the same pass."""
        if delta is None:
            normed = self.attn_norm(x)
        else:
            x, normed = fused.add_rms_norm(x, delta, self.attn_norm.weight, self.attn_norm.eps)
        h, normed = fused.add_rms_norm(
            x, self.attn(normed, b, cos, sin, kc, vc), self.mlp_norm.weight, self.mlp_norm.eps
        )  # h = x + attn; normed = mlp_norm(h)
        return h, self.mlp(normed, b.lora)


class Llama(nn.Module):
    def __init__(self, args: ModelArgs, qkv_bias: bool = False, o_bias: bool = False, mlp_bias: bool = False) -> None:
        super().__init__()
        self.args = args
        self.embed = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleList(Block(args, i, qkv_bias, o_bias, mlp_bias) for i in range(args.n_layers))
        self.norm = RMSNorm(args.dim, args.norm_eps)
        self.lm_head = Linear(args.dim, args.vocab_size, bias=False)
        self.rope_cos: Tensor | None = None
        self.rope_sin: Tensor | None = None

    def setup_rope(self, max_len: int, device: torch.device, dtype: torch.dtype) -> None:
        cos, sin = rope_tables(self.args, max_len)
        self.rope_cos, self.rope_sin = cos.to(device, dtype), sin.to(device, dtype)

    def quantize_int8(self) -> int:
        """Projections and the LM head on int8 weights (kernels/int8_linear) where their input dimension allows;
        the embedding table stays. Returns how many were quantized."""
        tied = self.lm_head.weight is getattr(self.embed, "weight", None)
        return sum(
            m.quantize_int8(keep_weight=tied and m is self.lm_head) for m in self.modules() if isinstance(m, Linear)
        )

    def use_weight_blocks(self) -> int:
        """CPU fp32: projections whose weights are exactly GGUF Q4_1/Q8_0 blocks (a GGUF model, dequantized by the
        loader) run on those blocks (kernels/block_linear): the same weights bit for bit, read at 0.75-1.125 bytes
        each instead of 4. A tied embedding then looks its rows up in the LM head's blocks. Returns how many do."""
        w = self.norm.weight
        if w.device.type != "cpu" or w.dtype != torch.float32 or not block_linear.available():
            return 0
        tied = self.lm_head.weight is getattr(self.embed, "weight", None)
        dense = [m for m in self.modules() if isinstance(m, Linear) and m.qweight is None and m.blocks is None]
        n = sum(m.use_blocks(keep_weight=tied and m is self.lm_head) for m in dense)
        if tied and self.lm_head.blocks is not None:
            self._embed_from_lm_head()
        return n

    def pack_weights(self) -> bool:
        """CPU bf16: run every projection on packed weights (our bf16 kernel's panels, else oneDNN's layout; see
        `Linear.pack`); True if all of them were packed.

        Only bf16 on CPU: fp32 is the dtype whose parity with transformers is exact, and packed kernels sum in
        another order than F.linear (MKL). Packed weights replace the originals; a tied embedding then looks its
        rows up in the LM head's panels, or keeps the table where the LM head is on oneDNN's layout. Projections
        already on int8 weights stay so.
        """
        w = self.norm.weight  # the model's device and dtype (the embedding may be a TiedEmbedding)
        if w.device.type != "cpu" or w.dtype != torch.bfloat16 or not torch.backends.mkldnn.is_available():
            return False
        tied = self.lm_head.weight is getattr(self.embed, "weight", None)
        dense = [m for m in self.modules() if isinstance(m, Linear) and m.qweight is None]
        packed = bool(dense) and all([m.pack(keep_weight=tied and m is self.lm_head) for m in dense])
        if tied and self.lm_head.panels is not None:
            self._embed_from_lm_head()
        return packed

    def _embed_from_lm_head(self) -> None:
        """The tied embedding reads its rows out of the LM head's packed copy from now on; the table itself goes."""
        self.embed = TiedEmbedding(self.lm_head)  # type: ignore[assignment]
        self.lm_head.weight = nn.Parameter(self.norm.weight.new_empty(0), requires_grad=False)

    def forward(self, b: ForwardBatch, kv_caches: list[tuple[Tensor, Tensor]]) -> Tensor:
        """Logits [R, V] (fp32) at `b.logit_rows`, after writing the K/V of all T tokens into the cache."""
        if self.rope_cos is None or self.rope_sin is None:
            raise RuntimeError("setup_rope() must run before forward()")
        x = self.embed(b.input_ids)  # [T, dim]
        cos = self.rope_cos.index_select(0, b.positions)  # [T, D]
        sin = self.rope_sin.index_select(0, b.positions)
        delta: Tensor | None = None
        for layer, (kc, vc) in zip(self.layers, kv_caches):
            x, delta = layer(x, delta, b, cos, sin, kc, vc)
        assert delta is not None  # a model has layers
        # The LM head only where someone samples: the last residual add and the final norm on those rows alone.
        _, x = fused.add_rms_norm(
            x.index_select(0, b.logit_rows), delta.index_select(0, b.logit_rows), self.norm.weight, self.norm.eps
        )  # [R, dim]
        return self.lm_head.forward_fp32(x)  # [R, V]

    @classmethod
    def from_hf(cls, config: Any, tensors: Mapping[str, Tensor], device: torch.device, dtype: torch.dtype) -> Llama:
        """Build from HF config + HF-named tensors (model.layers.{i}.self_attn.q_proj.weight, ...).

        Each tensor is read and cast on its own (the loader's mapping is lazy), so loading never holds the stored
        (often fp32) model beside the cast one.
        """
        args = ModelArgs.from_hf_config(config)

        def key(name: str) -> str:  # HF names carry a `model.` prefix, or not
            return f"model.{name}" if f"model.{name}" in tensors else name

        def has(name: str) -> bool:
            return key(name) in tensors

        def get(*names: str) -> Tensor:  # one tensor, or several concatenated (fused projections), cast
            parts = [tensors[key(n)].to(device=device, dtype=dtype) for n in names]
            return parts[0] if len(parts) == 1 else torch.cat(parts)

        qkv_bias, o_bias = has("layers.0.self_attn.q_proj.bias"), has("layers.0.self_attn.o_proj.bias")
        mlp_bias = has("layers.0.mlp.gate_proj.bias")
        with torch.device("meta"):
            model = cls(args, qkv_bias, o_bias, mlp_bias)
        tied = args.tie_word_embeddings or not has("lm_head.weight")
        sd: dict[str, Tensor] = {"embed.weight": get("embed_tokens.weight"), "norm.weight": get("norm.weight")}
        sd["lm_head.weight"] = sd["embed.weight"] if tied else get("lm_head.weight")
        for i in range(args.n_layers):
            p, a, m = f"layers.{i}.", f"layers.{i}.self_attn.", f"layers.{i}.mlp."
            sd[p + "attn.wqkv.weight"] = get(*(a + n + ".weight" for n in ("q_proj", "k_proj", "v_proj")))
            sd[p + "attn.wo.weight"] = get(a + "o_proj.weight")
            sd[p + "mlp.w_gate_up.weight"] = get(m + "gate_proj.weight", m + "up_proj.weight")
            sd[p + "mlp.w_down.weight"] = get(m + "down_proj.weight")
            sd[p + "attn_norm.weight"] = get(p + "input_layernorm.weight")
            sd[p + "mlp_norm.weight"] = get(p + "post_attention_layernorm.weight")
            if qkv_bias:
                sd[p + "attn.wqkv.bias"] = get(*(a + n + ".bias" for n in ("q_proj", "k_proj", "v_proj")))
            if o_bias:
                sd[p + "attn.wo.bias"] = get(a + "o_proj.bias")
            if mlp_bias:
                sd[p + "mlp.w_gate_up.bias"] = get(m + "gate_proj.bias", m + "up_proj.bias")
                sd[p + "mlp.w_down.bias"] = get(m + "down_proj.bias")
        model.load_state_dict(sd, strict=True, assign=True)
        if tied:  # one tensor, not two copies
            model.lm_head.weight = model.embed.weight
        return model.eval().requires_grad_(False)
