"""The decoding loop: MTP-verified output equals plain greedy output, token for token."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.conftest import make_tiny_model
from unisono.decode.generate import GenerationConfig, generate
from unisono.decode.sampling import SamplingConfig


def left_pad(model, prompts: list[list[int]]):
    L = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), L), model.vocab.pad_id)
    mask = torch.zeros(len(prompts), L, dtype=torch.bool)
    for b, p in enumerate(prompts):
        ids[b, L - len(p) :] = torch.tensor(p)
        mask[b, L - len(p) :] = True
    return model.embed_tokens(ids), mask


def text_allowed(model) -> torch.Tensor:
    allowed = torch.zeros(model.vocab.size, dtype=torch.bool)
    allowed[: model.vocab.n_text] = True
    allowed[model.vocab.end_id] = True
    return allowed


def run(model, prompts, mtp: bool, max_new_tokens: int = 24, proposer=None, n_drafts=None):
    emb, mask = left_pad(model, prompts)
    cfg = GenerationConfig(max_new_tokens=max_new_tokens, mtp=mtp, n_drafts=n_drafts, stop_ids=(model.vocab.end_id,))
    return generate(model, emb, mask, cfg, allowed=text_allowed(model), proposer=proposer)


@pytest.fixture(scope="module", params=["qwen3", "qwen3_moe", "llama"])
def model64(request, tiny_tokenizer):
    # float64 so that feeding 6 tokens at once or 1 at a time rounds alike
    return make_tiny_model(tiny_tokenizer, request.param).double()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mtp_equals_greedy_single_and_batched(model64, data):
    n_text = model64.vocab.n_text
    prompts = data.draw(
        st.lists(st.lists(st.integers(0, n_text - 1), min_size=1, max_size=12), min_size=1, max_size=4)
    )
    greedy = run(model64, prompts, mtp=False)
    mtp = run(model64, prompts, mtp=True)
    assert mtp.tokens == greedy.tokens
    assert mtp.stopped == greedy.stopped
    # batched equals one at a time
    for b, p in enumerate(prompts):
        assert run(model64, [p], mtp=True).tokens[0] == greedy.tokens[b]
    assert greedy.stats.tokens_per_pass == 1.0
    assert mtp.stats.passes <= greedy.stats.passes


class OracleProposer:
    """Drafts the known greedy continuation, corrupted at random: exercises every accept count."""

    def __init__(self, reference: list[list[int]], prompt_lens: list[int], K: int, p_wrong: float, seed: int):
        self.reference, self.prompt_lens, self.K, self.p_wrong = reference, prompt_lens, K, p_wrong
        self.rng = torch.Generator().manual_seed(seed)

    def record(self, positions, embeds, hidden, valid):
        pass

    def propose(self, n, pending, active, allowed):
        drafts = torch.zeros(len(n), self.K, dtype=torch.long)
        for b in range(len(n)):
            done = int(n[b]) - self.prompt_lens[b] + 1  # generated tokens known so far, pending included
            for i in range(self.K):
                j = done + i
                ref = self.reference[b]
                tok = ref[j] if j < len(ref) else 0
                if torch.rand(1, generator=self.rng).item() < self.p_wrong:
                    tok = (tok + 1) % 50
                drafts[b, i] = tok
        return drafts


@pytest.mark.parametrize("p_wrong", [0.0, 0.3])
def test_verification_with_oracle_drafts(tiny_tokenizer, p_wrong):
    model = make_tiny_model(tiny_tokenizer, "qwen3", seed=3).double()
    prompts = [[1, 2, 3, 4, 5], [9, 8], [7, 7, 7, 7, 7, 7, 7]]
    greedy = run(model, prompts, mtp=False, max_new_tokens=40)
    oracle = OracleProposer(greedy.tokens, [len(p) for p in prompts], K=5, p_wrong=p_wrong, seed=1)
    out = run(model, prompts, mtp=True, max_new_tokens=40, proposer=oracle, n_drafts=5)
    assert out.tokens == greedy.tokens
    if p_wrong == 0.0:
        # perfect drafts: six tokens per pass, up to the tail
        assert out.stats.tokens_per_pass > 4.0
        assert out.stats.acceptance_rate[0] > 0.9
    else:
        assert 0 < out.stats.mean_accepted < 5
        assert set(k for k, c in enumerate(out.stats.accepted_hist) if c) >= {0, 1}


def test_sampling_is_seeded_and_respects_allowed(tiny_tokenizer):
    model = make_tiny_model(tiny_tokenizer, "qwen3")
    emb, mask = left_pad(model, [[1, 2, 3]])
    allowed = text_allowed(model)
    cfg = GenerationConfig(max_new_tokens=20, sampling=SamplingConfig(temperature=1.0, top_k=20, seed=7), stop_ids=(model.vocab.end_id,))
    a = generate(model, emb, mask, cfg, allowed=allowed)
    b = generate(model, emb, mask, cfg, allowed=allowed)
    assert a.tokens == b.tokens
    assert all(allowed[t] for t in a.tokens[0])
    assert a.stats.n_branches == 0  # sampling never drafts


def test_max_new_tokens_and_errors(tiny_tokenizer):
    model = make_tiny_model(tiny_tokenizer, "qwen3")
    out = run(model, [[1, 2]], mtp=True, max_new_tokens=3)
    assert len(out.tokens[0]) <= 3
    emb, mask = left_pad(model, [[1, 2]])
    with pytest.raises(ValueError, match="stop_ids"):
        generate(model, emb, mask, GenerationConfig())


def test_the_model_default_draft_count_is_used_when_none_is_asked(tiny_tokenizer, tmp_path):
    from unisono.model.unisono import Unisono

    model = make_tiny_model(tiny_tokenizer).double()
    prompts = [[5, 6, 7, 8], [9, 10]]
    greedy = run(model, prompts, mtp=False)
    assert run(model, prompts, mtp=True).stats.n_branches == 5  # no default recorded: every branch
    model.config.mtp.default_drafts = 2
    model.save(tmp_path / "m")
    again = Unisono.load(tmp_path / "m").double()
    assert again.config.mtp.default_drafts == 2
    out = run(again, prompts, mtp=True)
    assert out.stats.n_branches == 2 and out.tokens == greedy.tokens
    assert run(again, prompts, mtp=True, n_drafts=4).stats.n_branches == 4  # the caller's choice wins


@pytest.fixture(scope="module")
def qwen64(tiny_tokenizer):
    return make_tiny_model(tiny_tokenizer, "qwen3", seed=11).double()


RAGGED_PROMPTS = st.lists(st.lists(st.integers(0, 299), min_size=1, max_size=100), min_size=2, max_size=6)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompts=RAGGED_PROMPTS, words=st.lists(st.integers(0, 299), min_size=1, max_size=3, unique=True),
       max_new=st.sampled_from([8, 32, 64]), n_drafts=st.sampled_from([1, 3, 5]), row=st.integers(0, 5))
# a batch in which finished rows once ran past the proposer's buffers (RuntimeError: index out of bounds)
@example(prompts=[[299, 215, 76, 233, 60, 128], [238, 80, 77, 213, 0], [251, 128, 62, 38], [97, 0], [0, 0, 0, 0, 209]],
         words=[0, 233], max_new=8, n_drafts=1, row=0)
def test_mtp_equals_greedy_on_ragged_batches_with_long_prompts(qwen64, prompts, words, max_new, n_drafts, row):
    """Rows of very different prompt lengths that finish at different passes, with drafts often accepted.

    A handful of allowed tokens makes the random MTP branches guess right often and lets rows reach
    the stop token at different times: finished rows sit in the batch while the others decode on,
    as a long file's segments do when they are batched."""
    model = qwen64
    assert model.vocab.n_text > 299
    allowed = torch.zeros(model.vocab.size, dtype=torch.bool)
    allowed[words] = True
    allowed[model.vocab.end_id] = True
    emb, mask = left_pad(model, prompts)

    def decode(mtp: bool, rows=slice(None)):
        cfg = GenerationConfig(max_new_tokens=max_new, mtp=mtp, n_drafts=n_drafts, stop_ids=(model.vocab.end_id,))
        return generate(model, emb[rows], mask[rows], cfg, allowed=allowed)

    greedy, fast = decode(False), decode(True)
    assert fast.tokens == greedy.tokens and fast.stopped == greedy.stopped
    assert fast.stats.passes <= greedy.stats.passes
    row = row % len(prompts)  # a row decodes alike alone and among others
    assert decode(True, [row]).tokens[0] == greedy.tokens[row]


def test_a_draft_vocabulary_keeps_the_greedy_output_and_drafts_only_from_it(tiny_tokenizer, tmp_path):
    from unisono.decode.propose import MTPProposer
    from unisono.model.mtp import frequent_tokens
    from unisono.model.unisono import Unisono

    model = make_tiny_model(tiny_tokenizer, mtp__draft_vocab_size=40).double()
    assert model.mtp.draft_vocabulary is None  # not counted yet: drafts over every token
    prompts = [[5, 6, 7, 8, 9], [9, 10], [11, 12, 13]]
    greedy = run(model, prompts, mtp=False)
    # the draft set: the tokens the greedy decode writes, the stop token, then others
    ids = frequent_tokens(greedy.tokens + [list(range(100))], 40, always=[model.vocab.end_id])
    model.mtp.set_draft_vocabulary(ids)
    fast = run(model, prompts, mtp=True)
    assert fast.tokens == greedy.tokens and fast.stopped == greedy.stopped
    assert fast.stats.passes <= greedy.stats.passes

    # a draft is the best allowed token of the set, as the full head scores it
    proposer = MTPProposer(model.mtp, model.embed_tokens, model.logits, model.head_rows, 1, 64,
                           model.config.decoder.hidden_size, 2, torch.device("cpu"), torch.float64)
    hidden = torch.randn(8, model.config.decoder.hidden_size, dtype=torch.float64)
    allowed = text_allowed(model)
    allowed[ids[5:10]] = False
    in_set = torch.zeros(model.vocab.size, dtype=torch.bool)
    in_set[ids] = True
    reference = model.logits(hidden).masked_fill(~(allowed & in_set), float("-inf")).argmax(-1)
    assert torch.equal(proposer._draft(hidden, allowed), reference)

    # the set travels with the checkpoint, and drafts from an int8 head (dequantised rows) are verified alike
    model.save(tmp_path / "m")
    assert torch.equal(Unisono.load(tmp_path / "m").mtp.draft_vocabulary, ids)
    int8 = Unisono.load(tmp_path / "m", compute_type="int8")
    assert torch.equal(int8.mtp.draft_vocabulary, ids)
    assert run(int8, prompts, mtp=True).tokens == run(int8, prompts, mtp=False).tokens


def test_frequent_tokens_ranks_by_count_after_the_tokens_always_kept():
    from unisono.model.mtp import frequent_tokens

    ids = frequent_tokens([[3, 3, 7, 1], [7, 3, 2, 9, 9]], 4, always=[9, 50])
    assert ids.tolist() == [9, 50, 3, 7]  # 3 thrice, 7 twice; 9 is kept first, not counted again
    assert frequent_tokens([[1]], 5, always=[]).tolist() == [1]
