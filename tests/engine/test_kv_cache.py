"""KV cache bookkeeping without a model: block pool refcounts, LRU eviction, prefix hashes keyed by salt/adapter."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from llmaas.engine.kv_cache import BlockPool, KVCacheManager


@dataclass
class Req:
    request_id: str
    all_token_ids: list[int]
    num_computed_tokens: int = 0
    cache_salt: str | None = None
    adapter_id: str | None = None
    block_hashes: list[bytes] = field(default_factory=list)
    use_prefix_cache: bool = True


def run_prefill(kv: KVCacheManager, req: Req) -> int:
    """Admit a request as the scheduler would and compute all its tokens; returns the cached-token count."""
    hits, n = kv.get_computed_blocks(req)
    assert kv.allocate_slots(req, len(req.all_token_ids) - n, hits)
    req.num_computed_tokens = len(req.all_token_ids)
    kv.cache_full_blocks(req)
    return n


def test_pool_allocate_free_refcounts() -> None:
    pool = BlockPool(4)
    a = pool.allocate(3)
    assert pool.num_free == 1 and [b.ref_cnt for b in a] == [1, 1, 1]
    with pytest.raises(ValueError):
        pool.allocate(2)
    pool.free(a)
    assert pool.num_free == 4
    with pytest.raises(RuntimeError):
        pool.free(a[:1])


def test_prefix_hit_shares_blocks_and_leaves_one_token() -> None:
    kv = KVCacheManager(num_blocks=16, block_size=4)
    prompt = list(range(10, 22))  # 12 tokens = 3 full blocks
    a = Req("a", list(prompt))
    assert run_prefill(kv, a) == 0
    b = Req("b", list(prompt))
    # the last token must be computed for its logits: only 2 of the 3 full blocks are hits
    assert run_prefill(kv, b) == 8
    assert kv.block_ids("a")[:2] == kv.block_ids("b")[:2]
    assert kv.pool.blocks[kv.block_ids("a")[0]].ref_cnt == 2
    c = Req("c", prompt + [99, 98])
    assert run_prefill(kv, c) == 12
    assert kv.stats.queries == 0  # the scheduler counts queries (once per admitted request)


@pytest.mark.parametrize("other", [{"cache_salt": "tenant-b"}, {"adapter_id": "lora-1"}])
def test_prefix_never_shared_across_salt_or_adapter(other: dict) -> None:
    kv = KVCacheManager(num_blocks=16, block_size=4)
    prompt = list(range(40, 53))
    run_prefill(kv, Req("a", list(prompt), cache_salt="tenant-a"))
    assert run_prefill(kv, Req("b", list(prompt), **{"cache_salt": "tenant-a", **other})) == 0
    assert run_prefill(kv, Req("c", list(prompt), cache_salt="tenant-a")) == 12


def test_freed_blocks_stay_cached_until_evicted_lru() -> None:
    kv = KVCacheManager(num_blocks=6, block_size=2)
    a = Req("a", [1, 2, 3, 4, 5])
    run_prefill(kv, a)
    kv.free(a)
    assert kv.num_used == 0
    assert run_prefill(kv, Req("b", [1, 2, 3, 4, 5])) == 4  # hit after free
    kv.free(Req("b", []))
    # fill the pool with other content: the cached blocks get evicted, and never handed out twice
    c = Req("c", list(range(100, 112)))
    run_prefill(kv, c)
    assert kv.num_used == 6
    assert len(set(kv.block_ids("c"))) == 6
    assert not kv.allocate_slots(Req("d", [1]), 1)
    kv.free(c)
    assert run_prefill(kv, Req("e", [1, 2, 3, 4, 5])) == 0


def test_allocate_slots_is_all_or_nothing() -> None:
    kv = KVCacheManager(num_blocks=3, block_size=4)
    a = Req("a", list(range(8)))
    run_prefill(kv, a)
    big = Req("big", list(range(50, 60)))
    assert not kv.allocate_slots(big, 10)
    assert kv.block_ids("big") == [] and kv.num_used == 2
    # decode growth crosses into a new block only when the last one is full
    a.all_token_ids.append(7)
    assert kv.allocate_slots(a, 1) and len(kv.block_ids("a")) == 3
    a.num_computed_tokens += 1
    a.all_token_ids.append(8)
    assert kv.allocate_slots(a, 1) and len(kv.block_ids("a")) == 3


def test_echo_requests_skip_prefix_cache() -> None:
    kv = KVCacheManager(num_blocks=8, block_size=2)
    run_prefill(kv, Req("a", [1, 2, 3, 4, 5]))
    assert run_prefill(kv, Req("b", [1, 2, 3, 4, 5], use_prefix_cache=False)) == 0
