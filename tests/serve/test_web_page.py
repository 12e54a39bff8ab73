"""The web page in a real browser: Debian's chromium, headless, its microphone fed from a WAV."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from tests.serve.conftest import KEY

from unisono.audio.io import load_audio, save_audio

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")]


@pytest.fixture
def recorded(server, monkeypatch):
    """What the server transcribed, as it transcribed it."""
    heard: list[str] = []
    engine = server.engine
    original = engine.transcribe

    def transcribe(audio, **kwargs):
        t = original(audio, **kwargs)
        heard.append(t.text)
        return t

    monkeypatch.setattr(engine, "transcribe", transcribe)
    return heard


@pytest.fixture
def browser(tmp_path, example_wav):
    from playwright.sync_api import sync_playwright

    # the fake microphone loops this file: half a second of quiet, the sentence, then quiet long
    # enough for the answer to finish before the sentence comes round again (and interrupts it)
    speech = load_audio(example_wav)
    mic = tmp_path / "mic.wav"
    save_audio(mic, np.concatenate([np.zeros(8000, np.float32), speech, np.zeros(16000 * 15, np.float32)]))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={mic}", "--autoplay-policy=no-user-gesture-required"])
        yield browser
        browser.close()


def test_talk_transcribe_and_speak_from_the_page(server, serve_model, browser, recorded, example_wav):
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{server.url}/?key={KEY}")
    page.wait_for_function("document.getElementById('model').textContent.length > 0")
    assert "tiny" in page.text_content("#model")

    # talk: the microphone's sentence is heard, transcribed on the page, and answered
    page.click("#talk-start")
    page.wait_for_selector("#conversation li.user[data-done]", timeout=90_000)
    page.wait_for_selector("#conversation li.assistant[data-done]", timeout=90_000)
    user = page.text_content("#conversation li.user[data-done]")
    assert user and user in recorded  # the page shows what the server heard
    assert page.text_content("#conversation li.assistant")  # and the model's answer
    page.click("#talk-stop")

    # transcribe a file: the page shows the model's transcript of it
    page.set_input_files("#file", str(example_wav))
    page.click("#transcribe")
    page.wait_for_selector("#transcript[data-done]", timeout=60_000)
    assert page.text_content("#transcript") == serve_model.transcribe(example_wav).text

    # speak: this model cannot yet, and the page says so
    page.fill("#text", "Hello there.")
    page.click("#speak")
    page.wait_for_function("document.getElementById('speak-status').classList.contains('error')")
    assert "cannot speak" in page.text_content("#speak-status")
    assert not errors


def test_a_speaking_model_is_heard_on_the_page(speaking_server, browser):
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(speaking_server.url + "/")
    page.wait_for_function("document.getElementById('model').textContent.length > 0")
    page.click("#talk-start")
    page.wait_for_selector("#conversation li.user[data-done]", timeout=120_000)
    page.wait_for_selector("#conversation li.assistant[data-done=completed], #conversation li.assistant[data-done=incomplete]",
                           timeout=120_000)
    assert int(page.get_attribute("#conversation", "data-audio-chunks") or 0) > 0  # its answer came back as audio
    assert page.text_content("#conversation li.assistant")  # with its transcript
    page.click("#talk-stop")

    page.fill("#text", "Hello there.")
    page.click("#speak")
    page.wait_for_function("document.getElementById('player').src.startsWith('blob:')", timeout=120_000)
    assert not page.get_attribute("#speak-status", "class").count("error")
    assert not errors
