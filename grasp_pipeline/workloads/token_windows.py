"""Token windows: a document tokenized once, cut into windows of a fixed number of tokens.

An LM proxy should see what a pretraining run sees: full context windows of one
tokenization of the document, not byte pieces tokenized one by one (which waste the
context on padding and split words at arbitrary bytes). The corpus stage stores text, and
every stage re-encodes an example's text, so a window's text is the document's own span
of the window's tokens and a cut is kept only where that span re-tokenizes to exactly the
window's tokens: for byte-level BPE (GPT-2) every clean token boundary does, since BPE
never merges across a boundary of its final segmentation. Where it does not (a boundary
inside a UTF-8 character, or a tokenizer whose pre-tokenization depends on context), the
cut backs off token by token, so such a window is a few tokens short.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

Spans = Callable[[str], tuple[Sequence[int], Sequence[tuple[int, int]]]]  # text -> (ids, char spans)
Tokenize = Callable[[list[str]], Sequence[Sequence[int]]]  # texts -> their token ids

BACKOFF = 8  # at most this many shorter cuts are tried before a window is taken as it is
LOOKAHEAD = 64  # plain windows checked per batch (after a back-off the rest shifts, so checks are redone)


def window_bounds(text: str, ids: Sequence[int], offsets: Sequence[tuple[int, int]], tokenize: Tokenize,
                  max_tokens: int) -> list[tuple[int, int]]:
    """[(first token, end token)] of the windows of a document tokenized as `ids` (character
    `offsets`): max_tokens tokens each (fewer where a cut backs off), the last one the rest;
    a rest shorter than max_tokens // 2 tokens is dropped (as byte pieces drop short tails).

    Plain windows are checked LOOKAHEAD at a time in one batch; at the first that does not
    re-tokenize to its own tokens that cut backs off, and checking resumes from it.
    """
    ids, n = list(ids), len(ids)
    least = max(1, max_tokens // 2)
    bounds, start = [], 0
    while n - start >= least:
        plain = [(a, min(a + max_tokens, n))
                 for a in range(start, min(n - least + 1, start + LOOKAHEAD * max_tokens), max_tokens)]
        texts = [text[offsets[a][0]:_char_end(offsets, b)] for a, b in plain]
        for (a, b), got in zip(plain, tokenize(texts)):
            if list(got) != ids[a:b] or b < n and offsets[b - 1][1] != offsets[b][0]:
                b = _stable_cut(text, ids, offsets, tokenize, a, b, max_tokens) if b < n else b
                bounds.append((a, b))
                start = b
                break
            bounds.append((a, b))
        else:
            start = plain[-1][1]
    return bounds


def _char_end(offsets: Sequence[tuple[int, int]], end: int) -> int:
    """The character where a window ending before token `end` ends (the next token's start)."""
    return offsets[end][0] if end < len(offsets) else offsets[-1][1]


def _stable_cut(text: str, ids: list[int], offsets, tokenize: Tokenize, start: int, end: int,
                max_tokens: int) -> int:
    """The largest cut ≤ end (within BACKOFF tokens) at a clean boundary whose window re-tokenizes
    to its own tokens; `end` when none does."""
    for cut in range(end, max(start + max_tokens // 2, end - BACKOFF, start + 1) - 1, -1):
        if offsets[cut - 1][1] != offsets[cut][0]:  # e.g. both tokens inside one character
            continue
        if list(tokenize([text[offsets[start][0]:offsets[cut][0]]])[0]) == ids[start:cut]:
            return cut
    return end


def window_byte_cuts(text: str, spans: Spans, tokenize: Tokenize, max_tokens: int) -> list[int]:
    """Byte offsets [start of the first window, end of the first = start of the second, …, end of
    the last] of a document's windows (`window_bounds`, one tokenization); [] when it has none."""
    ids, offsets = spans(text)
    bounds = window_bounds(text, ids, offsets, tokenize, max_tokens)
    if not bounds:
        return []
    data = text.encode("utf-8")
    if len(data) == len(text):  # ASCII: characters are bytes
        to_byte = np.arange(len(text) + 1)
    else:
        to_byte = np.append(np.flatnonzero((np.frombuffer(data, np.uint8) & 0xC0) != 0x80), len(data))
    chars = [offsets[bounds[0][0]][0]] + [_char_end(offsets, e) for _, e in bounds]
    return [int(to_byte[c]) for c in chars]
