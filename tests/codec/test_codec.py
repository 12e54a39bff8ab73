"""Speech codec parts: mel against librosa, iSTFT round trip, receptive fields, exact streaming,
batching, persistence, configs of earlier releases, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from unisono.codec import CodecConfig, SpeechCodec, default_codec_path
from unisono.codec.codec import soft_limit
from unisono.codec.config import MelConfig, SpeakerEncoderConfig, Token2MelConfig, VocoderConfig
from unisono.codec.mel import MelSpectrogram, mel_for_tokens, spectral_envelope
from unisono.codec.streaming import WindowStream
from unisono.codec.vocoder import ISTFT


def small_config() -> CodecConfig:
    c = CodecConfig(
        speaker=SpeakerEncoderConfig(channels=16, n_layers=2, dim=8),
        token2mel=Token2MelConfig(dim=32, n_layers=2, n_heads=2, ffn_dim=64),
        vocoder=VocoderConfig(dim=32, intermediate_dim=64, n_layers=3),
    )
    c.tokenizer.codebook_size = 50
    return c


@pytest.fixture(scope="module")
def codec() -> SpeechCodec:
    torch.manual_seed(0)
    return SpeechCodec(small_config(), centroids=torch.randn(50, 384)).eval()


def test_mel_matches_librosa():
    librosa = pytest.importorskip("librosa")
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(8000)).astype(np.float32)
    c = MelConfig()
    ours = MelSpectrogram(c)(torch.from_numpy(audio)).numpy()
    ref = librosa.feature.melspectrogram(y=audio, sr=16000, n_fft=c.n_fft, hop_length=c.hop_length, n_mels=c.n_mels,
                                         power=1.0, center=True, pad_mode="reflect", htk=False, norm="slaney")
    np.testing.assert_allclose(ours, np.log(np.maximum(ref, c.log_floor)), atol=2e-4)
    assert ours.shape == (80, 8000 // 160 + 1)


def test_mel_for_tokens_cuts_and_pads_with_silence():
    mel = torch.zeros(80, 10)
    assert mel_for_tokens(mel, 2, 4, 1e-5).shape == (80, 8)
    padded = mel_for_tokens(mel, 3, 4, 1e-5)
    assert padded.shape == (80, 12) and torch.allclose(padded[:, 10:], torch.tensor(np.log(1e-5), dtype=torch.float32))


def test_the_spectral_envelope_is_the_low_quefrency_part_of_each_frame():
    from scipy.fft import dct, idct

    rng = np.random.default_rng(0)
    mel = torch.from_numpy(rng.normal(size=(2, 80, 7)).astype(np.float32))
    env = spectral_envelope(mel, 12)
    # scipy's orthonormal DCT-II along the mel axis, cepstra 12.. zeroed, inverted
    cep = dct(mel.numpy(), type=2, norm="ortho", axis=1)
    cep[:, 12:] = 0
    np.testing.assert_allclose(env.numpy(), idct(cep, type=2, norm="ortho", axis=1), atol=1e-5)
    torch.testing.assert_close(spectral_envelope(env, 12), env, atol=1e-5, rtol=0)  # a projection
    # a smooth shape stays, a ripple of a voice's harmonics (a period of 4 bins) goes
    bins = torch.arange(80, dtype=torch.float32)[:, None]
    smooth = -4.0 + torch.cos(np.pi * (bins + 0.5) * 3 / 80) - 0.5 * torch.cos(np.pi * (bins + 0.5) * 7 / 80)
    ripple = torch.cos(bins / 4 * 2 * np.pi)
    torch.testing.assert_close(spectral_envelope(smooth, 12), smooth, atol=1e-5, rtol=0)
    assert (spectral_envelope(smooth + ripple, 12) - smooth).abs().max() < 0.2  # of a ripple of amplitude 1


def test_istft_inverts_an_stft_with_same_framing():
    n_fft, hop, frames = 640, 160, 20
    x = torch.randn(2, frames * hop)
    pad = (n_fft - hop) // 2
    spec = torch.stft(torch.nn.functional.pad(x, (pad, pad)), n_fft, hop, window=torch.hann_window(n_fft),
                      center=False, return_complex=True)
    assert spec.shape[-1] == frames
    torch.testing.assert_close(ISTFT(n_fft, hop)(spec), x, atol=1e-5, rtol=1e-4)


def _changed(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nonzero((a - b).abs().amax(dim=tuple(range(a.dim() - 1))) > 0)[:, 0]


def test_token2mel_receptive_field_is_as_declared(codec):
    T, t = 80, 40
    tok = torch.randint(0, 50, (1, T))
    spk = torch.randn(1, 8)
    up = codec.config.token2mel.upsample
    with torch.no_grad():
        base = codec.token2mel(tok, spk)
        tok2 = tok.clone()
        tok2[0, t] = (tok2[0, t] + 1) % 50
        frames = _changed(base[0], codec.token2mel(tok2, spk)[0])
    left, right = codec.config.token2mel.receptive_field
    # output token u depends on input t iff u - right <= t <= u + left
    assert frames.min() // up >= t - right and frames.max() // up <= t + left
    assert frames.min() // up == t - right  # the look-ahead is exactly as declared


def test_vocoder_receptive_field_is_within_declared(codec):
    mel = torch.randn(1, 80, 100)
    f = 50
    with torch.no_grad():
        base = codec.vocoder(mel)
        mel2 = mel.clone()
        mel2[0, :, f] += 1.0
        samples = _changed(base[0][None], codec.vocoder(mel2)[0][None])
    left, right = codec.vocoder.receptive_field
    hop = codec.config.mel.hop_length
    assert samples.min() // hop >= f - right and samples.max() // hop <= f + left
    assert samples.min() // hop == f - right


@pytest.mark.parametrize("chunks", [1, 3, 10, 1000])
def test_window_stream_equals_offline_for_a_bounded_convolution(chunks):
    conv = torch.nn.Conv1d(1, 2, 5, padding=2)  # output t depends on inputs t-2..t+2
    x = torch.randn(1, 1, 47)
    with torch.no_grad():
        offline = conv(x)
        stream = WindowStream(conv, left=2, right=2, ratio=1, chunk=1)
        parts = [stream.push(x[..., i:i + chunks]) for i in range(0, 47, chunks)] + [stream.flush()]
        online = torch.cat([p for p in parts if p is not None], dim=-1)
    torch.testing.assert_close(online, offline)


def test_the_output_limiter_passes_speech_levels_and_bends_overshoot_below_full_scale():
    x = torch.linspace(-4, 4, 8001)
    y = soft_limit(x)
    quiet = x.abs() <= 0.8
    assert torch.equal(y[quiet], x[quiet])
    assert float(y.abs().max()) <= 1.0
    assert float(y[x.abs() <= 1.2].abs().max()) < 0.995, "a modest overshoot must not be flattened at full scale"
    assert bool((y[1:] >= y[:-1]).all()), "a limiter must not reorder levels"
    assert torch.allclose(soft_limit(-x), -y)
    # no step at the knee: the curve leaves the identity with slope 1
    knee = torch.tensor([0.8, 0.8 + 1e-4])
    assert abs(float(soft_limit(knee).diff()) - 1e-4) < 1e-6


@pytest.mark.parametrize("chunk", [1, 5, 64])
def test_streaming_detokenizer_equals_offline(codec, chunk):
    torch.manual_seed(1)
    tokens = torch.randint(0, 50, (91,))
    voice = torch.randn(8)
    offline = codec.detokenize(tokens, voice)
    parts = list(codec.stream_detokenize([tokens[i:i + chunk] for i in range(0, 91, chunk)], voice, chunk_tokens=7))
    online = np.concatenate(parts)
    assert len(offline) == 91 * 640 == len(online)
    np.testing.assert_allclose(online, offline, atol=1e-5)
    if chunk < 64:
        assert len(parts) > 2  # audio comes out while tokens are still arriving


def test_first_audio_needs_only_the_first_chunk_and_the_lookahead(codec):
    stream = codec.detokenizer_stream(torch.randn(8), chunk_tokens=25, first_chunk_tokens=4)
    first_at = next(i for i in range(1, 40) if stream.push([i % 50]).size)
    # token2mel waits for its look-ahead; the vocoder's fits inside the first chunk
    assert first_at == 4 + codec.config.token2mel.receptive_field[1]
    assert codec.lookahead_tokens >= codec.config.token2mel.receptive_field[1]


def test_batched_token2mel_equals_items_alone(codec):
    torch.manual_seed(2)
    a, b = torch.randint(0, 50, (30,)), torch.randint(0, 50, (17,))
    spk = torch.randn(2, 8)
    batch = torch.zeros(2, 30, dtype=torch.long)
    batch[0], batch[1, :17] = a, b
    with torch.no_grad():
        out = codec.token2mel(batch, spk, torch.tensor([30, 17]))
        alone_b = codec.token2mel(b[None], spk[1:])
    torch.testing.assert_close(out[1, :, : 17 * 4], alone_b[0], atol=1e-5, rtol=1e-4)


def test_speaker_encoder_ignores_padding(codec):
    mel = torch.randn(1, 80, 50)
    padded = torch.cat([mel, torch.randn(1, 80, 20)], dim=-1)
    with torch.no_grad():
        torch.testing.assert_close(codec.speaker(padded, torch.tensor([50])), codec.speaker(mel), atol=1e-5, rtol=1e-4)


def test_save_and_load_round_trip_in_float16(codec, tmp_path):
    path = codec.save(tmp_path / "speech")
    loaded = SpeechCodec.load(path)
    assert loaded.config == codec.config
    torch.testing.assert_close(loaded.centroids, codec.centroids.half().float())
    tokens, voice = torch.randint(0, 50, (20,)), torch.randn(8)
    a, b = codec.detokenize(tokens, voice), loaded.detokenize(tokens, voice)
    assert np.abs(a - b).max() < 0.05 * max(1e-3, np.abs(a).max())
    assert sorted(p.name for p in path.iterdir()) == ["codec.safetensors", "config.json"]
    assert all(p.stat().st_mode & 0o044 == 0o044 for p in path.iterdir())  # readable by all, like a model


def test_load_of_a_folder_without_a_codec_says_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json and codec.safetensors"):
        SpeechCodec.load(tmp_path)


def test_bad_tokens_and_short_references_are_refused(codec):
    with pytest.raises(ValueError, match="0..49"):
        codec.detokenize(torch.tensor([3, 50]), torch.randn(8))
    with pytest.raises(ValueError, match="0..49"):
        codec.detokenizer_stream(torch.randn(8)).push([-1])
    with pytest.raises(ValueError, match="too short"):
        codec.speaker_embedding(np.zeros(100, dtype=np.float32))


def test_config_round_trip_and_mismatched_rates():
    c = small_config()
    assert CodecConfig.from_dict(c.to_dict()) == c
    assert CodecConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    with pytest.raises(ValueError, match="upsample"):
        CodecConfig(token2mel=Token2MelConfig(upsample=2))
    with pytest.raises(ValueError, match="unknown"):
        CodecConfig.from_dict({"nope": {}})
    with pytest.raises(ValueError, match=r"unknown codec config key\(s\) \['vocoder.depth'\]"):
        CodecConfig.from_dict(c.to_dict() | {"vocoder": c.to_dict()["vocoder"] | {"depth": 3}})


def _saved_by_an_earlier_release(c: CodecConfig, frame_difference=0.0, phase_projection=False, refiner=None) -> dict:
    d = c.to_dict()
    d["tokenizer"]["frame_difference"] = frame_difference
    d["token2mel"]["phase_projection"] = phase_projection
    return d | {"refiner": refiner}


def test_a_config_of_an_earlier_release_loads_when_its_retired_options_are_off():
    c = small_config()
    assert CodecConfig.from_dict(_saved_by_an_earlier_release(c)) == c
    assert CodecConfig.from_dict(json.loads(json.dumps(_saved_by_an_earlier_release(c, frame_difference=0)))) == c
    shipped = json.loads((default_codec_path() / "config.json").read_text())
    assert not {"refiner"} & set(shipped) and "frame_difference" not in shipped["tokenizer"]
    assert "phase_projection" not in shipped["token2mel"]


@pytest.mark.parametrize("retired, key", [
    ({"frame_difference": 1.5}, "tokenizer.frame_difference"),
    ({"phase_projection": True}, "token2mel.phase_projection"),
    ({"refiner": {"steps": 6}}, "refiner"),
    ({"refiner": {}}, "refiner"),  # a refiner with every default is still a refiner
    ({"frame_difference": None}, "tokenizer.frame_difference"),
])
def test_a_config_that_uses_a_retired_option_is_refused_in_one_line(retired, key):
    with pytest.raises(ValueError, match=rf"^codec config {key} = .*this release no longer supports it") as e:
        CodecConfig.from_dict(_saved_by_an_earlier_release(small_config(), **retired))
    assert "\n" not in str(e.value)


def test_a_folder_with_a_trained_codebook_bias_is_refused(codec, tmp_path):
    from safetensors.torch import load_file, save_file

    path = codec.save(tmp_path / "speech")
    state = load_file(str(path / "codec.safetensors")) | {"token_bias": torch.zeros(50, dtype=torch.float16)}
    save_file(state, str(path / "codec.safetensors"))
    with pytest.raises(ValueError, match="token_bias.*no longer supports it"):
        SpeechCodec.load(path)
