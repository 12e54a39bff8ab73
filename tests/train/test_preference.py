"""Preference losses against hand-computed values, and log-probabilities against the model's own loss."""

from __future__ import annotations

import math

import pytest
import torch

from unisono.train.preference import dpo_loss, model_logps, sequence_logps


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_dpo_ipo_and_offset_by_hand():
    pc, pr, rc, rr = (torch.tensor(v) for v in ([-10.0, -4.0], [-12.0, -3.0], [-11.0, -4.0], [-11.0, -4.0]))
    # logits = (pc - pr) - (rc - rr) = [2, -1]
    losses, chosen, rejected = dpo_loss(pc, pr, rc, rr, beta=0.5)
    assert losses.tolist() == pytest.approx([-math.log(sig(1.0)), -math.log(sig(-0.5))])
    assert chosen.tolist() == pytest.approx([0.5, 0.0]) and rejected.tolist() == pytest.approx([-0.5, 0.5])
    smooth, _, _ = dpo_loss(pc, pr, rc, rr, beta=0.5, label_smoothing=0.1)
    assert smooth[0].item() == pytest.approx(-0.9 * math.log(sig(1.0)) - 0.1 * math.log(sig(-1.0)))
    ipo, _, _ = dpo_loss(pc, pr, rc, rr, beta=0.5, loss_type="ipo")
    assert ipo.tolist() == pytest.approx([(2 - 1) ** 2, (-1 - 1) ** 2])
    offset, _, _ = dpo_loss(pc, pr, rc, rr, beta=0.5, loss_type="offset", margin=torch.tensor([0.4, 0.0]), offset_scale=2.0)
    assert offset.tolist() == pytest.approx([-math.log(sig(1.0 - 0.8)), -math.log(sig(-0.5))])
    with pytest.raises(ValueError, match="margins"):
        dpo_loss(pc, pr, rc, rr, loss_type="offset")
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(pc, pr, rc, rr, beta=0.0)


def test_the_gradient_moves_the_policy_towards_the_chosen_answer():
    pc, pr = torch.tensor([-5.0], requires_grad=True), torch.tensor([-5.0], requires_grad=True)
    losses, _, _ = dpo_loss(pc, pr, torch.tensor([-5.0]), torch.tensor([-5.0]), beta=0.1)
    losses.sum().backward()
    assert pc.grad.item() < 0 < pr.grad.item()  # descent raises log π(chosen), lowers log π(rejected)
    assert pc.grad.item() == pytest.approx(-0.1 * 0.5)  # -β σ(0)


def test_sequence_logps_sum_only_the_targets():
    logits = torch.randn(2, 4, 7)
    targets = torch.tensor([[-100, 3, 1, -100], [2, -100, -100, 6]])
    logp = torch.log_softmax(logits, -1)
    expected = [logp[0, 1, 3] + logp[0, 2, 1], logp[1, 0, 2] + logp[1, 3, 6]]
    assert sequence_logps(logits, targets).tolist() == pytest.approx([e.item() for e in expected], abs=1e-5)


def test_model_logps_match_the_models_own_loss(tiny_tokenizer):
    from tests.conftest import make_tiny_model
    from unisono.model.unisono import Batch

    tiny_model = make_tiny_model(tiny_tokenizer)
    torch.manual_seed(0)
    ids = torch.randint(0, tiny_model.vocab.size, (2, 9))
    targets = ids.clone()
    targets[:, :5] = -100  # the prompt is context
    mask = torch.ones_like(ids, dtype=torch.bool)
    logps = model_logps(tiny_model, ids, mask, targets)
    out = tiny_model(Batch(ids, mask, targets), mtp=False)
    assert (-logps.sum() / 8).item() == pytest.approx(out.logs["loss_main"], rel=1e-4)  # 4 targets a row
