"""Jaccard similarity over character shingles, checked against plain Python sets."""

from __future__ import annotations

import time

import numpy as np
import pytest

from grasp_pipeline.corpus import cut_examples, load_documents, max_jaccard, near_duplicate_mask


def shingles(text: str, k: int) -> set[str]:
    return {text} if len(text) < k else {text[i:i + k] for i in range(len(text) - k + 1)}


def brute_jaccard(a: list[str], b: list[str], k: int) -> np.ndarray:
    sa, sb = [shingles(t, k) for t in a], [shingles(t, k) for t in b]
    return np.array([[len(x & y) / len(x | y) for y in sb] for x in sa])


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """Short random texts over a small alphabet (non-ASCII included), some shorter than k, plus edited
    copies, so the similarities spread over [0, 1]."""
    rng = np.random.default_rng(7)
    base = ["".join(rng.choice(list("abcé中 "), size=rng.integers(0, 40))) for _ in range(60)]
    edited = []
    for text in base[:20]:
        chars = list(text)
        for i in rng.integers(0, max(len(chars), 1), size=2):
            if chars:
                chars[i] = "z"
        edited.append("".join(chars))
    return base + edited + base[:3]  # exact copies too


@pytest.mark.parametrize("k", [1, 4, 16])
def test_max_jaccard_equals_the_set_computation(texts, k):
    queries, against = texts[::2], texts[1::2]
    expected = brute_jaccard(queries, against, k)
    best, index = max_jaccard(queries, against, k=k)
    assert np.allclose(best, expected.max(axis=1))
    assert index.tolist() == expected.argmax(axis=1).tolist()  # the first of the best on ties


@pytest.mark.parametrize("threshold", [0.3, 0.5, 1.0])
def test_near_duplicate_mask_flags_texts_near_an_earlier_one(texts, threshold):
    similarity = brute_jaccard(texts, texts, 4)
    expected = [bool((similarity[i, :i] >= threshold).any()) for i in range(len(texts))]
    assert near_duplicate_mask(texts, threshold, k=4).tolist() == expected
    assert any(expected) and not all(expected)


def test_max_jaccard_against_nothing_is_zero_at_index_minus_one():
    best, index = max_jaccard(["some text"], [])
    assert best.tolist() == [0.0] and index.tolist() == [-1]
    assert max_jaccard([], ["x"])[0].size == 0


def test_near_duplicate_mask_takes_seconds_at_most_for_4000_pieces():
    documents, _ = load_documents(None)
    pieces = cut_examples(documents, 128)["text"].to_list()[:4000]
    start = time.perf_counter()
    mask = near_duplicate_mask(pieces, 0.5)
    assert time.perf_counter() - start < 3.0
    assert mask.any() and not mask.all()
    for i in [*np.flatnonzero(mask)[:20], *np.flatnonzero(~mask)[1:21]]:  # spot checks against earlier pieces
        assert (max_jaccard([pieces[i]], pieces[:i])[0][0] >= 0.5) == mask[i]
