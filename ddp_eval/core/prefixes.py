"""Rows of a batch -> shared token prefixes plus each row's own suffix (pure: token ids in, ids out).

Rows that show the same image often share their prompt up to the question (a benchmark that asks
several questions of one image, or rotates the options of one question), so the system prompt, the
image's tokens and the shared text can be prefilled once and their KV cache reused for every row.
Rows may share a prefix only where they show the same image, and a shared prefix holds all of their
image tokens, so a suffix is plain text. Every row keeps at least its last token as its own: that
position's logits start its reply.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass


@dataclass
class SharedPrefixes:
    prefixes: list[list[int]]  # token ids of each distinct prefix
    suffixes: list[list[int]]  # per row: its tokens after its prefix (at least one)
    owner: list[int]  # per row: the index of its prefix
    image_key: list[Hashable]  # per prefix: the image it shows


def common_prefix_length(rows: Sequence[Sequence[int]]) -> int:
    shortest = min(len(r) for r in rows)
    for i in range(shortest):
        token = rows[0][i]
        if any(r[i] != token for r in rows[1:]):
            return i
    return shortest


def split_shared_prefixes(rows: Sequence[Sequence[int]], image_keys: Sequence[Hashable],
                          image_ends: Sequence[int]) -> SharedPrefixes:
    """`image_ends[i]`: one past row i's last image token, which every prefix of row i must reach."""
    members: dict[Hashable, list[int]] = {}
    for i, key in enumerate(image_keys):
        members.setdefault(key, []).append(i)
    out = SharedPrefixes(prefixes=[], suffixes=[[] for _ in rows], owner=[0] * len(rows), image_key=[])
    for key, group in members.items():
        length = min(common_prefix_length([rows[i] for i in group]), min(len(rows[i]) for i in group) - 1)
        if len(group) > 1 and length < max(image_ends[i] for i in group):
            parts = [[i] for i in group]  # same image, different text before it ends: nothing to share
        else:
            parts = [group]
        for part in parts:
            cut = length if len(part) > 1 else len(rows[part[0]]) - 1
            if cut < max(image_ends[i] for i in part):
                raise ValueError(f"row {part[0]}'s image tokens reach its last token; no text suffix to decode from")
            for i in part:
                out.owner[i] = len(out.prefixes)
                out.suffixes[i] = list(rows[i][cut:])
            out.prefixes.append(list(rows[part[0]][:cut]))
            out.image_key.append(key)
    return out

