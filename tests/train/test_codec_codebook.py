"""The trained codebook: a linear scorer equal to its own rule, Whisper reading layer features as it
reads audio, training that learns and resumes exactly, and token-to-mel fine-tunes remapped onto it."""

from __future__ import annotations

import copy
from dataclasses import replace
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from unisono.codec.codec import SpeechCodec
from unisono.codec.config import CodecConfig, TokenizerConfig
from unisono.codec.tokenizer import SpeechTokenizer, quantize
from unisono.train.codec_codebook import CodebookConfig, CodebookJob, TrainedCodebook, remap_token_embedding
from unisono.train.codec_data import CodecData, prepare
from unisono.train.codec_train import TOKENIZER_FILE, TOKENS_FILE, Token2MelJob, TrainConfig, TranscriptLoss, assign_tokens

from tests.train.test_codec_train import codec_config, prepare_config, whisper_encoder, write_manifest  # noqa: F401 (a fixture)

quiet = lambda s: None  # noqa: E731


def test_the_scorer_picks_the_token_the_codebook_picks():
    torch.manual_seed(0)
    book = TrainedCodebook(dim=48, size=64, code_dim=6)
    sample = torch.randn(3000, 48) * torch.linspace(0.1, 3.0, 48) + 2.0
    book.initialise(sample)
    with torch.no_grad():
        book.proj.weight.add_(0.1 * torch.randn_like(book.proj.weight))  # as after training, not the PCA start
        book.proj.bias.add_(0.1 * torch.randn_like(book.proj.bias))
        _, tokens, _ = book(sample)
    centroids, bias = book.scorer()
    assert torch.equal(quantize(sample, centroids, bias), tokens)
    assert len(torch.unique(tokens)) > 32  # spherical k-means spreads the sample over the codes


def test_remapped_embeddings_are_the_mean_of_the_old_over_each_new_tokens_frames():
    embed = torch.randn(5, 3)
    old = np.array([0, 1, 2, 3, 4, 0, 1, 2, 3, 4])
    perm = np.array([4, 2, 0, 1, 3])
    mapped, agreement = remap_token_embedding(embed, old, perm[old], size=6)
    torch.testing.assert_close(mapped[perm], embed)
    torch.testing.assert_close(mapped[5], embed.mean(0))  # a token no frame takes
    assert agreement == 1.0
    new = np.array([0, 0, 0, 1, 1, 1, 1, 1, 1, 1])  # token 0 takes old 0, 1, 2; token 1 the rest
    mapped, agreement = remap_token_embedding(embed, old, new, size=2)
    torch.testing.assert_close(mapped[0], embed[[0, 1, 2]].mean(0))
    torch.testing.assert_close(mapped[1], embed[[3, 4, 0, 1, 2, 3, 4]].mean(0))
    assert agreement == pytest.approx((1 + 2) / 10)
    with pytest.raises(ValueError, match="tokenize the same frames"):
        remap_token_embedding(embed, old, new[:-1], size=2)


def test_whisper_reads_a_layers_features_as_it_reads_the_audio(whisper_encoder):
    from tests.conftest import EXAMPLE_TEXT, EXAMPLE_WAV
    from unisono.audio.features import batch_log_mel
    from unisono.audio.io import load_audio
    from unisono.codec.tokenizer import encoder_layers

    text = EXAMPLE_TEXT
    audio = torch.from_numpy(load_audio(EXAMPLE_WAV, 16000))
    loss = TranscriptLoss("bundled:whisper-tiny.en", whisper_encoder)
    mel, lengths = batch_log_mel([audio], n_mels=80)
    encoder = copy.deepcopy(whisper_encoder)
    encoder.config.variable_length = True  # the clip alone, as the loss reads it
    for layer in (3, 4):
        captured, _ = encoder_layers(encoder, mel, lengths, (layer,))
        features = captured[layer][0].clone().requires_grad_(True)
        read = loss.read_features([features], layer, 1, [text], ["en"])
        assert float(read.detach()) == pytest.approx(float(loss([audio], [text], ["en"])), rel=1e-4)
        read.backward()
        assert float(features.grad.abs().sum()) > 0
    # 25 Hz vectors are repeated to the encoder's 50 Hz
    pooled = captured[4][0, : 2 * (captured[4].shape[1] // 2)].reshape(-1, 2, 384).mean(1)
    twice = loss.read_features([pooled.repeat_interleave(2, 0)], 4, 1, [text], ["en"])
    assert float(loss.read_features([pooled], 4, 2, [text], ["en"])) == pytest.approx(float(twice), rel=1e-6)


@pytest.fixture(scope="module")
def whisper_data(tmp_path_factory, whisper_encoder) -> CodecData:
    """A prepared folder of the Whisper encoder's layer-3 features (the tests' sine clips, their texts)."""
    root = tmp_path_factory.mktemp("codebook")
    manifest = write_manifest(root / "synth", 10)
    config = prepare_config(manifest)
    config.layers = (3,)
    factory = lambda: SpeechTokenizer(TokenizerConfig(layer=3), encoder=whisper_encoder, centroids=torch.zeros(1024, 384))  # noqa: E731
    prepare(config, root / "data", tokenizer_factory=factory, block_seconds=3.0)
    return CodecData(root / "data", layer=3)


def small_config(size: int = 16):
    c = codec_config()
    c.tokenizer.layer, c.tokenizer.codebook_size = 3, size
    return c


@pytest.mark.slow
def test_the_codebook_learns_the_texts_resumes_exactly_and_writes_a_linear_tokenizer(whisper_data, whisper_encoder, tmp_path):
    cfg = TrainConfig(steps=24, lr=3e-3, warmup=4, batch=3, max_tokens=40, weight_decay=0.0, log_every=4, checkpoint_every=8)
    book_cfg = CodebookConfig(code_dim=4, restart_every=10)

    def run(folder: str, messages: list) -> CodebookJob:
        return CodebookJob(whisper_data, tmp_path / folder, small_config(), cfg, book_cfg, log=messages.append,
                           encoder=whisper_encoder)

    def drop_four_codes(job: CodebookJob) -> None:  # as if no batch had picked them for long
        with torch.no_grad():
            job.modules["codebook"].usage[12:] = 0.0

    messages = []
    job = run("run", messages)
    job.train(until=10)
    drop_four_codes(job)
    before = job.modules["codebook"].codes.detach().clone()
    job.train()
    log = [json.loads(line) for line in open(tmp_path / "run/codebook.jsonl")]
    assert log[-1]["transcript"] < log[0]["transcript"] and log[-1]["features"] < log[0]["features"]
    assert "codebook step 10: 4 unused codes restarted" in messages  # moved to features of that step's batch
    moved = (job.modules["codebook"].codes.detach() - before).norm(dim=-1)
    assert (moved[12:] > 0.05).all()

    # the run's tokenizer: weights and a bias, and every stored frame's token by that rule
    stored = load_file(str(tmp_path / "run" / TOKENIZER_FILE))
    assert stored["centroids"].shape == (16, 384) and stored["bias"].shape == (16,)
    tokens = np.load(tmp_path / "run" / TOKENS_FILE)
    np.testing.assert_array_equal(tokens, assign_tokens(whisper_data.features, stored["centroids"], stored["bias"]))
    with torch.no_grad():
        feats = torch.from_numpy(np.asarray(whisper_data.features, dtype=np.float32))
        np.testing.assert_array_equal(tokens, job.modules["codebook"](feats)[1].numpy())

    # stopped at step 10, saved, resumed from the checkpoint across that step's restart: the same weights and
    # tokens as the run that went on in memory
    half = run("half", [])
    half.train(until=10)
    with torch.no_grad():  # stopped early, it wrote the codebook of the step it stopped at
        np.testing.assert_array_equal(np.load(tmp_path / "half" / TOKENS_FILE), half.modules["codebook"](feats)[1].numpy())
    drop_four_codes(half)
    half.save()
    resumed = run("half", [])
    assert resumed.step == 10
    resumed.train()
    for k, v in job.modules["codebook"].state_dict().items():
        torch.testing.assert_close(resumed.modules["codebook"].state_dict()[k], v)
    np.testing.assert_array_equal(np.load(tmp_path / "half" / TOKENS_FILE), tokens)


def test_a_token2mel_fine_tune_onto_another_codebook_starts_from_remapped_embeddings(whisper_data, tmp_path):
    c = small_config(8)
    torch.manual_seed(0)
    old = SpeechCodec(c, centroids=torch.randn(8, 384)).save(tmp_path / "old")
    centroids, bias = torch.randn(8, 384), torch.randn(8)
    run = tmp_path / "run"
    run.mkdir()
    save_file({"centroids": centroids, "bias": bias}, str(run / TOKENIZER_FILE), metadata={"layer": "3", "codebook_size": "8"})
    tokens = assign_tokens(whisper_data.features, centroids, bias)
    messages = []
    job = Token2MelJob(whisper_data, tokens, run, c, TrainConfig(steps=1, init_from=str(old)), log=messages.append)
    start = SpeechCodec.load(old)
    expected, _ = remap_token_embedding(start.token2mel.embed.weight, assign_tokens(whisper_data.features, start.centroids),
                                        tokens, 8)
    torch.testing.assert_close(job.modules["token2mel"].embed.weight, expected)
    assert any("remapped" in m for m in messages)
    for k, v in start.token2mel.state_dict().items():  # the rest of the model starts as it was
        if k != "embed.weight":
            torch.testing.assert_close(job.modules["token2mel"].state_dict()[k], v)

    # the same codebook (the run's tokenizer is the start's own): nothing is remapped
    same = tmp_path / "same"
    same.mkdir()
    save_file({"centroids": start.centroids.contiguous()}, str(same / TOKENIZER_FILE), metadata={"layer": "3", "codebook_size": "8"})
    messages.clear()
    job = Token2MelJob(whisper_data, assign_tokens(whisper_data.features, start.centroids), same, c,
                       TrainConfig(steps=1, init_from=str(old)), log=messages.append)
    torch.testing.assert_close(job.modules["token2mel"].embed.weight, start.token2mel.embed.weight)
    assert not any("remapped" in m for m in messages)


def test_the_command_line_trains_a_codebook_and_refuses_a_folder_without_the_layer(whisper_data, tmp_path):
    from typer.testing import CliRunner

    from unisono.cli import app

    result = CliRunner().invoke(app, ["codec", "train-tokenizer", str(whisper_data.directory), str(tmp_path / "run"),
                                      "--layer", "2", "--steps", "2", "--threads", "1"])
    assert result.exit_code == 2 and "features-L2.bin" in result.output


def test_tokens_that_see_the_movement_within_a_token_are_prepared_fitted_and_fine_tuned_onto(whisper_data, whisper_encoder, tmp_path):
    from typer.testing import CliRunner

    from unisono.cli import app

    config = prepare_config(write_manifest(tmp_path / "synth", 10))
    config.layers, config.frame_difference = (3,), 1.0
    pooled = TokenizerConfig(layer=3, frame_difference=1.0)
    factory = lambda: SpeechTokenizer(pooled, encoder=whisper_encoder, centroids=torch.zeros(1024, 768))  # noqa: E731
    data = prepare(config, tmp_path / "data", tokenizer_factory=factory, block_seconds=3.0)
    data = CodecData(tmp_path / "data", layer=3)
    assert data.frame_difference == 1.0 and data.features.shape == (data.total_tokens, 768)
    # the first half is the mean the shipped tokenizer quantises, the second the movement within each token
    mean = {c["id"]: whisper_data.features_of(i) for i, c in enumerate(whisper_data.clips)}
    for i, c in enumerate(data.clips):
        np.testing.assert_array_equal(data.features_of(i)[:, :384], mean[c["id"]])
    assert np.abs(data.features[:, 384:].astype(np.float32)).mean() > 0.05
    with pytest.raises(ValueError, match="other settings"):
        prepare(replace(config, frame_difference=0.5), tmp_path / "data",
                tokenizer_factory=lambda: SpeechTokenizer(replace(pooled, frame_difference=0.5), encoder=whisper_encoder,
                                                          centroids=torch.zeros(1024, 768)))

    runner = CliRunner()
    r = runner.invoke(app, ["codec", "fit-tokenizer", str(tmp_path / "data"), str(tmp_path / "run"), "--codebook", "8",
                            "--inits", "1", "--iterations", "5", "--threads", "1"])
    assert r.exit_code == 0, r.output
    settings = CodecConfig.from_dict(json.loads((tmp_path / "run/codec.json").read_text()))
    assert settings.tokenizer.frame_difference == 1.0
    centroids = load_file(str(tmp_path / "run" / TOKENIZER_FILE))["centroids"]
    tokens = np.load(tmp_path / "run" / TOKENS_FILE)
    assert centroids.shape == (8, 768)
    np.testing.assert_array_equal(tokens, assign_tokens(data.features, centroids))
    # the run's tokenizer computes the stored features from the audio
    tokenizer = SpeechTokenizer(settings.tokenizer, encoder=whisper_encoder, centroids=centroids)
    np.testing.assert_allclose(tokenizer.features([data.audio_of(2)])[0].numpy(), data.features_of(2).astype(np.float32),
                               atol=2e-2, rtol=1e-2)

    # a mean-only codebook cannot tokenize these features; nothing is written
    c = small_config(8)
    torch.manual_seed(0)
    old = SpeechCodec(c, centroids=torch.randn(8, 384)).save(tmp_path / "old")
    r = runner.invoke(app, ["codec", "fit-tokenizer", str(tmp_path / "data"), str(tmp_path / "other"), "--codebook-of", str(old)])
    said = " ".join(r.output.replace("│", " ").split())
    assert r.exit_code == 2 and "does not fit the 768-wide features" in said and not (tmp_path / "other").exists()
    # nor can a codebook be trained on them (Whisper's decoder reads a codebook's features as its encoder frames)
    r = runner.invoke(app, ["codec", "train-tokenizer", str(tmp_path / "data"), str(tmp_path / "other"), "--steps", "1"])
    said = " ".join(r.output.replace("│", " ").split())
    assert r.exit_code == 2 and "reads mean features" in said and not (tmp_path / "other").exists()

    # a detokenizer trained on mean tokens is fine-tuned onto these: its embeddings are remapped by the mean half
    messages = []
    c.tokenizer.frame_difference = 1.0
    job = Token2MelJob(data, tokens, tmp_path / "run", c, TrainConfig(steps=1, init_from=str(old)), log=messages.append)
    start = SpeechCodec.load(old)
    expected, _ = remap_token_embedding(start.token2mel.embed.weight,
                                        assign_tokens(np.asarray(data.features)[:, :384], start.centroids), tokens, 8)
    torch.testing.assert_close(job.modules["token2mel"].embed.weight, expected)
    assert any("remapped" in m for m in messages)
