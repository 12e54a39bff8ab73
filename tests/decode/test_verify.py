"""Verification from hand-made greedy choices (vLLM's rejection-sampler tests, greedy case)."""

import torch

from unisono.decode.stats import DecodeStats
from unisono.decode.verify import accepted_lengths, bonus_tokens


def test_perfect_match():
    drafts = torch.tensor([[5, 7, 9]])
    greedy = torch.tensor([[5, 7, 9, 4]])
    acc = accepted_lengths(drafts, greedy)
    assert acc.tolist() == [3] and bonus_tokens(greedy, acc).tolist() == [4]


def test_early_mismatch_stops_at_first_difference():
    drafts = torch.tensor([[5, 7, 9], [1, 2, 3]])
    greedy = torch.tensor([[5, 8, 9, 4], [0, 2, 3, 3]])  # row 0 breaks at 2nd, row 1 at 1st
    acc = accepted_lengths(drafts, greedy)
    assert acc.tolist() == [1, 0]
    assert bonus_tokens(greedy, acc).tolist() == [8, 0]


def test_empty_proposal_is_plain_greedy():
    drafts = torch.zeros(2, 0, dtype=torch.long)
    greedy = torch.tensor([[3], [6]])
    acc = accepted_lengths(drafts, greedy)
    assert acc.tolist() == [0, 0] and bonus_tokens(greedy, acc).tolist() == [3, 6]


def test_ragged_proposals():
    drafts = torch.tensor([[5, 7, 9], [5, 7, 9]])
    greedy = torch.tensor([[5, 7, 9, 1], [5, 7, 9, 1]])
    acc = accepted_lengths(drafts, greedy, n_drafts=torch.tensor([3, 1]))
    assert acc.tolist() == [3, 1]


def test_stats_acceptance_by_position():
    s = DecodeStats(n_branches=3)
    s.record_verification(3, 3)  # all accepted
    s.record_verification(3, 1)  # 1st accepted, 2nd rejected, 3rd never judged
    s.record_verification(3, 0)
    assert s.position_proposed == [3, 2, 1]
    assert s.position_accepted == [2, 1, 1]
    assert s.acceptance_rate == [2 / 3, 1 / 2, 1.0]
    assert s.accepted_hist == [1, 1, 0, 1]
    assert abs(s.mean_accepted - 4 / 3) < 1e-9
