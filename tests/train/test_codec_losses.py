"""The codec's listening losses: the STFT loss, the re-encoding distance and the transcript loss."""

from __future__ import annotations

import pytest
import torch

from tests.train.conftest import CODEC_D, tiny_tokenizer
from unisono.model.encoder import AudioEncoder
from unisono.train.codec_data import CodecData
from unisono.train.codec_losses import Reencoder, TranscriptLoss, in_capitals, stft_loss


def test_the_stft_loss_is_zero_on_the_same_audio_and_grows_with_the_difference():
    torch.manual_seed(0)
    wave = torch.randn(2, 8000)
    assert float(stft_loss(wave, wave)) == pytest.approx(0.0, abs=1e-6)
    assert 0 < float(stft_loss(wave + 0.01 * torch.randn_like(wave), wave)) < float(stft_loss(torch.randn_like(wave), wave))


def test_the_reencoding_distance_is_zero_on_the_real_audio_and_reaches_only_the_fake(prepared):
    data = CodecData(prepared / "data")
    enc = tiny_tokenizer().encoder
    clips = [torch.from_numpy(data.audio_of(i)) for i in range(3)]
    noisy = [c + 0.05 * torch.randn_like(c) for c in clips]
    for layer in (1, 2):  # an inner layer (hooked), the output
        re = Reencoder(enc, layer)
        re.fit_scale(clips)
        assert re.scale.shape == (CODEC_D,) and bool((re.scale > 0).all())
        assert float(re.distance(clips, clips)) == 0.0
        fake = [c.clone().requires_grad_(True) for c in noisy]
        d = re.distance(fake, clips)
        assert float(d.detach()) > 0
        d.backward()
        assert all(f.grad is not None and float(f.grad.abs().sum()) > 0 for f in fake)
        assert all(p.grad is None for p in enc.parameters())
    with pytest.raises(ValueError, match="layer 3"):
        Reencoder(enc, 3)


@pytest.fixture(scope="module")
def whisper_encoder() -> AudioEncoder:
    return AudioEncoder.from_source("bundled:whisper-tiny.en")


def test_the_transcript_loss_refuses_a_whisper_checkpoint_missing_decoder_weights(tmp_path, whisper_encoder):
    from safetensors.torch import load_file, save_file

    from unisono.model.whisper_source import convert_whisper

    hf = convert_whisper("bundled:whisper-tiny.en", tmp_path / "whisper")
    TranscriptLoss(str(hf), whisper_encoder)  # complete: loads
    weights = load_file(hf / "model.safetensors")
    del weights["model.decoder.layers.0.fc1.weight"]
    save_file(weights, hf / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="decoder.layers.0.fc1.weight"):
        TranscriptLoss(str(hf), whisper_encoder)


def test_the_transcript_loss_is_whispers_own_cross_entropy_and_reaches_only_the_audio(whisper_encoder):
    from transformers import WhisperForConditionalGeneration

    from tests.conftest import EXAMPLE_TEXT, EXAMPLE_WAV
    from unisono.audio.io import load_audio
    from unisono.model.whisper_source import load_whisper_source

    text = EXAMPLE_TEXT
    audio = torch.from_numpy(load_audio(EXAMPLE_WAV, 16000))
    loss = TranscriptLoss("bundled:whisper-tiny.en", whisper_encoder)
    ids = loss.token_ids(text, "en")
    decoded = loss.tokenizer.decode(ids, skip_special_tokens=False)
    assert decoded == "<|startoftranscript|><|notimestamps|> " + text + "<|endoftext|>"  # English-only: no language token
    assert loss.reads("en") and loss.reads("en-US") and not loss.reads("zh")

    wave = audio.clone().requires_grad_(True)
    right = loss([wave], [text], ["en"])
    right.backward()
    assert wave.grad is not None and float(wave.grad.abs().sum()) > 0
    assert all(p.grad is None for p in list(loss.decoder.parameters()) + list(loss.encoder.parameters()))
    wrong = loss([audio], [" ".join(reversed(text.split()))], ["en"])
    assert float(right.detach()) < 0.5 < 2.0 < float(wrong)  # the recogniser reads this clip almost without error

    # the same number from transformers' own loss, its decoder fed the same encoder frames
    config, state = load_whisper_source("bundled:whisper-tiny.en")
    reference = WhisperForConditionalGeneration(config)
    reference.load_state_dict(state)
    with torch.no_grad():
        from unisono.audio.features import batch_log_mel

        mel, lengths = batch_log_mel([audio], n_mels=80)
        frames, _ = whisper_encoder(mel, lengths)
        seq = torch.tensor(ids)
        labels = seq[1:].clone()
        labels[:1] = -100  # the prompt (start, no timestamps) is given, not predicted
        out = reference(encoder_outputs=(frames,), decoder_input_ids=seq[None, :-1], labels=labels[None])
    assert float(right.detach()) == pytest.approx(float(out.loss), rel=1e-4)


def test_texts_in_a_corpus_s_capitals_are_told_from_words_spelt_as_the_recogniser_writes_them():
    assert in_capitals("HE HATES SHOOTING") and in_capitals("RUBOUT G M E F THREE NINE") and in_capitals("YES")
    assert not in_capitals("H-O-W-E-L-L.") and not in_capitals("N-L-N-S175.") and not in_capitals("Enter 624.")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_transcript_loss_on_a_gpu_gives_the_cpu_figure_and_gradient(whisper_encoder):
    from tests.conftest import EXAMPLE_TEXT, EXAMPLE_WAV
    from unisono.audio.io import load_audio

    audio = torch.from_numpy(load_audio(EXAMPLE_WAV, 16000))
    figures, grads = [], []
    for device in ("cpu", "cuda"):
        wave = audio.clone().to(device).requires_grad_(True)
        loss = TranscriptLoss("bundled:whisper-tiny.en", whisper_encoder, device=device)([wave], [EXAMPLE_TEXT], ["en"])
        loss.backward()
        figures.append(float(loss.detach()))
        grads.append(wave.grad.cpu())
    assert figures[1] == pytest.approx(figures[0], rel=5e-3)  # cuDNN may convolve in TF32
    assert float(torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0)) > 0.99
