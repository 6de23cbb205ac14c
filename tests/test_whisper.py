"""A tiny random Whisper converts into WhisperKit's three packages and decodes, driven as
WhisperKit drives them (converters/validation/whisperkit.py), the very token ids transformers'
greedy `generate` decodes from the same audio (docs/whisperkit.md: the contract)."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from converters.backends.coreml.executor import ReferenceExecutor
from converters.configs import model_tasks
from converters.configs.whisper import DECODER, ENCODER, MEL, LogMelSpectrogram, mel_filters
from converters.errors import UnsupportedArchitecture
from converters.export import convert
from converters.options import ConversionOptions
from converters.validation.whisperkit import generate_tokens, transcribe_tokens, voiced_clip, whisperkit_prompt
from tests.whisper_model import ALIGNMENT_HEADS, EOS, IDS, SLOTS, SPECIALS, build_whisper

NEW_TOKENS = 16


@pytest.fixture(scope="module")
def whisper(tmp_path_factory):
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    folder = build_whisper(tmp_path_factory.mktemp("whisper-tiny"))
    out = tmp_path_factory.mktemp("packages")
    result = convert(str(folder), "automatic-speech-recognition", out, ConversionOptions())
    model = WhisperForConditionalGeneration.from_pretrained(folder).eval()
    return {
        "folder": folder, "packages": result.packages, "model": model, "report": result.report_json,
        "features": WhisperFeatureExtractor.from_pretrained(folder),
        "generation": json.loads((folder / "generation_config.json").read_text()),
        "executors": {path.stem: ReferenceExecutor(path) for path in result.packages},
    }


def runners(whisper, mode: str):
    return [lambda inputs, e=whisper["executors"][part]: e.predict(inputs, mode=mode) for part in (MEL, ENCODER, DECODER)]


def test_packages_in_whisperkit_layout(whisper):
    """One variant folder holding MelSpectrogram, AudioEncoder and TextDecoder packages
    (WhisperKit.swift:372-380)."""
    folder = whisper["packages"][0].parent
    assert [p.relative_to(folder.parent).as_posix() for p in whisper["packages"]] == [
        f"{folder.name}/MelSpectrogram.mlpackage", f"{folder.name}/AudioEncoder.mlpackage",
        f"{folder.name}/TextDecoder.mlpackage"]


def test_variant_folder_carries_the_tokenizer_and_configs(whisper):
    """WhisperKit reads tokenizer.json from the model folder and finds its special tokens by their
    text (ModelUtilities.swift:17-77, Models.swift:1202-1223); config.json and
    generation_config.json go beside them as whisperkittools puts them."""
    from tokenizers import Tokenizer

    from worker.hub import upload_plan

    folder = whisper["packages"][0].parent
    for name in ("tokenizer.json", "config.json", "generation_config.json", "preprocessor_config.json"):
        assert (folder / name).read_bytes() == (whisper["folder"] / name).read_bytes()
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    assert {token: tokenizer.token_to_id(token) for token in SPECIALS} == IDS
    uploaded = upload_plan(folder.parent, whisper["packages"], None)
    assert f"{folder.name}/tokenizer.json" in uploaded and f"{folder.name}/generation_config.json" in uploaded
    assert f"{folder.name}/TextDecoder.mlpackage/Manifest.json" in uploaded


def _interface(path):
    import coremltools as ct

    spec = ct.utils.load_spec(str(path))
    name = ct.proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name
    described = lambda features: {f.name: (tuple(f.type.multiArrayType.shape), name(f.type.multiArrayType.dataType))
                                  for f in features}
    return described(spec.description.input), described(spec.description.output)


def test_interface_is_whisperkits(whisper):
    """Names, shapes and dtypes WhisperKit reads; its sampler and cache copy read the float
    outputs as Float16 (TokenSampler.swift:86-104, TextDecoder.swift:225-263)."""
    mel, encoder, decoder = (_interface(p) for p in whisper["packages"])
    assert mel == ({"audio": ((480000,), "FLOAT32")}, {"melspectrogram_features": ((1, 80, 1, 3000), "FLOAT16")})
    assert encoder == ({"melspectrogram_features": ((1, 80, 1, 3000), "FLOAT16")},
                       {"encoder_output_embeds": ((1, 64, 1, 1500), "FLOAT16")})
    width = 64 * 2
    assert decoder == (
        {"input_ids": ((1,), "INT32"), "cache_length": ((1,), "INT32"),
         "key_cache": ((1, width, 1, SLOTS), "FLOAT16"), "value_cache": ((1, width, 1, SLOTS), "FLOAT16"),
         "kv_cache_update_mask": ((1, SLOTS), "INT32"), "encoder_output_embeds": ((1, 64, 1, 1500), "FLOAT16"),
         "decoder_key_padding_mask": ((1, SLOTS), "FLOAT16")},
        {"logits": ((1, 1, 300), "FLOAT16"), "key_cache_updates": ((1, width, 1, 1), "FLOAT16"),
         "value_cache_updates": ((1, width, 1, 1), "FLOAT16"),
         "alignment_heads_weights": ((1, 1500), "FLOAT16")})  # its alignment heads: word timestamps (TextDecoder.swift:317)


def test_log_mel_equals_feature_extractor(whisper):
    """The MelSpectrogram program's torch module computes WhisperFeatureExtractor's features."""
    extractor = whisper["features"]
    audio = voiced_clip()
    expected = extractor(audio, sampling_rate=16000, return_tensors="np").input_features[0]
    module = LogMelSpectrogram(mel_filters({"feature_size": 80}), 400, 160)
    padded = np.zeros(480000, dtype=np.float32)
    padded[: len(audio)] = audio
    got = module(torch.from_numpy(padded))[0].float().numpy()[0, :, 0]
    # float16 output: half a unit in the last place of values around 1
    np.testing.assert_allclose(got, expected, atol=1e-3)
    silent = module(torch.zeros(480000))[0].float().numpy()[0, :, 0]
    np.testing.assert_allclose(silent, extractor(np.zeros(16000, np.float32), sampling_rate=16000,
                                                 return_tensors="np").input_features[0], atol=1e-3)


@pytest.mark.parametrize("mode", ["fp32", "fp16"])
def test_decoded_ids_equal_generate(whisper, mode):
    """audio -> mel -> encoder -> greedy decoding with the cache, as WhisperKit runs it, decodes
    what transformers' generate decodes (prompt: start, <|en|>, <|transcribe|>, no timestamps)."""
    model, audio = whisper["model"], voiced_clip()
    prompt = whisperkit_prompt(whisper["generation"], model.config.vocab_size)
    assert prompt == [IDS["<|startoftranscript|>"], IDS["<|en|>"], IDS["<|transcribe|>"], IDS["<|notimestamps|>"]]
    expected = generate_tokens(model, whisper["features"], audio, NEW_TOKENS)
    got = transcribe_tokens(*runners(whisper, mode), audio, prompt, EOS, 480000, (128, SLOTS), NEW_TOKENS)
    assert got == expected
    assert len(expected) == NEW_TOKENS and len(set(expected)) > 4  # the tokens vary: a constant stream would prove little


def test_cache_carries_the_context(whisper):
    """The comparison can fail: a driver that never writes the new key and value back (each step
    sees an empty cache) decodes other tokens than generate."""
    model, audio = whisper["model"], voiced_clip()
    prompt = whisperkit_prompt(whisper["generation"], model.config.vocab_size)
    mel, encoder, decoder = runners(whisper, "fp32")

    def forgetful(inputs):
        out = decoder(inputs)
        return {**out, "key_cache_updates": np.zeros_like(out["key_cache_updates"]),
                "value_cache_updates": np.zeros_like(out["value_cache_updates"])}

    expected = generate_tokens(model, whisper["features"], audio, NEW_TOKENS)
    assert transcribe_tokens(mel, encoder, forgetful, audio, prompt, EOS, 480000, (128, SLOTS), NEW_TOKENS) != expected


def test_conversion_validates_by_driving_the_packages(whisper):
    """The conversion's own validation compares each package with PyTorch and drives the three
    together as WhisperKit does, in fp32 and fp16 emulation (validation/whisperkit.py)."""
    validation = whisper["report"]["validation"]
    assert validation["passed"], validation["message"]
    drives = [c for c in validation["checks"] if c["metric"] == "continuation_match"]
    assert [(c["mode"], c["value"], c["passed"]) for c in drives] == [("fp32", 1.0, True), ("fp16", 1.0, True)]
    assert {c["package"] for c in validation["checks"]} >= {MEL, ENCODER, DECODER}


def test_compression_keeps_the_mel_spectrogram_whole(whisper):
    """Palettizing the DFT rows and mel filters would change every feature: the MelSpectrogram
    part is left as converted, the encoder and decoder go to the backend's compressor."""
    from converters.configs.whisper import WhisperExportConfig
    from converters.transforms import compress_weights
    from transformers import AutoConfig

    cfg = WhisperExportConfig(AutoConfig.from_pretrained(whisper["folder"]), "automatic-speech-recognition",
                              ConversionOptions.from_strings(quantize="lut6"))
    compressor = SimpleNamespace(compress=lambda plan, part, artifact: f"compressed {artifact}")
    plan = SimpleNamespace(cfg=cfg)
    assert [compress_weights(plan, part, part, compressor) for part in cfg.parts()] == [
        MEL, f"compressed {ENCODER}", f"compressed {DECODER}"]


def test_card_loads_it_with_whisperkit(whisper):
    """The card's Swift is WhisperKit's current API with this repo and variant folder."""
    from worker.card import card_body

    root = whisper["packages"][0].parent.parent
    paths = [p.relative_to(root).as_posix() for p in whisper["packages"]]
    report = {**whisper["report"], "tokenizer_repo": "alice/whisper-tiny-coreml"}
    body = card_body(source_repo="alice/whisper-tiny", revision="0" * 40, source_url="https://huggingface.co/alice/whisper-tiny",
                     report=report, package_paths=paths)
    variant = whisper["packages"][0].parent.name
    assert (f'WhisperKit(WhisperKitConfig(model: "{variant}", modelRepo: "alice/whisper-tiny-coreml"))' in body)
    assert 'whisper.transcribe(audioPath: "speech.wav", decodeOptions: options)' in body and "import WhisperKit" in body
    assert 'DecodingOptions(task: .transcribe, language: "en")' in body  # the language it was validated with
    # swift-transformers' tokenizer section and snippet are a text generator's: WhisperKit reads the variant folder's
    assert "## Tokenizer" not in body and "swift-transformers" not in body.split("## Use it in Swift")[1]


def test_core_ai_output_is_refused():
    """WhisperKit loads Core ML packages: an .aimodel Whisper would have nothing to load it."""
    from converters.backends.coreai.backend import refusal
    from transformers import WhisperConfig

    cfg = SimpleNamespace(hf_config=WhisperConfig(), task="automatic-speech-recognition")
    assert "WhisperKit" in refusal(cfg, ConversionOptions())


def test_drive_rows_hold_a_threshold(whisper):
    """The validation rows of the drive: a compressed conversion's packages pass at the scheme's
    share of tokens decoded before a first difference, and one that ends at once fails."""
    from converters.configs.whisper import WhisperExportConfig
    from converters.validation import whisperkit
    from transformers import AutoConfig

    cfg = WhisperExportConfig(AutoConfig.from_pretrained(whisper["folder"]), "automatic-speech-recognition")
    executors = whisper["executors"]

    class Backend:
        name = "reference"

        def __init__(self, mute: bool = False):
            self.mute = mute

        def runner(self, path):
            def predict(feed, mode):
                out = executors[path.stem].predict(feed, mode=mode)
                if self.mute and "logits" in out:  # end of text is always the best token
                    out["logits"] = out["logits"].copy()
                    out["logits"][..., EOS] = 1e4
                return out
            return SimpleNamespace(predict=predict)

    packages = [(path.stem, path, Backend()) for path in whisper["packages"]]
    rows = whisperkit.checks(cfg, whisper["model"], packages, ("fp16",), 0.85)
    assert [(r.value, r.threshold, r.passed) for r in rows] == [(1.0, 0.85, True)]
    muted = [(path.stem, path, Backend(mute=True)) for path in whisper["packages"]]
    assert [(r.value, r.passed) for r in whisperkit.checks(cfg, whisper["model"], muted, ("fp16",), 0.85)] == [(0.0, False)]


def test_whisper_is_a_speech_recognition_model(whisper):
    config = json.loads((whisper["folder"] / "config.json").read_text())
    tasks = model_tasks(config, pipeline_tag="automatic-speech-recognition")
    assert tasks.available == ("automatic-speech-recognition",)
    assert model_tasks(config).automatic == "automatic-speech-recognition"  # WhisperForConditionalGeneration names no task of ours


def test_other_speech_models_are_still_refused():
    with pytest.raises(UnsupportedArchitecture, match="speech or audio"):
        model_tasks({"model_type": "wav2vec2"})


# ---------------------------------------------------------------- trying the packages on a clip


def _wav(samples: np.ndarray, rate: int, channels: int = 1) -> bytes:
    """A 16-bit WAV of `samples` (-1..1) at `rate`, the same clip on each of `channels`."""
    import io
    import wave

    pcm = np.round(np.clip(samples, -1, 1) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.repeat(pcm, channels).tobytes())
    return buffer.getvalue()


def test_a_clip_is_read_as_whisper_takes_it():
    """A WAV at another rate, in stereo, becomes 16 kHz mono; what is not a clip, or longer than
    one window, is refused with why."""
    from converters.errors import UserInputError
    from converters.try_audio import clip

    rate = 44100
    t = np.arange(int(rate * 0.5)) / rate
    got = clip(_wav(0.5 * np.sin(2 * np.pi * 440 * t), rate, channels=2))
    assert got.dtype == np.float32 and len(got) == 8000
    expected = 0.5 * np.sin(2 * np.pi * 440 * np.arange(8000) / 16000)
    assert np.abs(got[200:-200] - expected[200:-200]).max() < 0.01  # the same tone, resampled
    with pytest.raises(UserInputError, match="not a clip this page can read"):
        clip(b"RIFF nonsense")
    with pytest.raises(UserInputError, match="at most 30 s"):
        clip(_wav(np.zeros(16000 * 31), 16000))


def test_trying_the_packages_on_a_clip(whisper):
    """Try it drives the three packages as validation does, on an uploaded clip (22.05 kHz here),
    and transformers' generate on the same 16 kHz samples: the same token ids, both decoded."""
    import base64

    from converters import try_it

    report = whisper["report"]
    assert try_it.kind_of_report(report) == "transcribe"
    audio = _wav(voiced_clip(seconds=2.0, seed=3, rate=22050), 22050)
    tried = try_it.run("transcribe", list(whisper["packages"]), whisper["folder"],
                       {"audio": base64.b64encode(audio).decode()}, "fp16")
    ours, theirs = tried["package"], tried["pytorch"]
    assert tried["kind"] == "transcribe" and tried["clip_seconds"] == 2.0
    assert ours["token_ids"] == theirs["token_ids"] and len(ours["token_ids"]) > 4
    assert tried["matching_tokens"] == len(theirs["token_ids"])
    assert isinstance(ours["text"], str) and ours["text"] == theirs["text"]  # the byte-level tokenizer decodes them
    with pytest.raises(Exception, match="no TextDecoder package"):
        try_it.run("transcribe", list(whisper["packages"])[:2], whisper["folder"], {}, "fp16")


def test_the_form_leaves_out_text_options_for_a_speech_model():
    """A Whisper model's form hides the sequence length, KV cache and naming (WhisperKit fixes its
    shapes and names), and the note under them says why."""
    from converters.options import OPTIONS
    from ui import form

    assert set(form.SPEECH_UNUSED) <= set(OPTIONS)
    level, note = form.sequence_note("auto", "audio")
    assert level == "info" and "30 seconds of audio" in note and "not used" in note
    assert "tokens" not in note


def test_the_pages_clip_reaches_the_model_as_recorded():
    """What the page's audio input hands over (rate, int16 samples, stereo) is sent as a mono WAV
    (ui/try_panel.py) that the worker reads back at 16 kHz; a silent or too long clip is refused in the page."""
    from converters.errors import UserInputError
    from converters.try_audio import clip
    from ui.try_panel import NO_CLIP, clip_bytes

    rate = 48000
    tone = (0.25 * np.sin(2 * np.pi * 300 * np.arange(rate) / rate) * 32767).astype(np.int16)
    got = clip(clip_bytes((rate, np.stack([tone, tone], axis=1))))
    assert len(got) == 16000 and np.abs(got[100:-100] - 0.25 * np.sin(2 * np.pi * 300 * np.arange(16000) / 16000)[100:-100]).max() < 0.01
    with pytest.raises(UserInputError, match=re.escape(NO_CLIP)):
        clip_bytes((rate, np.zeros(0, np.int16)))
    with pytest.raises(UserInputError, match="at most 30"):
        clip_bytes((8000, np.zeros(8000 * 40, np.int16)))


def test_the_models_own_language_and_task_are_read_as_generate_reads_them():
    """A fine-tune names its language in its generation config: `language`/`task`, or the older
    forced_decoder_ids (generation_whisper.py:1502-1535); left open, WhisperKit's default English."""
    from converters.validation.whisperkit import model_language

    langs = {"<|en|>": IDS["<|en|>"], "<|fr|>": IDS["<|fr|>"]}
    tasks = {"transcribe": IDS["<|transcribe|>"], "translate": IDS["<|translate|>"]}
    given = {"lang_to_id": langs, "task_to_id": tasks}
    forced = [[1, IDS["<|fr|>"]], [2, IDS["<|translate|>"]], [3, IDS["<|notimestamps|>"]]]
    assert model_language({**given, "forced_decoder_ids": forced}) == ("fr", "translate")
    assert model_language(given, {"forced_decoder_ids": forced}) == ("fr", "translate")  # config.json's, as generate falls back
    assert model_language({**given, "forced_decoder_ids": [[1, None], [2, IDS["<|transcribe|>"]]]}) == ("en", "transcribe")
    for language in ("fr", "<|fr|>", "French"):
        assert model_language({**given, "language": language, "forced_decoder_ids": [[1, IDS["<|en|>"]]]}) == ("fr", "transcribe")
    assert model_language(given) == ("en", "transcribe") and model_language({}) == ("en", "transcribe")


def test_a_fine_tune_for_another_language_is_validated_and_tried_in_it(whisper, tmp_path):
    """The module's packages with a generation config forcing French (the same weights): validation's drive
    and the try prompt <|fr|>, as generate does with the model's own settings — not English — and the
    card says which language token it was validated with and passes it to WhisperKit."""
    import shutil

    from transformers import AutoConfig, GenerationConfig

    from converters import try_audio
    from converters.configs.whisper import WhisperExportConfig
    from converters.validation import whisperkit
    from worker.card_speech import language_lines, validated_language, whisperkit_snippet

    french = tmp_path / "french"
    shutil.copytree(whisper["folder"], french)
    generation = {**whisper["generation"], "forced_decoder_ids": [[1, IDS["<|fr|>"]], [2, IDS["<|transcribe|>"]],
                                                                  [3, IDS["<|notimestamps|>"]]]}
    (french / "generation_config.json").write_text(json.dumps(generation))
    tried = try_audio.transcribe(list(whisper["packages"]), french, None, "fp32")
    assert (tried["language"], tried["language_tokens"]) == ("fr", "<|fr|> <|transcribe|>")
    assert tried["package"]["token_ids"] == tried["pytorch"]["token_ids"]
    english = try_audio.transcribe(list(whisper["packages"]), whisper["folder"], None, "fp32")
    assert english["language"] == "en" and english["pytorch"]["token_ids"] != tried["pytorch"]["token_ids"]  # the prompt matters
    from ui import render

    assert "<code data-role='language-token'>&lt;|fr|&gt; &lt;|transcribe|&gt;</code>" in render.try_result(tried)

    model = whisper["model"]
    saved = model.generation_config
    model.generation_config = GenerationConfig.from_pretrained(french)
    try:
        cfg = WhisperExportConfig(AutoConfig.from_pretrained(whisper["folder"]), "automatic-speech-recognition")
        backend = SimpleNamespace(name="reference", runner=lambda path: SimpleNamespace(
            predict=lambda feed, mode: whisper["executors"][path.stem].predict(feed, mode=mode)))
        (row,) = whisperkit.checks(cfg, model, [(p.stem, p, backend) for p in whisper["packages"]], ("fp32",))
    finally:
        model.generation_config = saved
    assert row.passed and "<|fr|> <|transcribe|>" in row.inputs
    report = {"validation": {"checks": [{"metric": "continuation_match", "inputs": row.inputs}]}, "tokenizer_repo": "a/b"}
    assert validated_language(report) == ("fr", "transcribe")
    swift = "\n".join(whisperkit_snippet(report, ["v/MelSpectrogram.mlpackage", "v/AudioEncoder.mlpackage", "v/TextDecoder.mlpackage"]))
    assert 'DecodingOptions(task: .transcribe, language: "fr")' in swift and "decodeOptions: options" in swift
    assert "`<|fr|>`" in "\n".join(language_lines(report))
    # The module's conversion (no language named): English, said so in its own row.
    assert validated_language(whisper["report"]) == ("en", "transcribe")


def test_the_alignment_heads_weights_are_the_models_own_cross_attention(whisper):
    """WhisperKit's word timestamps read `alignment_heads_weights` from each decoder call (TextDecoder.swift:317,
    420-422): the average of the alignment heads' cross-attention over the 1500 encoder positions
    (whisperkittools text_decoder.py:157-168), the heads generation_config.json lists. The package's, at the
    first call on the clip, equals transformers' own cross-attention of those heads; without alignment heads
    the output is left out (WhisperKit then reports no word timestamps)."""
    from transformers import AutoConfig

    from converters.configs.whisper import WhisperExportConfig

    model, audio = whisper["model"], voiced_clip()
    features = whisper["features"](audio, sampling_rate=16000, return_tensors="pt").input_features
    implementation = model.config._attn_implementation
    model.config._attn_implementation = "eager"  # attention weights: transformers returns them in eager mode only
    try:
        with torch.no_grad():
            out = model(input_features=features, decoder_input_ids=torch.tensor([[IDS["<|startoftranscript|>"]]]),
                        output_attentions=True)
    finally:
        model.config._attn_implementation = implementation
    expected = torch.stack([out.cross_attentions[layer][0, head, 0] for layer, head in ALIGNMENT_HEADS]).mean(0).numpy()
    mel, encoder, decoder = runners(whisper, "fp32")
    embeds = encoder({"melspectrogram_features": mel({"audio": np.pad(audio, (0, 480000 - len(audio)))})["melspectrogram_features"]})
    update, padding = np.zeros((1, SLOTS), np.int32), np.full((1, SLOTS), -1e4, np.float16)
    update[0, 0], padding[0, 0] = 1, 0
    got = decoder({"input_ids": np.array([IDS["<|startoftranscript|>"]], np.int32), "cache_length": np.zeros(1, np.int32),
                   "key_cache": np.zeros((1, 128, 1, SLOTS), np.float16), "value_cache": np.zeros((1, 128, 1, SLOTS), np.float16),
                   "kv_cache_update_mask": update, "encoder_output_embeds": embeds["encoder_output_embeds"],
                   "decoder_key_padding_mask": padding})["alignment_heads_weights"]
    assert got.shape == (1, 1500) and abs(float(np.asarray(got, np.float32).sum()) - 1.0) < 1e-2  # an average of softmaxes
    np.testing.assert_allclose(np.asarray(got, np.float32)[0], expected, atol=2e-4)
    assert np.abs(expected - 1 / 1500).max() > 1e-4  # not uniform: the comparison can fail
    assert [c for c in whisper["report"]["validation"]["checks"] if c["output"] == "alignment_heads_weights"]
    # A checkpoint naming none: no such output.
    config = AutoConfig.from_pretrained(whisper["folder"])
    assert WhisperExportConfig(config, "automatic-speech-recognition").alignment_heads() == ALIGNMENT_HEADS
    config._name_or_path = ""
    assert [o.name for o in WhisperExportConfig(config, "automatic-speech-recognition").outputs("TextDecoder")][-1] == "value_cache_updates"
