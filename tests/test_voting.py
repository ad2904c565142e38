"""Voting: top-k is sorted, unique, at most k; votes sum to the number of slices; both rules."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from classifier.model import voting


@given(scores=arrays(np.float64, st.tuples(st.integers(1, 40), st.integers(1, 12)),
                     elements=st.floats(0, 1)), k=st.integers(1, 8), rule=st.sampled_from(voting.RULES))
def test_rank_properties(scores: np.ndarray, k: int, rule: str) -> None:
    labels = [f"a{i}" for i in range(scores.shape[1])]
    r = voting.rank(scores, labels, k=k, rule=rule)  # type: ignore[arg-type]
    names = [c.label for c in r.candidates]
    assert len(names) == min(k, len(labels)) and len(set(names)) == len(names)
    sc = [c.score for c in r.candidates]
    assert sc == sorted(sc, reverse=True)
    assert r.n_slices == scores.shape[0] == len(r.winners)
    # every slice votes exactly once (over all labels, not just the top k)
    all_votes = voting.rank(scores, labels, k=len(labels), rule=rule)  # type: ignore[arg-type]
    assert sum(c.votes for c in all_votes.candidates) == scores.shape[0]
    assert 0.0 <= r.vote_share <= 1.0


def test_mean_and_majority_can_disagree() -> None:
    # b wins 2 of 3 slices narrowly; a dominates the third: mean prefers a, majority prefers b.
    p = np.array([[0.45, 0.55], [0.45, 0.55], [0.99, 0.01]])
    assert voting.rank(p, ["a", "b"], rule="mean").candidates[0].label == "a"
    maj = voting.rank(p, ["a", "b"], rule="majority")
    assert maj.candidates[0].label == "b" and maj.candidates[0].votes == 2
    assert maj.vote_share == pytest.approx(2 / 3)


def test_empty_and_bad_shapes() -> None:
    assert voting.rank(np.zeros((0, 3)), ["a", "b", "c"]).candidates == ()
    with pytest.raises(ValueError):
        voting.rank(np.zeros((2, 3)), ["a", "b"])
