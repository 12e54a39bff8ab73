"""The codec's jobs on the Trainer: a killed job resumes exactly; jobs learn, start from a codec or the run's
earlier jobs, and export a loadable codec; the listening terms and the adversarial term do what they say."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.train.conftest import codec_config, tiny_tokenizer
from unisono.codec.codec import SpeechCodec
from unisono.model.encoder import AudioEncoder
from unisono.train.codec_data import CodecData
from unisono.train.codec_jobs import (
    OBJECTIVES,
    CodecJobConfig,
    export_codec,
    job_dir,
    read_modules,
    train_job,
)
from unisono.train.codec_kmeans import fit_codebook, tokenize_data
from unisono.train.trainer import Trainer


def quiet(_: str) -> None:
    pass


def fitted_run(prepared: Path, run: Path) -> torch.Tensor:
    """A run folder with the tiny codec's settings, a k-means codebook of 8 and every frame's token."""
    run.mkdir(parents=True, exist_ok=True)
    (run / "codec.json").write_text(json.dumps(codec_config().to_dict()))
    data = CodecData(prepared / "data", layer=2)
    centroids = fit_codebook(data, 8, log=quiet)
    tokenize_data(data, run, centroids, log=quiet)
    return centroids


def job(prepared: Path, run: Path, name: str, **options) -> CodecJobConfig:
    defaults = dict(steps=4, lr=3e-3, warmup=2, batch=3, max_tokens=30, segment_frames=20, checkpoint_every=1000, threads=1)
    return CodecJobConfig(job=name, data=str(prepared / "data"), run=str(run), **(defaults | options))


def objective(cfg: CodecJobConfig, **kwargs):
    return OBJECTIVES[cfg.job](cfg, codec_config(), log=kwargs.pop("log", quiet), **kwargs)


def built(cfg: CodecJobConfig, **kwargs):
    """An objective and its model, as the Trainer builds them (on the CPU)."""
    obj = objective(cfg, **kwargs)
    return obj, obj.build(job_dir(cfg.run, cfg.job), torch.device("cpu"))


def metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def exported_codec(run: Path, folder: Path, seed: int) -> Path:
    """A random codec folder with the run's codebook (as when a shipped codec is fine-tuned on its tokens)."""
    from unisono.codec.codebook import read_codebook

    torch.manual_seed(seed)
    return SpeechCodec(codec_config(), centroids=read_codebook(run).centroids).save(folder)


class Killed(Exception):
    pass


def killed_then_resumed(cfg: CodecJobConfig, kill_after: int) -> None:
    def kill(row: dict) -> None:
        if row["step"] == kill_after:
            raise Killed

    with pytest.raises(Killed):
        Trainer(cfg.stage(), job_dir(cfg.run, cfg.job), objective=objective(cfg), on_step=kill, progress=False).run()
    assert not (job_dir(cfg.run, cfg.job) / "model").exists()
    train_job(cfg, codec_config(), resume=True, log=quiet, progress=False)


@pytest.mark.parametrize("name, options", [("token2mel", {}), ("vocoder-gta", {"adversarial_weight": 0.5, "max_tokens": 5, "batch": 2})])
def test_a_killed_codec_job_resumes_exactly(prepared, tmp_path, name, options):
    runs = {}
    for kind in ("straight", "killed"):
        run = tmp_path / kind
        fitted_run(prepared, run)
        if name == "vocoder-gta":  # the run's vocoder and token-to-mel model, from a codec folder
            start = exported_codec(run, tmp_path / "speech", seed=1)
            options = options | {"init_from": str(start)}
        cfg = job(prepared, run, name, steps=4, checkpoint_every=2, **options)
        if kind == "straight":
            train_job(cfg, codec_config(), log=quiet, progress=False)
        else:  # killed after step 3, its last checkpoint at step 2 (metrics of step 3 are cut back on resume)
            killed_then_resumed(cfg, kill_after=3)
        runs[kind] = job_dir(run, name)
    straight, resumed = metrics(runs["straight"]), metrics(runs["killed"])
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    keys = [k for k in straight[0] if k != "seconds"]
    if name == "vocoder-gta":
        assert {"disc", "adversarial", "feature_match"} <= set(keys)  # the discriminator resumed with the model
    assert [[r[k] for k in keys] for r in resumed] == [[r[k] for k in keys] for r in straight]
    a, b = read_modules(runs["straight"]), read_modules(runs["killed"])
    for module in a:
        for k, v in a[module].items():
            assert torch.equal(b[module][k], v)


@pytest.mark.slow
def test_jobs_learn_start_from_the_runs_earlier_jobs_and_export(prepared, tmp_path):
    run = tmp_path / "run"
    fitted_run(prepared, run)
    with pytest.raises(FileNotFoundError, match="no trained vocoder"):
        objective(job(prepared, run, "vocoder-gta")).build(job_dir(run, "vocoder-gta"), torch.device("cpu"))
    train_job(job(prepared, run, "vocoder", steps=30, batch=4), codec_config(), log=quiet, progress=False)
    rows = metrics(job_dir(run, "vocoder"))
    assert rows[-1]["mel_l1"] < rows[0]["mel_l1"]
    train_job(job(prepared, run, "token2mel", steps=30, batch=4), codec_config(), log=quiet, progress=False)
    rows = metrics(job_dir(run, "token2mel"))
    assert rows[-1]["mel_l1"] < rows[0]["mel_l1"]

    codec = SpeechCodec.load(export_codec(run, tmp_path / "speech", codec_config()))
    data, tokens = CodecData(prepared / "data"), np.load(run / "tokens.npy")
    wave = codec.detokenize(torch.from_numpy(tokens[:20].astype(np.int64)), codec.speaker_embedding(data.audio_of(0)))
    assert wave.shape == (20 * 640,) and np.isfinite(wave).all()
    trained = read_modules(job_dir(run, "token2mel"))
    for k, v in trained["token2mel"].items():
        torch.testing.assert_close(codec.token2mel.state_dict()[k], v.half().float())

    # vocoder-gta starts from the run's vocoder, voices the run's frozen token-to-mel model and exports by name
    gta = job(prepared, run, "vocoder-gta", steps=20, batch=4, max_tokens=10)
    obj, model = built(gta)
    vocoder = read_modules(job_dir(run, "vocoder"))["vocoder"]
    for k, v in vocoder.items():
        torch.testing.assert_close(model["vocoder"].state_dict()[k], v)
    for k, v in trained["token2mel"].items():
        torch.testing.assert_close(obj.token2mel.state_dict()[k], v)
    train_job(gta, codec_config(), log=quiet, progress=False)
    rows = metrics(job_dir(run, "vocoder-gta"))
    assert rows[-1]["stft"] < rows[0]["stft"]
    codec = SpeechCodec.load(export_codec(run, tmp_path / "speech-g", codec_config(), vocoder="vocoder-gta"))
    for k, v in read_modules(job_dir(run, "vocoder-gta"))["vocoder"].items():
        torch.testing.assert_close(codec.vocoder.state_dict()[k], v.half().float())
    with pytest.raises(ValueError, match="not the token2mel job"):
        built(job(prepared, tmp_path / "run", "token2mel", init_from=str(job_dir(run, "vocoder"))))


def test_a_job_starts_from_a_codec_folder_and_resumes_hearing_through_the_same_vocoder(prepared, tmp_path):
    run = tmp_path / "run"
    fitted_run(prepared, run)
    start = exported_codec(run, tmp_path / "speech", seed=1)
    shipped = SpeechCodec.load(start)
    cfg = job(prepared, run, "token2mel", init_from=str(start), cycle_weight=30.0, cycle_clips=2, cycle_tokens=20)
    obj, model = built(cfg, encoder=tiny_tokenizer().encoder)
    for k, v in shipped.token2mel.state_dict().items():  # the exported (float16) weights are the start
        torch.testing.assert_close(model["token2mel"].state_dict()[k], v.float())
    assert obj.listening_source == start  # the run has no vocoder: the codec's
    for k, v in shipped.vocoder.state_dict().items():
        torch.testing.assert_close(obj.listening_vocoder.state_dict()[k], v.float())
    batch = obj.draw(np.random.default_rng(0))
    loss, parts = obj.loss(model, batch, cfg.stage().phases[0])
    assert parts["cycle"] > 0 and parts["loss"] == pytest.approx(parts["mel_l1"] + 30.0 * parts["cycle"], rel=1e-5)
    loss.backward()
    assert model["token2mel"].embed.weight.grad is not None
    assert all(p.grad is None for p in obj.listening_vocoder.parameters())  # it stays as it was

    # once the run has a vocoder of its own, a new job hears through it; a resumed one through its first
    from safetensors.torch import save_file

    torch.manual_seed(2)
    own = job_dir(run, "vocoder") / "model" / "weights.safetensors"
    own.parent.mkdir(parents=True)
    from unisono.codec.vocoder import Vocoder

    save_file({f"vocoder.{k}": v for k, v in Vocoder(codec_config().vocoder, codec_config().mel).state_dict().items()}, str(own))
    fresh, _ = built(cfg, encoder=tiny_tokenizer().encoder)
    assert fresh.listening_source == job_dir(run, "vocoder")
    fresh.load_extra_state(obj.extra_state())
    assert fresh.listening_source == start
    for k, v in shipped.vocoder.state_dict().items():
        torch.testing.assert_close(fresh.listening_vocoder.state_dict()[k], v.float())
    with pytest.raises(FileNotFoundError, match="nothing to start from"):
        built(replace(cfg, init_from=str(tmp_path / "none")))


def test_a_token2mel_fine_tune_onto_another_codebook_starts_from_remapped_embeddings(prepared, tmp_path):
    from unisono.codec.codebook import assign_tokens
    from unisono.train.model_setup import remap_token_embedding

    run = tmp_path / "run"
    fitted_run(prepared, run)
    torch.manual_seed(0)
    old = SpeechCodec(codec_config(), centroids=torch.randn(8, 32)).save(tmp_path / "old")
    messages = []
    _, model = built(job(prepared, run, "token2mel", init_from=str(old)), log=messages.append)
    start = SpeechCodec.load(old)
    features = CodecData(prepared / "data", layer=2).features
    expected, _ = remap_token_embedding(start.token2mel.embed.weight, assign_tokens(features, start.centroids),
                                        np.load(run / "tokens.npy"), 8)
    torch.testing.assert_close(model["token2mel"].embed.weight, expected)
    assert any("remapped" in m for m in messages)
    for k, v in start.token2mel.state_dict().items():  # the rest of the model starts as it was
        if k != "embed.weight":
            torch.testing.assert_close(model["token2mel"].state_dict()[k], v)
    # the same codebook (the run's is the start's own): nothing is remapped
    same = exported_codec(run, tmp_path / "same", seed=3)
    messages.clear()
    _, model = built(job(prepared, run, "token2mel", init_from=str(same)), log=messages.append)
    torch.testing.assert_close(model["token2mel"].embed.weight, SpeechCodec.load(same).token2mel.embed.weight)
    assert not any("remapped" in m for m in messages)


def test_draws_follow_the_oversampling_weights_and_the_voice_reference_share(prepared, tmp_path):
    run = tmp_path / "run"
    fitted_run(prepared, run)
    data = CodecData(prepared / "data")
    rows = [json.loads(line) for line in open(prepared / "synth/manifest.jsonl")]
    few = tmp_path / "few.jsonl"  # a second "source": two of the stored clips
    few.write_text("".join(json.dumps(r) + "\n" for r in rows if r["id"] in [c["id"] for c in data.clips[:2]]))
    obj = objective(job(prepared, run, "token2mel", oversample=[(str(few), 5.0)]))
    weights = data.draw_weights([(str(few), 5.0)])
    drawn = np.bincount(obj.draw_clips(np.random.default_rng(0), 20000), minlength=len(data)) / 20000
    np.testing.assert_allclose(drawn, weights / weights.sum(), atol=0.01)

    def own_share(share: float, draws: int = 200) -> float:
        """How often the reference is a span of the clip itself."""
        o = objective(job(prepared, run, "token2mel", self_reference=share))
        rng, own = np.random.default_rng(1), []
        for k in range(draws):
            i = k % len(data)
            ref, audio = o._reference(i, rng), data.audio_of(i)
            spans = np.lib.stride_tricks.sliding_window_view(audio, len(ref)) if len(ref) <= len(audio) else np.empty((0, len(ref)))
            own.append(bool((spans == ref).all(1).any()))
        return float(np.mean(own))

    assert min(len(v) for v in obj.by_speaker.values()) > 1  # every speaker has other clips
    assert own_share(0.0) == 0.0 and own_share(1.0) == 1.0 and 0.35 < own_share(0.5) < 0.65
    # a batch is a pure function of the stream's seed and index
    a, b = (next(obj.stream(None, 0, None, seed=7).batches(3, 1)) for _ in range(2))
    assert torch.equal(a["tokens"], b["tokens"]) and torch.equal(a["ref_mel"], b["ref_mel"])


@pytest.fixture(scope="module")
def whisper_encoder() -> AudioEncoder:
    return AudioEncoder.from_source("bundled:whisper-tiny.en")


def transcript_job(prepared: Path, tmp_path: Path, **options) -> CodecJobConfig:
    run = tmp_path / "run"
    if not (run / "tokens.npy").is_file():
        fitted_run(prepared, run)
        exported_codec(run, tmp_path / "speech", seed=3)
    options = {"max_tokens": 34, "transcript_clips": 3} | options
    return job(prepared, run, "token2mel", init_from=str(tmp_path / "speech"), transcript_weight=1.0, **options)


def test_the_transcript_loss_reads_its_sources_texts_and_warns_of_texts_in_capitals(prepared, tmp_path, whisper_encoder):
    data = CodecData(prepared / "data")
    rows = {r["id"]: r for r in map(json.loads, open(prepared / "synth/manifest.jsonl"))}
    stored = [c["id"] for c in data.clips]
    # the recogniser's spelling of three clips, and a fourth it misheard (no text: not to be read)
    rewritten = [rows[i] | {"text": f"Sentence no. {k}!"} for k, i in enumerate(stored[:3])] + [rows[stored[3]] | {"text": ""}]
    spelt, plain = tmp_path / "spelt.jsonl", tmp_path / "plain.jsonl"
    spelt.write_text("".join(json.dumps(r) + "\n" for r in rewritten))
    plain.write_text("".join(json.dumps(rows[i]) + "\n" for i in stored[:6]))
    lines = []
    obj, _ = built(transcript_job(prepared, tmp_path, transcript_from=[str(spelt), str(plain)]), encoder=whisper_encoder,
                   log=lines.append)
    short = {i for i in range(6) if data.clips[i]["tokens"] <= 34}
    assert set(obj.transcript_pool) == short - {3} and short & {0, 1, 2}  # whole clips of at most 34 tokens
    heard = {t for g in range(20) for t in obj.draw(np.random.default_rng(g))["t_texts"]}
    assert heard <= {f"Sentence no. {k}!" for k in range(3)} | {data.clips[i]["text"] for i in (4, 5)}
    assert any(t.startswith("Sentence no.") for t in heard)
    assert not heard & {data.clips[i]["text"] for i in range(4)}  # the first source's text wins
    assert not any("capitals" in line for line in lines)

    every = objective(transcript_job(prepared, tmp_path), encoder=whisper_encoder, log=lines.append)
    for clip in every.data.clips[:4]:  # a real-speech corpus's convention: "SENTENCE NUMBER THREE"
        clip["text"] = clip["text"].upper()
    every.transcript_texts = every._transcript_texts()
    every.build(tmp_path / "every", torch.device("cpu"))
    n_caps = sum(1 for i in every.transcript_pool if i < 4)
    warned = [line for line in lines if "capitals" in line]
    assert len(warned) == 1 and f"{n_caps} of the transcript loss's {len(every.transcript_pool)} texts" in warned[0], warned
    with pytest.raises(ValueError, match="no clip of"):
        objective(transcript_job(prepared, tmp_path, transcript_from=[str(prepared / "data/test-en/manifest.jsonl")]))
    with pytest.raises(ValueError, match="transcript loss needs clips"):
        built(transcript_job(prepared, tmp_path, max_tokens=5), encoder=whisper_encoder)
    with pytest.raises(ValueError, match="--transcript-weight too"):
        job(prepared, tmp_path, "token2mel", voice_weight=1.0)


def test_the_transcript_and_voice_terms_read_whole_clips_through_the_frozen_vocoder(prepared, tmp_path, whisper_encoder):
    from unisono.codec.mel import MelSpectrogram

    cfg = transcript_job(prepared, tmp_path, voice_weight=2.0)
    obj, model = built(cfg, encoder=whisper_encoder)
    assert obj.reencoder is None and obj.listening_source == tmp_path / "speech"
    batch = obj.draw(np.random.default_rng(0))
    for m in model.values():
        m.eval()  # no dropout: the voice term below is recomputed by hand
    loss, parts = obj.loss(model, batch, cfg.stage().phases[0])
    assert parts["loss"] == pytest.approx(parts["mel_l1"] + parts["transcript"] + 2.0 * parts["voice"], rel=1e-5)
    assert 0 < parts["transcript"] < 20 and parts["voice"] > 0
    # the voice term: the L1 between each whole clip's predicted long-term spectrum and the clip's own
    data, mel, up = CodecData(prepared / "data"), MelSpectrogram(codec_config().mel), 4
    lengths = batch["t_lengths"]
    with torch.no_grad():
        pred = model["token2mel"](batch["t_tokens"], model["speaker"](batch["t_ref_mel"], batch["t_ref_len"]), lengths)
    texts = {c["text"]: i for i, c in enumerate(data.clips)}
    expected = []
    for b, n in enumerate(lengths.tolist()):
        i = texts[batch["t_texts"][b]]
        assert data.clips[i]["tokens"] == n  # whole clips, never cropped
        real = mel(torch.from_numpy(data.audio_of(i)[: 640 * n]))[:, : up * n]
        expected.append(float((pred[b, :, : real.shape[-1]].mean(-1) - real.mean(-1)).abs().mean()))
    assert parts["voice"] == pytest.approx(float(np.mean(expected)), rel=1e-4)
    loss.backward()
    assert all(p.grad is None for p in obj.listening_vocoder.parameters())
    assert model["token2mel"].embed.weight.grad.abs().sum() > 0


def test_the_adversarial_term_judges_the_same_span_of_both_waveforms_with_its_own_optimiser(prepared, tmp_path):
    run = tmp_path / "run"
    fitted_run(prepared, run)
    start = exported_codec(run, tmp_path / "speech", seed=7)
    cfg = job(prepared, run, "vocoder-gta", max_tokens=10, init_from=str(start), adversarial_weight=0.5)
    obj, model = built(cfg)
    shipped = SpeechCodec.load(start)
    for k, v in shipped.token2mel.state_dict().items():  # the run has none: the codec's token-to-mel model, frozen
        torch.testing.assert_close(obj.token2mel.state_dict()[k], v.float())
    adversary = obj.vocoder_loss
    trained = {id(p) for p in model.parameters()}
    assert not any(id(p) in trained for p in adversary.disc.parameters())
    before = {k: v.clone() for k, v in adversary.disc.state_dict().items()}
    loss, parts = obj.loss(model, obj.draw(np.random.default_rng(0)), cfg.stage().phases[0])
    assert parts["loss"] == pytest.approx(
        parts["mel_l1"] + 2 * parts["stft"] + 0.5 * (parts["adversarial"] + 2 * parts["feature_match"]), rel=1e-5)
    assert parts["disc"] > 0 and parts["adversarial"] > 0 and parts["feature_match"] > 0
    assert any(not torch.equal(v, adversary.disc.state_dict()[k]) for k, v in before.items())  # it took a step
    fake, real = torch.arange(5 * 20000.0).view(5, 20000), torch.arange(5 * 20000.0).view(5, 20000) + 0.5
    fake_crops, real_crops = adversary.crops(fake, real, np.random.default_rng(0))
    assert fake_crops.shape == (min(5, adversary.disc_cfg.crops), adversary.disc_cfg.window)
    offset = real_crops - fake_crops
    torch.testing.assert_close(offset, torch.full_like(offset, float(offset[0, 0])))
    assert float(real_crops.std()) == pytest.approx(1.0, rel=1e-4) and float(offset[0, 0]) > 0
    with pytest.raises(ValueError, match="vocoder-gta fine-tune only"):
        job(prepared, run, "token2mel", adversarial_weight=0.5)
