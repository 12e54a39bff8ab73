"""The unified model: decoder against transformers, audio placement, losses, checkpoint round trip."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import make_tiny_model
from unisono.model.mtp import branch_weights
from unisono.model.unisono import Batch, Unisono
from unisono.model.vocab import Audio, Special, Turn


@pytest.mark.parametrize("family", ["qwen3", "qwen3_moe", "llama"])
def test_decoder_path_matches_transformers_forward(tiny_tokenizer, family):
    model = make_tiny_model(tiny_tokenizer, family)
    ids = torch.randint(0, model.vocab.n_text, (2, 9))
    reference = model.decoder(input_ids=ids).logits  # transformers' own causal-LM forward
    ours = model.logits(model.decoder.model(inputs_embeds=model.embed_tokens(ids)).last_hidden_state)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


def _asr_batch(model: Unisono, n_mel_frames=(160, 96), texts=("the quick brown fox", "one two three")):
    mel = torch.randn(len(n_mel_frames), model.config.encoder.n_mels, max(n_mel_frames))
    mel_lengths = torch.tensor(n_mel_frames)
    feats, lengths = model.encode_audio(mel, mel_lengths)
    rows, targets = [], []
    for n, text in zip(lengths.tolist(), texts):
        p = model.vocab.encode_prompt(
            [Turn("user", [Special("asr"), Audio(n)]), Turn("assistant", [text])]
        )
        rows.append(p.ids)
        targets.append([-100] * p.target_start + p.ids[p.target_start :])
    L = max(map(len, rows))
    ids = torch.full((len(rows), L), model.vocab.pad_id)
    tg = torch.full((len(rows), L), -100)
    mask = torch.zeros(len(rows), L, dtype=torch.bool)
    for b, (r, t) in enumerate(zip(rows, targets)):
        ids[b, : len(r)], tg[b, : len(t)], mask[b, : len(r)] = torch.tensor(r), torch.tensor(t), True
    return Batch(input_ids=ids, attention_mask=mask, targets=tg, mel=mel, mel_lengths=mel_lengths)


def test_audio_fills_placeholders_in_order(tiny_tokenizer):
    model = make_tiny_model(tiny_tokenizer)
    batch = _asr_batch(model)
    feats, lengths = model.encode_audio(batch.mel, batch.mel_lengths)
    emb = model.embed_prompt(batch.input_ids, feats, lengths)
    for b in range(2):
        pos = (batch.input_ids[b] == model.vocab.audio_id).nonzero().flatten()
        torch.testing.assert_close(emb[b, pos], feats[b, : lengths[b]])
    with pytest.raises(ValueError, match="positions but the audio gives"):
        model.embed_prompt(batch.input_ids[:, :-3][:, :10], feats, lengths)
    with pytest.raises(ValueError, match="no audio"):
        model.embed_prompt(batch.input_ids)


def test_loss_is_next_token_plus_decayed_branch_losses(tiny_tokenizer):
    model = make_tiny_model(tiny_tokenizer)
    batch = _asr_batch(model)
    out = model(batch)
    logs = out.logs
    expected = logs["loss_main"] + sum(
        w * logs[f"loss_mtp{h}"] for h, w in enumerate(branch_weights(5, model.config.mtp.loss_weight_decay), 1) if f"loss_mtp{h}" in logs
    )
    assert abs(float(out.loss) - expected) < 1e-4
    # random weights: losses near log(V)
    assert abs(logs["loss_main"] - torch.log(torch.tensor(float(model.vocab.size)))) < 1.5
    # MTP stage 1: the main loss carries no gradient into the decoder
    model.zero_grad()
    model(batch, main=False).loss.backward()
    assert model.decoder.model.layers[0].mlp.down_proj.weight.grad is not None  # through the branches' inputs
    assert model.mtp.branches[0].proj.weight.grad is not None


def test_frozen_encoder_gets_no_gradient(tiny_tokenizer):
    model = make_tiny_model(tiny_tokenizer).train()
    model(_asr_batch(model)).loss.backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert model.adaptor.conv.weight.grad is not None


@pytest.mark.parametrize("family", ["qwen3", "qwen3_moe"])
def test_save_load_round_trip(tiny_tokenizer, tmp_path, family):
    from unisono.decode.generate import GenerationConfig, generate

    model = make_tiny_model(tiny_tokenizer, family)
    batch = _asr_batch(model)
    model.save(tmp_path / "ckpt")
    again = Unisono.load(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors", "tokenizer.json", "vocab.json"]
    with torch.no_grad():
        torch.testing.assert_close(again(batch).loss, model(batch).loss, rtol=0, atol=0)
    ids = torch.randint(0, model.vocab.n_text, (1, 6))
    cfg = GenerationConfig(max_new_tokens=12, stop_ids=(model.vocab.end_id,))
    a = generate(model, model.embed_tokens(ids), torch.ones(1, 6, dtype=torch.bool), cfg)
    b = generate(again, again.embed_tokens(ids), torch.ones(1, 6, dtype=torch.bool), cfg)
    assert a.tokens == b.tokens


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        Unisono.load(tmp_path)


def test_decoder_from_local_checkpoint_keeps_text_embeddings(tiny_tokenizer, tmp_path):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from unisono.model.config import UnisonoConfig
    from unisono.model.decoder import decoder_config_from_hf
    from unisono.model.vocab import Vocab

    n_text = tiny_tokenizer.get_vocab_size()
    torch.manual_seed(0)
    lm = Qwen3ForCausalLM(Qwen3Config(vocab_size=n_text, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, head_dim=16))
    lm.save_pretrained(tmp_path / "lm")
    cfg = UnisonoConfig.from_name("unisono-test")
    cfg.decoder = decoder_config_from_hf(tmp_path / "lm")
    model = Unisono(cfg, Vocab(tiny_tokenizer, cfg.vocab.n_speech_tokens))
    assert model.decoder.get_input_embeddings().num_embeddings == model.vocab.size
    torch.testing.assert_close(model.decoder.get_input_embeddings().weight[:n_text], lm.get_input_embeddings().weight)


def test_ctc_loss_reads_adaptor_frames_through_the_output_head(tiny_tokenizer):
    model = make_tiny_model(tiny_tokenizer)
    batch = _asr_batch(model, n_mel_frames=(320, 240))
    audio, lengths = model.encode_audio(batch.mel, batch.mel_lengths)
    # the total loss is the next-token/MTP loss plus the weighted CTC term
    plain, with_ctc = model(batch), model(batch, ctc_weight=0.3)
    assert abs(float(with_ctc.loss.detach()) - float(plain.loss.detach()) - 0.3 * with_ctc.logs["loss_ctc"]) < 1e-4
    assert "loss_ctc" not in plain.logs

    # frames that spell each transcript (blank, token, blank, ...) score far better than the same
    # frames in another clip's order; the classes are <|audio|> (blank) and the text rows
    with torch.no_grad():  # well-separated rows, so that a spelled frame is unambiguous
        model.decoder.lm_head.weight.normal_(0.0, 3.0)
    head = model.decoder.lm_head.weight.detach()
    spelled = torch.zeros_like(audio)
    texts = []
    for b in range(2):
        t = batch.targets[b][(batch.targets[b] >= 0) & (batch.targets[b] < model.vocab.n_text)]
        texts.append(t)
        seq = [model.vocab.audio_id]
        for tok in t.tolist():
            seq += [tok, model.vocab.audio_id]
        seq += [model.vocab.audio_id] * (int(lengths[b]) - len(seq))
        spelled[b, : int(lengths[b])] = head[seq]
    model.decoder.model.norm.weight.data.fill_(1.0)
    good = float(model.ctc_loss(spelled, lengths, batch))
    swapped = float(model.ctc_loss(spelled.flip(0), lengths.flip(0), batch))
    assert good < 0.05 and swapped > 5.0, (good, swapped)

    # reference: torch's CTC of each clip alone, over the same class layout, averaged as "mean" does
    classes = torch.cat([head[model.vocab.audio_id : model.vocab.audio_id + 1], head[: model.vocab.n_text]])
    ref = []
    for b in range(2):
        lp = torch.log_softmax(model.decoder.model.norm(audio[b, : lengths[b]]) @ classes.T, -1)[:, None]
        ref.append(torch.nn.functional.ctc_loss(lp, texts[b][None] + 1, lengths[b : b + 1], torch.tensor([len(texts[b])]),
                                                reduction="sum") / len(texts[b]))
    torch.testing.assert_close(model.ctc_loss(audio, lengths, batch), torch.stack(ref).mean(), rtol=1e-4, atol=1e-4)


def test_save_is_world_readable_and_keeps_speech_and_card(tiny_tokenizer, tmp_path):
    model = make_tiny_model(tiny_tokenizer)
    target = tmp_path / "ckpt"
    model.save(target)
    (target / "speech").mkdir()
    (target / "speech" / "config.json").write_text("{}")
    (target / "README.md").write_text("# card\n")
    model.save(target, dtype="int8")  # a re-export over it keeps what was placed beside the weights
    assert (target / "speech" / "config.json").read_text() == "{}"
    assert (target / "README.md").read_text() == "# card\n"
    assert target.stat().st_mode & 0o777 == 0o755
    assert all(f.stat().st_mode & 0o044 == 0o044 for f in target.iterdir() if f.is_file())


def _write_codec_config(directory, codebook_size: int) -> None:
    import json

    from unisono.codec.config import CodecConfig

    config = CodecConfig()
    config.tokenizer.codebook_size = codebook_size
    (directory / "speech").mkdir(exist_ok=True)
    (directory / "speech" / "config.json").write_text(json.dumps(config.to_dict()))


def test_a_codec_that_does_not_fit_the_vocabulary_is_refused(tiny_tokenizer, tmp_path):
    model = make_tiny_model(tiny_tokenizer)  # 64 speech tokens
    model.save(tmp_path / "ckpt")
    _write_codec_config(tmp_path / "ckpt", 32)
    with pytest.raises(ValueError, match=r"has 32 codes but the vocabulary 64 speech tokens"):
        Unisono.load(tmp_path / "ckpt")
    _write_codec_config(tmp_path / "ckpt", 64)
    again = Unisono.load(tmp_path / "ckpt")  # the config fits; the weights are read on first use
    with pytest.raises(FileNotFoundError, match="no speech codec at"):
        again.speech_codec
    with pytest.raises(ValueError, match="not loaded from a checkpoint directory"):
        model.speech_codec


def test_the_shipped_model_loads_its_own_codec_lazily():
    from unisono.codec.codec import SpeechCodec
    from unisono.model.unisono import default_model_path

    model = Unisono.load(default_model_path())
    assert model.vocab.layout == 1 and model.vocab.speech_offset == 4000 + 19  # ids as it was trained
    assert model._speech_codec is None  # not read until asked for
    codec = model.speech_codec
    assert isinstance(codec, SpeechCodec) and codec.config.tokenizer.codebook_size == model.vocab.n_speech == 4096
    assert model.speech_codec is codec
    assert not any(name.startswith("_speech_codec") for name, _ in model.named_parameters())
