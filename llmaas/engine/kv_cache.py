"""The paged KV cache's bookkeeping: a pool of fixed-size blocks, block tables, and prefix caching. Pure Python.

This file knows block ids, reference counts and content hashes; it never touches tensors (the runner owns the
KV tensors and addresses them by the block ids handed out here). A block of `block_size` tokens is *full* once
all its tokens are computed; a full block gets a content hash chained from its parent's, so a later request with
the same prefix (system prompt, n>1, multi-turn) reuses it instead of recomputing.

Prefix hashes are strong (blake2b) and the chain is rooted in the request's cache salt (tenant) and LoRA adapter:
two tenants, or two adapters, never share a block.

Freed blocks go to the tail of an LRU free queue and keep their hash, so they can still be hit until reused;
allocation takes the head (the least recently freed) and forgets its hash then.
"""

from __future__ import annotations

import hashlib
import struct
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(slots=True)
class Block:
    block_id: int
    ref_cnt: int = 0
    block_hash: bytes | None = None  # set once the block is full and registered in the prefix cache


class CacheableRequest(Protocol):
    """What the KV cache needs to know about a request (the scheduler's `Request` satisfies it)."""

    request_id: str
    all_token_ids: list[int]
    num_computed_tokens: int
    cache_salt: str | None
    adapter_id: str | None
    block_hashes: list[bytes]

    @property
    def use_prefix_cache(self) -> bool: ...


def _root_hash(cache_salt: str | None, adapter_id: str | None) -> bytes:
    key = repr(("llmaas-kv-v1", cache_salt, adapter_id)).encode()
    return hashlib.blake2b(key, digest_size=32).digest()


def hash_block(parent: bytes, token_ids: Sequence[int]) -> bytes:
    """Content hash of one full block: blake2b(parent hash + token ids)."""
    h = hashlib.blake2b(parent, digest_size=32)
    h.update(struct.pack(f"<{len(token_ids)}q", *token_ids))
    return h.digest()


class BlockPool:
    """Every KV block: a free queue in LRU order, refcounts, and the hash → block map of the prefix cache."""

    def __init__(self, num_blocks: int) -> None:
        if num_blocks < 1:
            raise ValueError("the KV cache needs at least one block")
        self.blocks = [Block(i) for i in range(num_blocks)]
        self._free: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))
        self._cached: dict[bytes, Block] = {}

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_free(self) -> int:
        """Blocks allocatable now (free ones, including cached-but-unreferenced ones that may be evicted)."""
        return len(self._free)

    def lookup(self, block_hash: bytes) -> Block | None:
        return self._cached.get(block_hash)

    def touch(self, blocks: Sequence[Block]) -> None:
        """Take a reference on prefix-cache hits (pulling free ones out of the free queue)."""
        for b in blocks:
            if b.ref_cnt == 0:
                del self._free[b.block_id]
            b.ref_cnt += 1

    def allocate(self, n: int) -> list[Block]:
        if n > len(self._free):
            raise ValueError(f"asked for {n} KV blocks, {len(self._free)} free")
        out = []
        for _ in range(n):
            block_id, _ = self._free.popitem(last=False)
            b = self.blocks[block_id]
            if b.block_hash is not None:  # evict from the prefix cache (least recently freed first)
                if self._cached.get(b.block_hash) is b:
                    del self._cached[b.block_hash]
                b.block_hash = None
            b.ref_cnt = 1
            out.append(b)
        return out

    def free(self, blocks: Sequence[Block]) -> None:
        """Drop one reference each; blocks reaching zero go to the tail of the free queue (kept cached)."""
        for b in blocks:
            b.ref_cnt -= 1
            if b.ref_cnt < 0:
                raise RuntimeError(f"KV block {b.block_id} freed twice")
            if b.ref_cnt == 0:
                self._free[b.block_id] = None

    def register(self, block: Block, block_hash: bytes) -> None:
        """Make a full block findable by its content hash (first writer wins; duplicates stay private)."""
        if block.block_hash is None and block_hash not in self._cached:
            block.block_hash = block_hash
            self._cached[block_hash] = block


@dataclass(slots=True)
class PrefixStats:
    queries: int = 0  # prompt tokens looked up
    hits: int = 0  # of which served from the cache


class KVCacheManager:
    """Block tables per request on top of a BlockPool: prefix lookup, slot allocation, caching and freeing."""

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        self.block_size = block_size
        self.pool = BlockPool(num_blocks)
        self.enable_prefix_caching = enable_prefix_caching
        self.tables: dict[str, list[Block]] = {}
        self._num_registered: dict[str, int] = {}  # leading blocks of each table already offered to the cache
        self.stats = PrefixStats()

    @property
    def num_blocks(self) -> int:
        return self.pool.num_blocks

    @property
    def num_used(self) -> int:
        return self.pool.num_blocks - self.pool.num_free

    def block_ids(self, request_id: str) -> list[int]:
        return [b.block_id for b in self.tables.get(request_id, ())]

    # --- prefix cache ----------------------------------------------------------------------------------

    def _update_hashes(self, req: CacheableRequest, num_tokens: int) -> None:
        """Extend req.block_hashes to cover every full block among its first `num_tokens` tokens."""
        bs = self.block_size
        hashes = req.block_hashes
        parent = hashes[-1] if hashes else _root_hash(req.cache_salt, req.adapter_id)
        for i in range(len(hashes), num_tokens // bs):
            parent = hash_block(parent, req.all_token_ids[i * bs : (i + 1) * bs])
            hashes.append(parent)

    def get_computed_blocks(self, req: CacheableRequest) -> tuple[list[Block], int]:
        """Longest cached prefix of the request's tokens: (blocks, number of tokens they hold).

        At least one token is always left to compute, because the step needs its logits to sample.
        """
        if not (self.enable_prefix_caching and req.use_prefix_cache):
            return [], 0
        num_tokens = len(req.all_token_ids)
        self._update_hashes(req, num_tokens)
        hits: list[Block] = []
        for h in req.block_hashes[: (num_tokens - 1) // self.block_size]:
            b = self.pool.lookup(h)
            if b is None:
                break
            hits.append(b)
        return hits, len(hits) * self.block_size

    def count_query(self, num_tokens: int, num_hit: int) -> None:
        self.stats.queries += num_tokens
        self.stats.hits += num_hit

    # --- allocation ------------------------------------------------------------------------------------

    def allocate_slots(self, req: CacheableRequest, num_new_tokens: int, computed: Sequence[Block] = ()) -> bool:
        """Make room for `num_new_tokens` more tokens after the computed ones. False (and no change) if full."""
        table = self.tables.get(req.request_id, [])
        num_computed = req.num_computed_tokens + len(computed) * self.block_size
        need = -(-(num_computed + num_new_tokens) // self.block_size) - len(table) - len(computed)
        reviving = sum(1 for b in computed if b.ref_cnt == 0)  # hits that leave the free queue
        if max(need, 0) + reviving > self.pool.num_free:
            return False
        self.pool.touch(computed)
        table = self.tables.setdefault(req.request_id, table)
        table.extend(computed)
        if need > 0:
            table.extend(self.pool.allocate(need))
        return True

    def cache_full_blocks(self, req: CacheableRequest) -> None:
        """After a step: register the blocks that just became full under their prefix hash."""
        if not (self.enable_prefix_caching and req.use_prefix_cache):
            return
        table = self.tables.get(req.request_id)
        if not table:
            return
        num_full = min(req.num_computed_tokens // self.block_size, len(table))
        start = self._num_registered.get(req.request_id, 0)
        if num_full <= start:
            return
        self._update_hashes(req, num_full * self.block_size)
        for i in range(start, num_full):
            if table[i].block_hash is None:
                self.pool.register(table[i], req.block_hashes[i])
        self._num_registered[req.request_id] = num_full

    def free(self, req: CacheableRequest) -> None:
        """Return the request's blocks; the tail first, so a shared prefix outlives the private suffix in LRU."""
        table = self.tables.pop(req.request_id, None)
        self._num_registered.pop(req.request_id, None)
        if table:
            self.pool.free(list(reversed(table)))


__all__ = ["Block", "BlockPool", "KVCacheManager", "PrefixStats", "hash_block"]
