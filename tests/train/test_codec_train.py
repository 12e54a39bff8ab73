"""Codec training: data preparation (held-out texts, offsets, resume after a kill), k-means
tokens, training jobs (loss falls, exact resume), export to a loadable codec."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from unisono.model.config import EncoderConfig
from unisono.model.encoder import AudioEncoder
from unisono.codec.codec import SpeechCodec
from unisono.codec.config import (
    CodecConfig,
    RefinerConfig,
    SpeakerEncoderConfig,
    Token2MelConfig,
    TokenizerConfig,
    VocoderConfig,
)
from unisono.codec.tokenizer import SpeechTokenizer
from unisono.codec.vocoder import Vocoder
from unisono.train.codec_data import AUDIO, INDEX, CodecData, PrepareConfig, SourceSpec, prepare
from unisono.train.codec_train import (
    TOKENS_FILE,
    RefinerJob,
    Token2MelJob,
    TrainConfig,
    VocoderGtaJob,
    VocoderJob,
    assign_tokens,
    export_codec,
    fit_tokenizer,
    lr_at,
    save_state,
    tokenize_data,
)
from unisono.train.wave_discriminator import WaveDiscriminator

D = 32  # the tiny encoder's width


def tiny_tokenizer() -> SpeechTokenizer:
    torch.manual_seed(0)
    enc = AudioEncoder(EncoderConfig(d_model=D, n_layers=2, n_heads=2, ffn_dim=64))
    return SpeechTokenizer(TokenizerConfig(layer=2, codebook_size=8), encoder=enc, centroids=torch.zeros(8, D))


def codec_config() -> CodecConfig:
    c = CodecConfig(
        speaker=SpeakerEncoderConfig(channels=16, n_layers=2, dim=8),
        token2mel=Token2MelConfig(dim=32, n_layers=2, n_heads=2, ffn_dim=64),
        vocoder=VocoderConfig(dim=32, intermediate_dim=64, n_layers=2),
    )
    c.tokenizer.layer, c.tokenizer.codebook_size = 2, 8
    return c


def write_manifest(folder: Path, n: int, engines=("espeak-ng", "flite"), seed: int = 0) -> Path:
    from unisono.audio.io import save_audio

    rng = np.random.default_rng(seed)
    (folder / "wav").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        seconds = 1.0 + 0.15 * (i % 4)
        t = np.arange(int(seconds * 16000)) / 16000
        save_audio(folder / "wav" / f"u{i}.wav", (0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32))
        rows.append({"id": f"u{i}", "audio": f"wav/u{i}.wav", "text": f"sentence number {i}", "language": "en",
                     "duration": seconds, "speaker": f"v{i % 3}",
                     "meta": {"engine": engines[i % len(engines)], "augment": [{"kind": "noise"}] if i % 5 == 4 else []}})
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder / "manifest.jsonl"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("codec")
    manifest = write_manifest(root / "synth", 14)
    prepare(prepare_config(manifest), root / "data", tokenizer_factory=tiny_tokenizer, block_seconds=3.0)
    return root


def prepare_config(manifest: Path) -> PrepareConfig:
    return PrepareConfig(sources=[SourceSpec(str(manifest), limit=None, languages=("en",))], layers=(1, 2),
                         test_source=str(manifest), test_clips=3)


def test_prepare_keeps_test_texts_out_and_accounts_for_every_byte(prepared):
    data = CodecData(prepared / "data", layer=2)
    test = [json.loads(line) for line in open(prepared / "data/test-en/manifest.jsonl")]
    assert len(test) == 3 and all((prepared / "data/test-en" / r["audio"]).is_file() for r in test)
    assert {r["text"] for r in test}.isdisjoint(c["text"] for c in data.clips)
    assert not any(c["id"] in ("u4", "u9") for c in data.clips)  # augmented clips are left out
    assert len(data) + 3 == 14 - 2
    assert data.audio.size == sum(c["samples"] for c in data.clips)
    assert data.features.shape == (data.total_tokens, D)
    for i, c in enumerate(data.clips):
        assert c["tokens"] == int(np.ceil(c["samples"] / 640))
    # features of a stored clip are what the tokenizer computes for its audio
    tok = tiny_tokenizer()
    again = tok.layer_features([data.audio_of(1)], (2,))[0][2]
    np.testing.assert_allclose(data.features_of(1).astype(np.float32), again.numpy(), atol=2e-2, rtol=1e-2)


def test_prepare_resumes_after_a_kill_without_duplicates(prepared, tmp_path):
    import shutil

    data_dir = tmp_path / "data"
    shutil.copytree(prepared / "data", data_dir)
    lines = (data_dir / INDEX).read_text().splitlines(keepends=True)
    (data_dir / INDEX).write_text("".join(lines[:4]))  # killed after 4 index lines ...
    with open(data_dir / AUDIO, "ab") as f:
        f.write(b"\x01\x02" * 999)  # ... with audio of a block it never indexed
    data = prepare(prepare_config(prepared / "synth/manifest.jsonl"), data_dir, tokenizer_factory=tiny_tokenizer, block_seconds=3.0)
    before = CodecData(prepared / "data", layer=2)
    assert sorted(c["id"] for c in data.clips) == sorted(c["id"] for c in before.clips)
    assert data.audio.size == before.audio.size
    i = [c["id"] for c in data.clips].index(before.clips[-1]["id"])
    np.testing.assert_array_equal(data.audio_of(i), before.audio_of(len(before) - 1))


def test_prepare_refuses_a_folder_made_with_other_settings(prepared):
    config = PrepareConfig(sources=[], layers=(2,))
    with pytest.raises(ValueError, match="other settings"):
        prepare(config, prepared / "data", tokenizer_factory=tiny_tokenizer)


def test_prepare_keeps_the_texts_of_evaluation_manifests_out(prepared, tmp_path):
    evaluation = tmp_path / "eval.jsonl"
    evaluation.write_text("".join(json.dumps({"id": f"e{i}", "audio": "x.wav", "text": f"sentence number {i}", "language": "en",
                                               "duration": 1.0}) + "\n" for i in (0, 1, 2)))
    config = prepare_config(prepared / "synth/manifest.jsonl")
    config.exclude_texts = [str(evaluation)]
    data = prepare(config, tmp_path / "data", tokenizer_factory=tiny_tokenizer, block_seconds=3.0)
    before = CodecData(prepared / "data")
    texts = {c["text"] for c in data.clips}
    assert texts.isdisjoint({"sentence number 0", "sentence number 1", "sentence number 2"})
    assert texts == {c["text"] for c in before.clips} - {"sentence number 0", "sentence number 1", "sentence number 2"}


def test_a_clip_drawn_by_two_sources_is_stored_once(prepared, tmp_path):
    # two synthetic corpora that drew the same sentence give it the same id: the first source keeps it
    config = prepare_config(prepared / "synth/manifest.jsonl")
    config.sources = config.sources * 2
    data = prepare(config, tmp_path / "data", tokenizer_factory=tiny_tokenizer, block_seconds=3.0)
    ids = [c["id"] for c in data.clips]
    assert len(ids) == len(set(ids))
    assert sorted(ids) == sorted(c["id"] for c in CodecData(prepared / "data").clips)


def test_clean_clips_may_be_louder_or_faster_but_not_noisy():
    from unisono.train.codec_data import _is_clean

    row = lambda *kinds: {"meta": {"augment": [{"kind": k} for k in kinds]}}  # noqa: E731
    assert _is_clean({}) and _is_clean(row()) and _is_clean(row("gain", "speed"))
    for dirty in (row("noise"), row("gain", "reverb"), row("telephone"), row("speed", "limit")):
        assert not _is_clean(dirty)


def test_fit_tokenizer_assigns_every_frame_its_nearest_centroid(prepared, tmp_path):
    data = CodecData(prepared / "data", layer=2)
    centroids = fit_tokenizer(data, tmp_path, codebook_size=8, log=lambda s: None)
    tokens = np.load(tmp_path / TOKENS_FILE)
    assert len(tokens) == data.total_tokens
    feats = torch.from_numpy(np.asarray(data.features, dtype=np.float32))
    np.testing.assert_array_equal(tokens, torch.cdist(feats, centroids).argmin(-1).numpy())
    np.testing.assert_array_equal(assign_tokens(data.features, centroids, block=7), tokens)


def test_clip_weights_give_a_heavier_clip_more_of_the_codebook(prepared, tmp_path):
    data = CodecData(prepared / "data", layer=2)
    quiet = lambda s: None  # noqa: E731
    plain = fit_tokenizer(data, tmp_path / "plain", codebook_size=8, log=quiet)
    ones = fit_tokenizer(data, tmp_path / "ones", codebook_size=8, log=quiet, clip_weights=np.ones(len(data)))
    assert torch.equal(plain, ones)  # weights of one are no weights
    # features with a clear answer: the first clip's frames in 8 tight clusters of their own, the rest in 8 others
    rng = np.random.default_rng(0)
    n_first = data.clips[0]["tokens"]
    centres = rng.normal(0, 10, (16, D)).astype(np.float32)
    which = np.concatenate([rng.integers(0, 8, n_first), rng.integers(8, 16, data.total_tokens - n_first)])
    data.features = centres[which] + rng.normal(0, 0.1, (data.total_tokens, D)).astype(np.float32)
    first, rest = torch.from_numpy(data.features[:n_first]), torch.from_numpy(data.features[n_first:])
    error = lambda f, c: float(torch.cdist(f, c).min(-1).values.pow(2).mean())  # noqa: E731
    even = fit_tokenizer(data, tmp_path / "even", codebook_size=8, log=quiet)
    heavy = np.ones(len(data))
    heavy[0] = 1000.0
    weighted = fit_tokenizer(data, tmp_path / "heavy", codebook_size=8, log=quiet, clip_weights=heavy)
    assert error(first, weighted) < 0.1 * error(first, even)  # the heavy clip takes the codebook
    assert error(rest, weighted) > 10 * error(rest, even)  # from the others


def test_a_reused_codebook_keeps_its_token_ids_on_new_data(prepared, tmp_path):
    data = CodecData(prepared / "data", layer=2)
    centroids = fit_tokenizer(data, tmp_path / "a", codebook_size=8, log=lambda s: None)
    permuted = centroids.flip(0)  # another codebook: its ids must survive as they are, not be refitted
    tokens = tokenize_data(data, tmp_path / "b", permuted, log=lambda s: None)
    np.testing.assert_array_equal(tokens, 7 - np.load(tmp_path / "a" / TOKENS_FILE))
    from safetensors.torch import load_file

    assert torch.equal(load_file(str(tmp_path / "b/tokenizer.safetensors"))["centroids"], permuted)


def test_oversampled_sources_are_drawn_in_proportion_to_their_weight(prepared, tmp_path):
    data = CodecData(prepared / "data", layer=2)
    ids = [c["id"] for c in data.clips]
    rows = [json.loads(line) for line in open(prepared / "synth/manifest.jsonl")]
    few = tmp_path / "few.jsonl"  # a second "source": two of the stored clips
    few.write_text("".join(json.dumps(r) + "\n" for r in rows if r["id"] in ids[:2]))
    weights = data.draw_weights([(str(few), 5.0)])
    assert weights.tolist() == [5.0, 5.0] + [1.0] * (len(ids) - 2)
    # the first manifest that holds a clip sets its weight
    assert data.draw_weights([(str(few), 3.0), (str(prepared / "synth/manifest.jsonl"), 2.0)]).tolist() == [3.0, 3.0] + [2.0] * (len(ids) - 2)
    with pytest.raises(ValueError, match="no clip"):
        data.draw_weights([(str(prepared / "data/test-en/manifest.jsonl"), 2.0)])
    with pytest.raises(ValueError, match="positive"):
        data.draw_weights([(str(few), 0.0)])

    fit_tokenizer(data, tmp_path / "run", 8, log=lambda s: None)
    job = Token2MelJob(data, np.load(tmp_path / "run" / TOKENS_FILE), tmp_path / "run", codec_config(),
                       TrainConfig(oversample=((str(few), 5.0),)), log=lambda s: None)
    drawn = np.bincount(job.draw_clips(20000), minlength=len(ids)) / 20000
    np.testing.assert_allclose(drawn, weights / weights.sum(), atol=0.01)

    from typer.testing import CliRunner

    from unisono.cli import app

    for bad in (f"{few}", f"{few}=many", f"{tmp_path / 'missing.jsonl'}=2", f"{prepared / 'data/test-en/manifest.jsonl'}=2"):
        res = CliRunner().invoke(app, ["codec", "train", "token2mel", str(prepared / "data"), str(tmp_path / "run"), "--steps", "1",
                                       "--oversample", bad])
        assert res.exit_code == 2 and ("--oversample" in res.output or "no clip of" in res.output), res.output
    assert not (tmp_path / "run/token2mel.pt").exists()


@pytest.mark.slow
def test_training_jobs_learn_resume_exactly_and_export(prepared, tmp_path):
    data = CodecData(prepared / "data")
    fit_tokenizer(CodecData(prepared / "data", layer=2), tmp_path / "run", 8, log=lambda s: None)
    tokens = np.load(tmp_path / "run" / TOKENS_FILE)
    cfg = TrainConfig(steps=40, lr=3e-3, warmup=5, batch=4, segment_frames=20, max_tokens=30, log_every=5, checkpoint_every=5)
    quiet = lambda s: None  # noqa: E731

    voc = VocoderJob(data, tmp_path / "run", codec_config(), cfg, log=quiet)
    voc.train()
    log = [json.loads(line) for line in open(tmp_path / "run/vocoder.jsonl")]
    assert log[-1]["mel_l1"] < log[0]["mel_l1"]

    # token2mel: 6 steps straight vs 3 steps, a "kill", and a resumed job
    straight = Token2MelJob(data, tokens, tmp_path / "a", codec_config(), TrainConfig(steps=6, batch=3, log_every=3, checkpoint_every=3), log=quiet)
    straight.train()
    first = Token2MelJob(data, tokens, tmp_path / "b", codec_config(), TrainConfig(steps=6, batch=3, log_every=3, checkpoint_every=3), log=quiet)
    first.train(until=3)
    resumed = Token2MelJob(data, tokens, tmp_path / "b", codec_config(), TrainConfig(steps=6, batch=3, log_every=3, checkpoint_every=3), log=quiet)
    assert resumed.step == 3
    resumed.train()
    for k, v in straight.modules["token2mel"].state_dict().items():
        torch.testing.assert_close(resumed.modules["token2mel"].state_dict()[k], v)

    t2m = Token2MelJob(data, tokens, tmp_path / "run", codec_config(), cfg, log=quiet)
    t2m.train()
    log = [json.loads(line) for line in open(tmp_path / "run/token2mel.jsonl")]
    assert log[-1]["mel_l1"] < log[0]["mel_l1"]

    out = export_codec(tmp_path / "run", tmp_path / "speech", codec_config())
    codec = SpeechCodec.load(out)
    voice = codec.speaker_embedding(data.audio_of(0))
    wave = codec.detokenize(torch.from_numpy(tokens[:20].astype(np.int64)), voice)
    assert wave.shape == (20 * 640,) and np.isfinite(wave).all()

    # the refiner trains on the frozen token2mel of the run and exports with it
    refined = codec_config()
    refined.refiner = RefinerConfig(channels=16, dilations=(1, 2), steps=2)
    with pytest.raises(FileNotFoundError, match="refiner.pt"):
        export_codec(tmp_path / "run", tmp_path / "speech-r", refined)
    frozen = {k: v.clone() for k, v in t2m.modules["token2mel"].state_dict().items()}
    job = RefinerJob(data, tokens, tmp_path / "run", refined, cfg, log=quiet)
    job.train()
    log = [json.loads(line) for line in open(tmp_path / "run/refiner.jsonl")]
    assert log[-1]["flow"] < log[0]["flow"]
    for k, v in job.token2mel.state_dict().items():
        torch.testing.assert_close(v, frozen[k])  # only the refiner learned
    codec = SpeechCodec.load(export_codec(tmp_path / "run", tmp_path / "speech-r", refined))
    assert codec.refiner is not None
    wave = codec.detokenize(torch.from_numpy(tokens[:20].astype(np.int64)), voice)
    assert wave.shape == (20 * 640,) and np.isfinite(wave).all()

    # the vocoder fine-tuned on the detokenizer's own mels starts from vocoder.pt and exports by name
    gta = VocoderGtaJob(data, tokens, tmp_path / "run", refined, TrainConfig(steps=0, batch=4, max_tokens=10), log=quiet)
    for k, v in voc.modules["vocoder"].state_dict().items():
        torch.testing.assert_close(gta.modules["vocoder"].state_dict()[k], v)
    gta = VocoderGtaJob(data, tokens, tmp_path / "run", refined, TrainConfig(steps=30, lr=3e-3, warmup=5, batch=4, max_tokens=10,
                                                                             log_every=5, checkpoint_every=10), log=quiet)
    gta.train()
    log = [json.loads(line) for line in open(tmp_path / "run/vocoder-gta.jsonl")]
    assert log[-1]["stft"] < log[0]["stft"]
    codec = SpeechCodec.load(export_codec(tmp_path / "run", tmp_path / "speech-g", refined, vocoder="vocoder-gta"))
    for k, v in gta.modules["vocoder"].state_dict().items():
        torch.testing.assert_close(codec.vocoder.state_dict()[k], v.half().float())

    # fine-tuning in a new run: the weights of the given checkpoint, a fresh step count and schedule
    # (a vocoder-gta run starts from them, not from its vocoder.pt)
    import shutil

    (tmp_path / "tune").mkdir()
    for f in (TOKENS_FILE, "tokenizer.safetensors", "token2mel.pt", "refiner.pt", "vocoder.pt"):
        shutil.copy(tmp_path / "run" / f, tmp_path / "tune" / f)
    tune = TrainConfig(steps=4, batch=4, max_tokens=10, init_from=str(tmp_path / "run/vocoder-gta.pt"))
    again = VocoderGtaJob(data, tokens, tmp_path / "tune", refined, tune, log=quiet)
    assert again.step == 0 and lr_at(0, tune) < tune.lr
    for k, v in gta.modules["vocoder"].state_dict().items():
        torch.testing.assert_close(again.modules["vocoder"].state_dict()[k], v)
    again.train()
    assert again.step == 4 and VocoderGtaJob(data, tokens, tmp_path / "tune", refined, tune, log=quiet).step == 4  # then resumes as usual
    with pytest.raises(ValueError, match="not the token2mel job"):
        Token2MelJob(data, tokens, tmp_path / "fresh", codec_config(), TrainConfig(init_from=str(tmp_path / "run/vocoder.pt")), log=quiet)
    with pytest.raises(FileNotFoundError, match="nothing to start from"):
        Token2MelJob(data, tokens, tmp_path / "fresh", codec_config(), TrainConfig(init_from=str(tmp_path / "none.pt")), log=quiet)

    # the command line: inference settings of the refiner are chosen at export
    from typer.testing import CliRunner

    from unisono.cli import app

    (tmp_path / "run/codec.json").write_text(json.dumps(refined.to_dict()))
    out = tmp_path / "speech-cli"
    res = CliRunner().invoke(app, ["codec", "export", str(tmp_path / "run"), str(out), "--vocoder", "vocoder-gta",
                                   "--refiner-temperature", "0.3", "--refiner-steps", "4"])
    assert res.exit_code == 0, res.output
    exported = SpeechCodec.load(out).config.refiner
    assert (exported.temperature, exported.steps, exported.dilations) == (0.3, 4, (1, 2))
    (tmp_path / "run/codec.json").write_text(json.dumps(codec_config().to_dict()))
    res = CliRunner().invoke(app, ["codec", "export", str(tmp_path / "run"), str(out), "--refiner-temperature", "0.3"])
    assert res.exit_code == 2 and "has no refiner" in " ".join(res.output.replace("│", " ").split())


def test_the_reencoding_distance_is_zero_on_the_real_audio_and_reaches_only_the_fake(prepared):
    from unisono.train.codec_train import Reencoder

    data = CodecData(prepared / "data")
    enc = tiny_tokenizer().encoder
    clips = [torch.from_numpy(data.audio_of(i)) for i in range(3)]
    noisy = [c + 0.05 * torch.randn_like(c) for c in clips]
    single = {}
    for layers in (1, 2, (2, 1)):  # an inner layer (hooked), the output, both
        re = Reencoder(enc, layers)
        re.fit_scale(clips)
        assert re.scale.shape == (len(re.layers), D) and bool((re.scale > 0).all())
        assert float(re.distance(clips, clips)) == 0.0
        fake = [c.clone().requires_grad_(True) for c in noisy]
        d = re.distance(fake, clips)
        assert float(d.detach()) > 0
        d.backward()
        assert all(f.grad is not None and float(f.grad.abs().sum()) > 0 for f in fake)
        assert all(p.grad is None for p in enc.parameters())
        single[layers] = float(d.detach())
    assert single[(2, 1)] == pytest.approx((single[1] + single[2]) / 2, rel=1e-5)  # each layer on its own scale, averaged
    with pytest.raises(ValueError, match="layers"):
        Reencoder(enc, (1, 3))


def run_and_exported_codec(prepared: Path, tmp_path: Path, seed: int, trained_token2mel: bool = False):
    """A run folder with a fitted tokenizer (tmp_path/run) and a random exported codec with that codebook to
    fine-tune (tmp_path/speech): the data, its tokens, the codec folder and the codec as loaded from it. With
    `trained_token2mel` the run also holds that codec's speaker encoder and token-to-mel model as its
    token2mel.pt, for the jobs that train the vocoder on them."""
    centroids = fit_tokenizer(CodecData(prepared / "data", layer=2), tmp_path / "run", 8, log=lambda s: None)
    tokens = np.load(tmp_path / "run" / TOKENS_FILE)
    torch.manual_seed(seed)
    # the run's own codebook, as when a shipped codec is fine-tuned on its tokens (another would be remapped)
    start = SpeechCodec(codec_config(), centroids=centroids).save(tmp_path / "speech")
    codec = SpeechCodec.load(start)
    if trained_token2mel:
        save_state(tmp_path / "run/token2mel.pt", step=0, modules={"speaker": codec.speaker.state_dict(),
                                                                    "token2mel": codec.token2mel.state_dict()})
    return CodecData(prepared / "data"), tokens, start, codec


@pytest.mark.slow
def test_token2mel_fine_tunes_an_exported_codec_with_the_reencoding_loss(prepared, tmp_path):
    quiet = lambda s: None  # noqa: E731
    data, tokens, start, shipped = run_and_exported_codec(prepared, tmp_path, seed=1)
    cfg = TrainConfig(steps=40, lr=3e-3, warmup=5, batch=4, max_tokens=30, log_every=5, checkpoint_every=10,
                      init_from=str(start), cycle_weight=30.0, cycle_clips=2, cycle_tokens=20)
    job = Token2MelJob(data, tokens, tmp_path / "run", codec_config(), cfg, log=quiet, encoder=tiny_tokenizer().encoder)
    for k, v in shipped.token2mel.state_dict().items():  # the exported (float16) weights are the start
        torch.testing.assert_close(job.modules["token2mel"].state_dict()[k], v.float())
    job.train()
    log = [json.loads(line) for line in open(tmp_path / "run/token2mel.jsonl")]
    assert log[-1]["cycle"] < log[0]["cycle"] and log[-1]["mel_l1"] < log[0]["mel_l1"]
    for k, v in shipped.vocoder.state_dict().items():  # the vocoder it hears through stays as it was
        torch.testing.assert_close(job.cycle_vocoder.state_dict()[k], v.float())
    # exported with the vocoder of the codec it started from
    tuned = SpeechCodec.load(export_codec(tmp_path / "run", tmp_path / "tuned", codec_config(), vocoder=str(start)))
    for k, v in shipped.vocoder.state_dict().items():
        torch.testing.assert_close(tuned.vocoder.state_dict()[k], v)
    for k, v in job.modules["token2mel"].state_dict().items():
        torch.testing.assert_close(tuned.token2mel.state_dict()[k], v.half().float())
    # resumed without --init-from (a longer schedule), once the run has a vocoder of its own: it hears through
    # the same vocoder as before and goes on
    own = Vocoder(codec_config().vocoder, codec_config().mel)
    save_state(tmp_path / "run/vocoder-gta.pt", step=0, modules={"vocoder": own.state_dict()})
    longer = replace(cfg, steps=45, init_from=None)
    resumed = Token2MelJob(data, tokens, tmp_path / "run", codec_config(), longer, log=quiet, encoder=tiny_tokenizer().encoder)
    assert resumed.step == 40 and resumed.cfg.init_from == str(start) and longer.init_from is None
    for k, v in shipped.vocoder.state_dict().items():
        torch.testing.assert_close(resumed.cycle_vocoder.state_dict()[k], v.float())
    resumed.train()
    assert resumed.step == 45
    with pytest.raises(FileNotFoundError, match="needs a trained vocoder"):
        Token2MelJob(data, tokens, tmp_path / "fresh", codec_config(), TrainConfig(cycle_weight=1.0), log=quiet,
                     encoder=tiny_tokenizer().encoder)
    named = Token2MelJob(data, tokens, tmp_path / "fresh", codec_config(), TrainConfig(cycle_weight=1.0, cycle_vocoder=str(start)),
                         log=quiet, encoder=tiny_tokenizer().encoder)
    for k, v in shipped.vocoder.state_dict().items():
        torch.testing.assert_close(named.cycle_vocoder.state_dict()[k], v.float())


@pytest.mark.slow
def test_vocoder_gta_with_the_reencoding_loss_trains_the_vocoder_only(prepared, tmp_path):
    quiet = lambda s: None  # noqa: E731
    data, tokens, start, shipped = run_and_exported_codec(prepared, tmp_path, seed=2, trained_token2mel=True)
    cfg = TrainConfig(steps=30, lr=3e-3, warmup=5, batch=4, max_tokens=10, log_every=5, checkpoint_every=10,
                      init_from=str(start), cycle_weight=30.0, cycle_clips=2, cycle_tokens=8)
    job = VocoderGtaJob(data, tokens, tmp_path / "run", codec_config(), cfg, log=quiet, encoder=tiny_tokenizer().encoder)
    assert job.cycle_vocoder is None and job.reencoder is not None  # the vocoder in training is the one heard
    job.train()
    log = [json.loads(line) for line in open(tmp_path / "run/vocoder-gta.jsonl")]
    assert all("cycle" in row for row in log) and log[-1]["cycle"] < log[0]["cycle"]
    changed = [k for k, v in shipped.vocoder.state_dict().items()
               if not torch.equal(job.modules["vocoder"].state_dict()[k], v.float())]
    assert changed  # the vocoder learnt ...
    for k, v in shipped.token2mel.state_dict().items():  # ... while the token-to-mel model it listens to did not
        torch.testing.assert_close(job.token2mel.state_dict()[k], v.float())


def test_a_fine_tune_may_deepen_the_token2mel_model_from_the_command_line(prepared, tmp_path):
    from typer.testing import CliRunner

    from unisono.cli import app

    fit_tokenizer(CodecData(prepared / "data", layer=2), tmp_path / "run", 8, log=lambda s: None)
    (tmp_path / "run/codec.json").write_text(json.dumps(codec_config().to_dict()))
    torch.manual_seed(4)
    start = SpeechCodec(codec_config(), centroids=torch.randn(8, D)).save(tmp_path / "speech")
    args = ["codec", "train", "token2mel", str(prepared / "data"), str(tmp_path / "run"), "--init-from", str(start),
            "--batch", "2", "--max-tokens", "10"]
    res = CliRunner().invoke(app, args + ["--steps", "2", "--depth", "3", "--post-depth", "4"])
    assert res.exit_code == 0, res.output
    assert "1 blocks and 2 post-net layers added" in " ".join(res.output.split())
    shape = json.loads((tmp_path / "run/codec.json").read_text())["token2mel"]
    assert (shape["n_layers"], shape["post_layers"]) == (3, 4)
    weights = torch.load(tmp_path / "run/token2mel.pt", weights_only=False)["modules"]["token2mel"]
    assert "blocks.2.ffn.2.weight" in weights and "post.3.weight" in weights
    # resuming with the same depth goes on; another depth needs a new run folder
    assert CliRunner().invoke(app, args + ["--steps", "3", "--depth", "3"]).exit_code == 0
    res = CliRunner().invoke(app, args + ["--steps", "4", "--depth", "5"])
    assert res.exit_code == 2 and "new run folder" in " ".join(res.output.replace("│", " ").split())
    res = CliRunner().invoke(app, ["codec", "train", "vocoder-gta", str(prepared / "data"), str(tmp_path / "run"), "--post-depth", "5"])
    assert res.exit_code == 2 and "token-to-mel" in res.output
    before = (tmp_path / "run/codec.json").read_text()  # a refused command changes nothing in the run
    res = CliRunner().invoke(app, ["codec", "train", "refiner", str(prepared / "data"), str(tmp_path / "run"), "--cycle-weight", "1"])
    assert res.exit_code == 2 and (tmp_path / "run/codec.json").read_text() == before


def test_the_reencoding_loss_listens_at_the_layers_asked_from_the_command_line(prepared, tmp_path):
    from typer.testing import CliRunner

    from unisono.cli import app

    fit_tokenizer(CodecData(prepared / "data", layer=1), tmp_path / "run", 8, log=lambda s: None)
    torch.manual_seed(5)
    start = SpeechCodec(codec_config(), centroids=torch.randn(8, D)).save(tmp_path / "speech")
    args = ["codec", "train", "token2mel", str(prepared / "data"), str(tmp_path / "run"), "--init-from", str(start),
            "--batch", "2", "--max-tokens", "10", "--steps", "1"]
    res = CliRunner().invoke(app, args + ["--cycle-layer", "2"])
    assert res.exit_code == 2 and "--cycle-weight" in res.output
    res = CliRunner().invoke(app, args + ["--cycle-weight", "1", "--cycle-layer", "7"])
    assert res.exit_code == 2 and "does not fit the shape" in " ".join(res.output.replace("│", " ").split())  # a default codec.json
    (tmp_path / "run/codec.json").write_text(json.dumps(codec_config().to_dict()))
    res = CliRunner().invoke(app, args + ["--cycle-weight", "1", "--cycle-layer", "7"])
    assert res.exit_code == 2 and "layers [7]" in " ".join(res.output.replace("│", " ").split())
    assert not (tmp_path / "run/token2mel.pt").exists()
    res = CliRunner().invoke(app, args + ["--cycle-weight", "1", "--cycle-layer", "2", "--cycle-layer", "1"])
    assert res.exit_code == 0, res.output
    assert "encoder layers 1, 2" in " ".join(res.output.split())
    saved = torch.load(tmp_path / "run/token2mel.pt", weights_only=False)["train_config"]
    assert tuple(saved["cycle_layers"]) == (2, 1)
    res = CliRunner().invoke(app, ["codec", "train", "vocoder", str(prepared / "data"), str(tmp_path / "voc"), "--self-reference", "0.5"])
    assert res.exit_code == 2 and "no voice reference" in " ".join(res.output.replace("│", " ").split())


def test_the_voice_reference_is_another_clip_of_the_speaker_or_for_a_share_the_clip_itself(prepared, tmp_path):
    fit_tokenizer(CodecData(prepared / "data", layer=2), tmp_path / "run", 8, log=lambda s: None)
    data, tokens = CodecData(prepared / "data"), np.load(tmp_path / "run" / TOKENS_FILE)

    def sources(share: float, draws: int = 200) -> list[bool]:
        """For each draw: whether the reference is a span of the clip itself."""
        job = Token2MelJob(data, tokens, tmp_path / f"run-{share}", codec_config(), TrainConfig(self_reference=share),
                           log=lambda s: None)
        own = []
        for k in range(draws):
            i = k % len(data)
            ref, audio = job._reference(i), data.audio_of(i)
            spans = np.lib.stride_tricks.sliding_window_view(audio, len(ref)) if len(ref) <= len(audio) else np.empty((0, len(ref)))
            own.append(bool((spans == ref).all(1).any()))
        return own

    assert min(len(v) for v in Token2MelJob(data, tokens, tmp_path / "r", codec_config(), TrainConfig(),
                                            log=lambda s: None).by_speaker.values()) > 1  # every speaker has other clips
    assert not any(sources(0.0)) and all(sources(1.0))
    assert 0.35 < np.mean(sources(0.5)) < 0.65


@pytest.fixture(scope="module")
def whisper_encoder() -> AudioEncoder:
    return AudioEncoder.from_source("bundled:whisper-tiny.en")


def test_the_transcript_loss_refuses_a_whisper_checkpoint_missing_decoder_weights(tmp_path, whisper_encoder):
    from safetensors.torch import load_file, save_file

    from unisono.model.whisper_source import convert_whisper
    from unisono.train.codec_train import TranscriptLoss

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
    from unisono.train.codec_train import TranscriptLoss

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

    # read in Whisper's 30 s window: transformers' whole model on the features of its own feature extractor
    from transformers import WhisperFeatureExtractor

    windowed = TranscriptLoss("bundled:whisper-tiny.en", whisper_encoder, window=True)
    wave = audio.clone().requires_grad_(True)
    in_window = windowed([wave], [text], ["en"])
    in_window.backward()
    assert wave.grad is not None and float(wave.grad.abs().sum()) > 0
    features = WhisperFeatureExtractor(feature_size=80)(audio.numpy(), sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        out = reference(input_features=features, decoder_input_ids=seq[None, :-1], labels=labels[None])
    assert float(in_window.detach()) == pytest.approx(float(out.loss), rel=1e-3)
    assert abs(float(in_window.detach()) - float(right.detach())) > 1e-3  # a different reading from the clip alone


@pytest.mark.slow
def test_the_transcript_loss_reads_only_the_chosen_sources_and_warns_of_texts_in_capitals(prepared, tmp_path, whisper_encoder):
    data, tokens, start, _ = run_and_exported_codec(prepared, tmp_path, seed=3)
    cfg = TrainConfig(steps=1, batch=2, max_tokens=34, init_from=str(start), transcript_weight=1.0, transcript_clips=2)
    rows = [json.loads(line) for line in open(prepared / "synth/manifest.jsonl")]
    stored = [c["id"] for c in data.clips]
    few = tmp_path / "few.jsonl"  # a source holding three of the stored clips
    few.write_text("".join(json.dumps(r) + "\n" for r in rows if r["id"] in stored[:3]))
    lines = []
    every = Token2MelJob(data, tokens, tmp_path / "every", codec_config(), cfg, log=lines.append, encoder=whisper_encoder)
    chosen = Token2MelJob(data, tokens, tmp_path / "chosen", codec_config(), replace(cfg, transcript_sources=(str(few),)),
                          log=lines.append, encoder=whisper_encoder)
    assert set(chosen.transcript_pool) == set(every.transcript_pool) & {0, 1, 2} and chosen.transcript_pool
    assert set(chosen.draw_clips(200, among=chosen.transcript_pool)) <= {0, 1, 2}
    assert not any("capitals" in line for line in lines)  # "sentence number 3"
    with pytest.raises(ValueError, match="no clip of"):
        Token2MelJob(data, tokens, tmp_path / "none", codec_config(),
                     replace(cfg, transcript_sources=(str(prepared / "data/test-en/manifest.jsonl"),)), log=lines.append,
                     encoder=whisper_encoder)
    with pytest.raises(ValueError, match="transcript_weight"):
        TrainConfig(transcript_sources=(str(few),))

    for clip in data.clips[:4]:  # a real-speech corpus's convention: "SENTENCE NUMBER THREE"
        clip["text"] = clip["text"].upper()
    Token2MelJob(data, tokens, tmp_path / "shouting", codec_config(), cfg, log=lines.append, encoder=whisper_encoder)
    warned = [line for line in lines if "capitals" in line]
    n_pool = len(every.transcript_pool)
    n_caps = sum(1 for i in every.transcript_pool if i < 4)
    assert len(warned) == 1 and f"{n_caps} of the transcript loss's {n_pool} texts" in warned[0], warned


def test_texts_in_a_corpus_s_capitals_are_told_from_words_spelt_as_the_recogniser_writes_them():
    from unisono.train.codec_train import _in_capitals

    assert _in_capitals("HE HATES SHOOTING") and _in_capitals("RUBOUT G M E F THREE NINE") and _in_capitals("YES")
    assert not _in_capitals("H-O-W-E-L-L.") and not _in_capitals("N-L-N-S175.") and not _in_capitals("Enter 624.")


def test_the_transcript_loss_reads_the_texts_of_its_source_manifests(prepared, tmp_path, whisper_encoder):
    data, tokens, start, _ = run_and_exported_codec(prepared, tmp_path, seed=3)
    cfg = TrainConfig(steps=1, batch=2, max_tokens=34, init_from=str(start), transcript_weight=1.0, transcript_clips=3)
    rows = {r["id"]: r for r in map(json.loads, open(prepared / "synth/manifest.jsonl"))}
    stored = [c["id"] for c in data.clips]
    # the recogniser's spelling of three clips, and a fourth it misheard (no text: not to be read)
    rewritten = [rows[i] | {"text": f"Sentence no. {k}!"} for k, i in enumerate(stored[:3])] + [rows[stored[3]] | {"text": ""}]
    spelt, plain = tmp_path / "spelt.jsonl", tmp_path / "plain.jsonl"
    spelt.write_text("".join(json.dumps(r) + "\n" for r in rewritten))
    plain.write_text("".join(json.dumps(rows[i]) + "\n" for i in stored[:6]))
    job = Token2MelJob(data, tokens, tmp_path / "run", codec_config(),
                       replace(cfg, transcript_sources=(str(spelt), str(plain))), log=lambda s: None, encoder=whisper_encoder)
    short = {i for i in range(6) if data.clips[i]["tokens"] <= 34}
    assert set(job.transcript_pool) == short - {3} and short & {0, 1, 2}
    read = []
    job.transcript = lambda waves, texts, languages: read.append(texts) or torch.zeros((), requires_grad=True)
    for _ in range(20):
        job.transcript_loss()
    heard = {t for texts in read for t in texts}
    assert heard <= {f"Sentence no. {k}!" for k in range(3)} | {data.clips[i]["text"] for i in (4, 5)}
    assert any(t.startswith("Sentence no.") for t in heard)
    assert not heard & {data.clips[i]["text"] for i in range(4)}  # the first source's text wins
    assert {t for i, t in job.transcript_texts.items() if i < 3} == {f"Sentence no. {k}!" for k in range(3)}


def test_token2mel_with_the_transcript_loss_trains_on_whole_readable_clips_through_a_frozen_vocoder(prepared, tmp_path, whisper_encoder):
    quiet = lambda s: None  # noqa: E731
    data, tokens, start, shipped = run_and_exported_codec(prepared, tmp_path, seed=3)
    cfg = TrainConfig(steps=30, lr=3e-3, warmup=5, batch=4, max_tokens=34, log_every=5, checkpoint_every=10,
                      init_from=str(start), transcript_weight=1.0, transcript_clips=2)
    job = Token2MelJob(data, tokens, tmp_path / "run", codec_config(), cfg, log=quiet, encoder=whisper_encoder)
    assert job.reencoder is None and job.cycle_vocoder is not None
    # clips of 1.0-1.45 s are 25-37 tokens: those over 34 are left out, whole clips are never cropped
    assert job.transcript_pool and all(data.clips[i]["tokens"] <= 34 for i in job.transcript_pool)
    assert len(job.transcript_pool) < len(data)
    job.train()
    log = [json.loads(line) for line in open(tmp_path / "run/token2mel.jsonl")]
    assert all(np.isfinite(row["transcript"]) for row in log)
    assert log[-1]["transcript"] < log[0]["transcript"]  # it learns to make its texts readable
    for k, v in shipped.vocoder.state_dict().items():  # the vocoder it speaks through stays as it was
        torch.testing.assert_close(job.cycle_vocoder.state_dict()[k], v.float())
    # --oversample weighs the whole clips as it weighs the crops
    rows = [json.loads(line) for line in open(prepared / "synth/manifest.jsonl")]
    first = [data.clips[i]["id"] for i in job.transcript_pool[:2]]
    few = tmp_path / "few.jsonl"
    few.write_text("".join(json.dumps(r) + "\n" for r in rows if r["id"] in first))
    weighted = Token2MelJob(data, tokens, tmp_path / "weighted", codec_config(), replace(cfg, oversample=((str(few), 5.0),)),
                            log=quiet, encoder=whisper_encoder)
    drawn = np.bincount(weighted.draw_clips(20000, among=job.transcript_pool), minlength=len(data))[job.transcript_pool] / 20000
    expected = np.array([5.0, 5.0] + [1.0] * (len(job.transcript_pool) - 2))
    np.testing.assert_allclose(drawn, expected / expected.sum(), atol=0.01)
    with pytest.raises(ValueError, match="transcript loss needs clips"):
        Token2MelJob(data, tokens, tmp_path / "short", codec_config(), replace(cfg, max_tokens=5), log=quiet,
                     encoder=whisper_encoder)


@pytest.mark.slow
def test_vocoder_gta_with_the_transcript_loss_trains_the_vocoder_on_whole_clips_longer_than_its_crops(prepared, tmp_path, whisper_encoder):
    quiet = lambda s: None  # noqa: E731
    data, tokens, start, shipped = run_and_exported_codec(prepared, tmp_path, seed=5, trained_token2mel=True)
    cfg = TrainConfig(steps=30, lr=3e-3, warmup=5, batch=4, max_tokens=10, log_every=5, checkpoint_every=10,
                      init_from=str(start), transcript_weight=1.0, transcript_clips=2, transcript_tokens=34)
    job = VocoderGtaJob(data, tokens, tmp_path / "run", codec_config(), cfg, log=quiet, encoder=whisper_encoder)
    assert job.cycle_vocoder is None and job.reencoder is None  # the vocoder in training is the one read
    # the crops are of 10 tokens, the clips read whole are of up to 34
    assert job.transcript_pool and all(data.clips[i]["tokens"] <= 34 for i in job.transcript_pool)
    assert max(data.clips[i]["tokens"] for i in job.transcript_pool) > 10
    job.train()
    log = [json.loads(line) for line in open(tmp_path / "run/vocoder-gta.jsonl")]
    assert all(np.isfinite(row["transcript"]) for row in log)
    assert log[-1]["transcript"] < log[0]["transcript"]  # the vocoder learns to make the texts readable ...
    for k, v in shipped.token2mel.state_dict().items():  # ... from mels that stay as they were
        torch.testing.assert_close(job.token2mel.state_dict()[k], v.float())
    (tmp_path / "short").mkdir()
    shutil.copy(tmp_path / "run/token2mel.pt", tmp_path / "short")
    with pytest.raises(ValueError, match="at most 5 tokens"):  # without transcript_tokens the crops' bound holds
        VocoderGtaJob(data, tokens, tmp_path / "short", codec_config(), replace(cfg, max_tokens=5, transcript_tokens=None),
                      log=quiet, encoder=whisper_encoder)


def test_the_voice_term_is_the_l1_between_long_term_spectra_of_the_transcript_clips(prepared, tmp_path, whisper_encoder):
    from unisono.codec.mel import MelSpectrogram

    data, tokens, start, _ = run_and_exported_codec(prepared, tmp_path, seed=4)
    cfg = TrainConfig(steps=2, batch=2, max_tokens=34, init_from=str(start), transcript_weight=1.0, transcript_clips=3,
                      voice_weight=1.0)
    job = Token2MelJob(data, tokens, tmp_path / "run", codec_config(), cfg, log=lambda s: None, encoder=whisper_encoder)

    class Flat(torch.nn.Module):  # the same log-mel in every frame: its long-term spectrum is that column
        def __init__(self):
            super().__init__()
            self.column = torch.nn.Parameter(torch.linspace(-9.0, -2.0, job.codec_config.mel.n_mels)[:, None])

        def forward(self, tokens, speaker, lengths):
            return self.column.expand(-1, job.codec_config.token2mel.upsample * tokens.shape[1])[None].expand(len(tokens), -1, -1)

    job.modules["token2mel"] = flat = Flat()
    state = job.rng.getstate()
    drawn = job.draw_clips(3, among=job.transcript_pool)
    job.rng.setstate(state)
    transcript, voice = job.transcript_loss()
    mel, spt = MelSpectrogram(job.codec_config.mel), job.codec_config.tokenizer.samples_per_token
    expected = []
    for i in drawn:
        n = data.clips[i]["tokens"]
        real = mel(torch.from_numpy(data.audio_of(i)[: spt * n]))[:, : 4 * n]
        expected.append(float((flat.column[:, 0].detach() - real.mean(-1)).abs().mean()))
    assert float(voice.detach()) == pytest.approx(float(np.mean(expected)), rel=1e-5)
    assert float(voice.detach()) > 0.1 and torch.isfinite(transcript)
    voice.backward()
    assert flat.column.grad is not None and flat.column.grad.abs().sum() > 0


def test_the_envelope_term_is_the_l1_between_the_envelopes_of_predicted_and_real_mels(prepared, tmp_path):
    from unisono.codec.mel import spectral_envelope

    data, tokens, start, _ = run_and_exported_codec(prepared, tmp_path, seed=5)
    cfg = TrainConfig(steps=2, batch=2, max_tokens=30, init_from=str(start), envelope_weight=2.0, envelope_cepstra=8)
    job = Token2MelJob(data, tokens, tmp_path / "run", codec_config(), cfg, log=lambda s: None)
    for module in job.modules.values():
        module.eval()  # no dropout: the two predictions below must be the same
    state = job.rng.getstate()
    tok, lengths, target, ref_mel, ref_len, _ = job.batch()
    job.rng.setstate(state)
    with torch.no_grad():
        pred = job.predict_mel(tok, ref_mel, ref_len, lengths)
    total, parts = job.loss()
    expected = np.mean([float((spectral_envelope(pred[b], 8) - spectral_envelope(target[b], 8))[:, : 4 * n].abs().sum())
                        for b, n in enumerate(lengths.tolist())]) * len(lengths) / (4 * int(lengths.sum()) * pred.shape[1])
    assert parts["envelope"] == pytest.approx(expected, rel=1e-4)
    assert float(total.detach()) == pytest.approx(parts["mel_l1"] + 2.0 * parts["envelope"], rel=1e-5)
    assert 0 < parts["envelope"] < parts["mel_l1"]  # the envelope is a part of what the mel L1 counts


def test_options_of_a_loss_that_is_off_are_refused():
    with pytest.raises(ValueError, match="transcript_weight"):
        TrainConfig(voice_weight=1.0)
    with pytest.raises(ValueError, match="cycle_weight"):
        TrainConfig(cycle_layers=(3,))
    TrainConfig(voice_weight=1.0, transcript_weight=1.0, cycle_layers=(3,), cycle_weight=1.0)
    TrainConfig(transcript_weight=1.0, device="cuda")  # every loss runs where the models train


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_transcript_loss_on_a_gpu_gives_the_cpu_figure_and_gradient(whisper_encoder):
    from tests.conftest import EXAMPLE_TEXT, EXAMPLE_WAV
    from unisono.audio.io import load_audio
    from unisono.train.codec_train import TranscriptLoss

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


def test_the_adversarial_term_trains_a_discriminator_beside_the_model_and_resumes_exactly(prepared, tmp_path):
    data, tokens, start, _ = run_and_exported_codec(prepared, tmp_path, seed=6)
    quiet = lambda s: None  # noqa: E731
    cfg = TrainConfig(steps=4, batch=3, max_tokens=30, init_from=str(start), adversarial_weight=0.5,
                      log_every=1, checkpoint_every=2)
    job = Token2MelJob(data, tokens, tmp_path / "run", codec_config(), cfg, log=quiet)
    trained = {id(p) for group in job.opt.param_groups for p in group["params"]}
    assert not any(id(p) in trained for p in job.discriminator.parameters())  # its own optimiser
    before = {k: v.clone() for k, v in job.discriminator.state_dict().items()}
    for module in job.modules.values():
        module.eval()  # no dropout: the total below is recomputed from the parts
    total, parts = job.loss()
    assert float(total.detach()) == pytest.approx(parts["mel_l1"] + 0.5 * (parts["adversarial"] + 2 * parts["feature_match"]), rel=1e-5)
    assert parts["disc"] > 0 and parts["adversarial"] > 0 and parts["feature_match"] > 0
    assert any(not torch.equal(v, job.discriminator.state_dict()[k]) for k, v in before.items())  # it took a step

    # 4 steps straight, against 2, a "kill" and a resumed job: model and discriminator alike
    straight = Token2MelJob(data, tokens, tmp_path / "run", codec_config(), cfg, log=quiet)
    straight.train()
    first = Token2MelJob(data, tokens, tmp_path / "c", codec_config(), cfg, log=quiet)
    first.train(until=2)
    assert "discriminator" in torch.load(tmp_path / "c/token2mel.pt", weights_only=False)
    resumed = Token2MelJob(data, tokens, tmp_path / "c", codec_config(), cfg, log=quiet)
    assert resumed.step == 2
    resumed.train()
    for name in ("token2mel", "speaker"):
        for k, v in straight.modules[name].state_dict().items():
            torch.testing.assert_close(resumed.modules[name].state_dict()[k], v)
    for k, v in straight.discriminator.state_dict().items():
        torch.testing.assert_close(resumed.discriminator.state_dict()[k], v)
    log = [json.loads(line) for line in open(tmp_path / "run/token2mel.jsonl")]
    assert {"disc", "adversarial", "feature_match"} <= set(log[-1])
    # nothing of the discriminator is exported
    codec = SpeechCodec.load(export_codec(tmp_path / "run", tmp_path / "speech-a", codec_config(), vocoder=str(start)))
    assert not any("disc" in k for k in codec.state_dict())


def test_the_vocoders_adversarial_term_judges_audio_crops_and_resumes_exactly(prepared, tmp_path):
    data, tokens, start, _ = run_and_exported_codec(prepared, tmp_path, seed=7, trained_token2mel=True)
    quiet = lambda s: None  # noqa: E731
    cfg = TrainConfig(steps=4, batch=3, segment_frames=40, init_from=str(start), adversarial_weight=0.5,
                      log_every=1, checkpoint_every=2)
    job = VocoderJob(data, tmp_path / "run", codec_config(), cfg, log=quiet)
    assert isinstance(job.discriminator, WaveDiscriminator)
    trained = {id(p) for group in job.opt.param_groups for p in group["params"]}
    assert not any(id(p) in trained for p in job.discriminator.parameters())  # its own optimiser
    before = {k: v.clone() for k, v in job.discriminator.state_dict().items()}
    total, parts = job.loss()
    assert float(total.detach()) == pytest.approx(
        parts["mel_l1"] + 2 * parts["stft"] + 0.5 * (parts["adversarial"] + 2 * parts["feature_match"]), rel=1e-5)
    assert parts["disc"] > 0 and parts["adversarial"] > 0 and parts["feature_match"] > 0
    assert any(not torch.equal(v, job.discriminator.state_dict()[k]) for k, v in before.items())  # it took a step
    # the crops it judges: the same span of the generated and the real audio, at most `crops` of them, both
    # scaled by the real crops' spread
    fake, real = torch.arange(5 * 20000.0).view(5, 20000), torch.arange(5 * 20000.0).view(5, 20000) + 0.5
    fake_crops, real_crops = job.wave_crops(fake, real)
    assert fake_crops.shape == (min(5, job.disc_cfg.crops), job.disc_cfg.window)
    offset = real_crops - fake_crops
    torch.testing.assert_close(offset, torch.full_like(offset, float(offset[0, 0])))
    assert float(real_crops.std()) == pytest.approx(1.0, rel=1e-4) and float(offset[0, 0]) > 0

    # 4 steps straight, against 2, a "kill" and a resumed job: vocoder and discriminator alike
    straight = VocoderJob(data, tmp_path / "a", codec_config(), cfg, log=quiet)
    straight.train()
    first = VocoderJob(data, tmp_path / "b", codec_config(), cfg, log=quiet)
    first.train(until=2)
    assert "discriminator" in torch.load(tmp_path / "b/vocoder.pt", weights_only=False)
    resumed = VocoderJob(data, tmp_path / "b", codec_config(), cfg, log=quiet)
    assert resumed.step == 2
    resumed.train()
    for k, v in straight.modules["vocoder"].state_dict().items():
        torch.testing.assert_close(resumed.modules["vocoder"].state_dict()[k], v)
    for k, v in straight.discriminator.state_dict().items():
        torch.testing.assert_close(resumed.discriminator.state_dict()[k], v)

    # the vocoder-gta fine-tune: its crops of predicted-mel audio against the real audio of the same tokens
    gta = VocoderGtaJob(data, tokens, tmp_path / "run", codec_config(), replace(cfg, max_tokens=10), log=quiet)
    _, parts = gta.loss()
    assert isinstance(gta.discriminator, WaveDiscriminator) and parts["adversarial"] > 0 and parts["feature_match"] > 0
    # nothing of a discriminator is exported
    gta.train()
    codec = SpeechCodec.load(export_codec(tmp_path / "run", tmp_path / "speech-a", codec_config(), vocoder="vocoder-gta"))
    assert not any("disc" in k for k in codec.state_dict())


def test_the_command_line_gives_the_transcript_loss_and_its_options_only_where_they_act(prepared, tmp_path):
    from typer.testing import CliRunner

    from unisono.cli import app

    fit_tokenizer(CodecData(prepared / "data", layer=2), tmp_path / "run", 8, log=lambda s: None)
    train = ["codec", "train"]
    data, run = str(prepared / "data"), str(tmp_path / "run")

    def refused(*args: str) -> str:
        res = CliRunner().invoke(app, train + list(args))
        assert res.exit_code == 2, res.output
        return " ".join(res.output.replace("│", " ").split())

    assert "or the vocoder-gta fine-tune only" in refused("refiner", data, run, "--transcript-weight", "1")
    assert "--transcript-weight too" in refused("token2mel", data, run, "--voice-weight", "1")
    assert "--transcript-weight too" in refused("vocoder-gta", data, run, "--transcript-tokens", "100")
    assert "--transcript-weight too" in refused("token2mel", data, run, "--transcript-window")
    assert "--transcript-weight too" in refused("token2mel", data, run, "--transcript-from", str(prepared / "synth/manifest.jsonl"))
    assert "no such manifest" in refused("token2mel", data, run, "--transcript-weight", "1", "--transcript-from",
                                         str(tmp_path / "missing.jsonl"))
    assert "token2mel only" in refused("vocoder-gta", data, run, "--transcript-weight", "1", "--voice-weight", "1")
    assert "token2mel only" in refused("vocoder-gta", data, run, "--envelope-weight", "1")
    assert "flow matching alone" in refused("refiner", data, run, "--adversarial-weight", "1")
    assert "choose cpu, cuda" in refused("token2mel", data, run, "--device", "meta")
    assert "Invalid value" in refused("token2mel", data, run, "--device", "gpu0")
    if not torch.cuda.is_available():
        assert "sees no CUDA device" in refused("token2mel", data, run, "--device", "cuda")
