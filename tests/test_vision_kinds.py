"""The vision kinds apps ask for beyond classification (issue 29): image–text embeddings
(CLIP, SigLIP, SigLIP 2: an image package and a text package, scored together) and depth
maps (Depth Anything, DPT). Each tiny random model (tests/kind_models.py) is converted and
validated once per module; its assertions share that conversion."""

from __future__ import annotations

import base64
import io
import json
import math

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForObjectDetection, AutoTokenizer

from converters.backends import backend_for
from converters.configs import config_class_for, model_tasks
from converters.configs.generic import family_of, generic_config_class
from converters.errors import UnsupportedArchitecture, UserInputError
from converters.export import convert
from converters.metadata import PREFIX
from converters.options import ConversionOptions
from converters.package_info import describe_package
from converters import try_image, try_it
from converters.validation import zero_shot
from converters.validation.compare import min_box_iou, ranking_agreement, relative_error
from converters.validation.inputs import image_inputs
from tests.kind_models import KINDS, build_kind
from tests.test_validation import _swap_top_two
from tests.models import build_model
from worker.card import card_body

IMAGE_TEXT = ["clip", "siglip", "siglip2"]
DEPTH = ["depth_anything", "dpt"]
LENGTH = 16  # the tiny text towers' max_position_embeddings: what an auto sequence length gives them


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """model_type -> (folder, ConversionResult), each converted (and validated) once."""
    done = {}

    def get(model_type: str):
        if model_type not in done:
            root = tmp_path_factory.mktemp(model_type)
            # ViT (tests/models.py): the image classifier Try it draws beside these kinds
            folder = (build_kind if model_type in KINDS else build_model)(model_type, root / model_type)
            done[model_type] = folder, convert(str(folder), "auto", root / "out", ConversionOptions())
        return done[model_type]

    return get


def _json(result) -> dict:
    """The conversion's report as JSON (the --report file's form)."""
    return result.report_json if hasattr(result, "report_json") else result.report


def _checks(report: dict, **where) -> list[dict]:
    return [c for c in report["validation"]["checks"] if all(c[k] == v for k, v in where.items())]


# ---------------------------------------------------------------- image–text


@pytest.mark.parametrize("model_type", IMAGE_TEXT)
def test_image_text_packages_and_validation(model_type, converted):
    folder, result = converted(model_type)
    report = _json(result)
    assert report["task"] == "zero-shot-image-classification"  # auto: the tiny tokenizer's pipeline tag is absent, the task is the family's first
    assert [p.name for p in result.packages] == [f"{model_type}-image_encoder.mlpackage", f"{model_type}-text_encoder.mlpackage"]
    image, text = (describe_package(p) for p in result.packages)
    hf = AutoConfig.from_pretrained(folder)
    width = getattr(hf, "projection_dim", None) or hf.text_config.hidden_size
    side = 32
    assert {i["name"]: (i["shape"], i["dtype"]) for i in image["inputs"]} == {"image": ([1, 3, side, side], "image")}
    assert {o["name"]: o["shape"] for o in image["outputs"]} == {"image_embeds": [1, width]}
    assert {i["name"]: (i["shape"], i["dtype"]) for i in text["inputs"]} == {
        "input_ids": ([1, LENGTH], "int32"), "attention_mask": ([1, LENGTH], "int32")}
    assert {o["name"]: o["shape"] for o in text["outputs"]} == {"text_embeds": [1, width]}

    # The label score's scale (and SigLIP's bias) are the trained weights', in both packages.
    model = AutoModel.from_pretrained(folder).eval()
    for info in (image, text):
        metadata = info["metadata"]
        assert float(metadata[PREFIX + "logit_scale"]) == pytest.approx(float(model.logit_scale.exp()), rel=1e-6)
        assert metadata[PREFIX + "probability"] == ("softmax" if model_type == "clip" else "sigmoid")
        if model_type == "clip":
            assert PREFIX + "logit_bias" not in metadata
        else:
            assert float(metadata[PREFIX + "logit_bias"]) == pytest.approx(float(model.logit_bias), rel=1e-6)

    validation = report["validation"]
    assert validation["passed"], validation["message"]
    for part, output in (("image_encoder", "image_embeds"), ("text_encoder", "text_embeds")):
        for mode in ("fp32", "fp16"):
            assert _checks(report, package=part, output=output, mode=mode, metric="cosine_similarity")
    for mode in ("fp32", "fp16"):
        (ranking,) = _checks(report, inputs=zero_shot.WHAT, mode=mode, metric="ranking_agreement")
        assert ranking["value"] == 1.0 and ranking["package"] == "image_encoder + text_encoder"
        assert _checks(report, inputs=zero_shot.WHAT, mode=mode, output="label_probabilities", metric="max_abs_diff")


def _family(model_type: str, folder):
    """The family's config for the checkpoint in `folder`, with its image processor's settings."""
    preprocessor = json.loads((folder / "preprocessor_config.json").read_text())
    return config_class_for(model_type)(AutoConfig.from_pretrained(folder), "zero-shot-image-classification", ConversionOptions(), preprocessor)


@pytest.mark.parametrize("model_type", IMAGE_TEXT)
def test_image_embedding_is_the_models_own_normalised(model_type, converted):
    """The image package on a 0..255 image gives, with unit length, the model's own image
    embedding of that image as its processor prepares it."""
    folder, result = converted(model_type)
    cfg = _family(model_type, folder)
    model = AutoModel.from_pretrained(folder).eval()
    cfg.wrap(model, "image_encoder")  # SigLIP 2: its position embeddings resized for the package's grid
    image = image_inputs(cfg, "image_encoder")
    runner = backend_for("coreml").runner(result.packages[0])
    got = np.asarray(runner.predict(image.package, mode="fp32", state=runner.make_state())["image_embeds"]).reshape(-1)
    assert np.linalg.norm(got) == pytest.approx(1.0, abs=2e-3)
    with torch.no_grad():
        want = model.get_image_features(**cfg.model_pixels(image.torch_args[0])).pooler_output.reshape(-1).numpy()
    assert float(got @ want) / np.linalg.norm(want) > 0.999


@pytest.mark.parametrize("model_type", ["clip", "siglip"])
def test_card_scores_a_label_as_the_model_does(model_type, converted):
    _, result = converted(model_type)
    paths = [p.name for p in result.packages]
    card = card_body(source_repo=f"owner/{model_type}", revision="0" * 40, source_url="https://example.invalid", report=_json(result),
                     package_paths=paths)
    swift = card[card.index("## Use it in Swift"):]
    assert f'load("{model_type}-image_encoder")' in swift and f'load("{model_type}-text_encoder")' in swift
    assert '"co.huggingface.exporters.logit_scale"' in swift and '"co.huggingface.exporters.probability"' in swift
    assert "1 / (1 + exp(-$0))" in swift and "exp($0 - top)" in swift  # sigmoid or softmax, by the package's metadata
    assert "a 32×32 photo" in swift and f"padded to {LENGTH} tokens" in swift


def test_zero_shot_check_fails_on_a_wrong_score(converted):
    """The ranking check can fail: scores with the scale's sign flipped rank the labels backwards."""
    folder, result = converted("clip")
    cfg = _family("clip", folder)
    model = AutoModel.from_pretrained(folder).eval()
    cfg.wrap(model, "text_encoder")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    packages = [(part, path, backend_for("coreml")) for part, path in zip(cfg.parts(), result.packages)]
    rows, _ = zero_shot.checks(cfg, model, packages, tokenizer, ("fp32",), lambda mode: "float16")
    assert [r.passed for r in rows] == [True, True]
    cfg.scores["logit_scale"] *= -1
    rows, _ = zero_shot.checks(cfg, model, packages, tokenizer, ("fp32",), lambda mode: "float16")
    ranking = next(r for r in rows if r.metric == "ranking_agreement")
    assert not ranking.passed and ranking.value < 0.5


def test_zero_shot_check_leaves_an_unrunnable_pair_to_its_own_rows(converted, monkeypatch):
    """A package the runner cannot run is failed by its own rows; the ranking then has nothing to add."""
    from converters.backends.coreml import ops

    folder, result = converted("clip")
    cfg = _family("clip", folder)
    model = AutoModel.from_pretrained(folder).eval()
    cfg.wrap(model, "text_encoder")
    monkeypatch.delitem(ops.KERNELS, "layer_norm")
    packages = [(part, path, backend_for("coreml")) for part, path in zip(cfg.parts(), result.packages)]
    assert zero_shot.checks(cfg, model, packages, AutoTokenizer.from_pretrained(folder), ("fp32",), lambda mode: "float16") == ([], [])


def test_siglip_text_is_padded_to_its_trained_length():
    hf = KINDS["siglip"][0]()
    cls = config_class_for("siglip")
    cls(hf, "zero-shot-image-classification", ConversionOptions()).check_options()  # auto: its 16 tokens
    with pytest.raises(UserInputError, match="padded to the 16 tokens it was trained with"):
        cls(hf, "zero-shot-image-classification", ConversionOptions.from_strings(sequence_length=8)).check_options()
    # CLIP pools at its end token: any length up to its maximum gives the same embedding.
    config_class_for("clip")(KINDS["clip"][0](), "zero-shot-image-classification",
                             ConversionOptions.from_strings(sequence_length=8)).check_options()


def test_tasks_offered():
    for model_type in IMAGE_TEXT:
        tasks = model_tasks(KINDS[model_type][0]())
        assert set(tasks.available) == {"zero-shot-image-classification", "feature-extraction"}
    assert model_tasks({"model_type": "clip"}, "zero-shot-image-classification").automatic == "zero-shot-image-classification"
    for model_type in DEPTH:
        tasks = model_tasks({"model_type": model_type, "architectures": [KINDS[model_type][1].__name__]})
        assert tasks.available == ("depth-estimation",) and tasks.automatic == "depth-estimation"


def test_an_unlisted_image_text_model_goes_through_the_family(tmp_path):
    """Chinese-CLIP is outside the registry: the generic path gives it the image-text family,
    marked untested, with its text tower's mask probed on the model itself — bidirectional (a
    BERT), where CLIP's is causal. (Its conversion, validation and zero-shot ranking pass: run by
    hand, docs/vision-kinds.md; the suite converts the registry's three.)"""
    cls = config_class_for("chinese_clip")
    assert not cls.tested and cls.family == "image-text"
    folder = build_kind("chinese_clip", tmp_path / "chinese_clip")
    cfg = _family("chinese_clip", folder)
    cfg.wrap(AutoModel.from_pretrained(folder).eval(), "text_encoder")
    assert cfg.causal_text is False and cfg.probability == "softmax"
    # The same probe finds CLIP's text tower causal.
    clip_folder = build_kind("clip", tmp_path / "clip")
    probe = generic_config_class("chinese_clip")(AutoConfig.from_pretrained(clip_folder), "zero-shot-image-classification",
                                                 ConversionOptions(), json.loads((clip_folder / "preprocessor_config.json").read_text()))
    probe.wrap(AutoModel.from_pretrained(clip_folder).eval(), "text_encoder")
    assert probe.causal_text is True


@pytest.mark.parametrize("model_type, family", [
    ("chinese_clip", "image-text"), ("metaclip_2", "image-text"), ("glpn", "depth"), ("zoedepth", "depth"),
    ("conditional_detr", "detection"), ("deformable_detr", "detection"), ("d_fine", "detection"),
])
def test_the_generic_family_of_the_new_kinds(model_type, family):
    assert family_of(model_type) == family


def test_image_and_text_models_of_other_shapes_are_still_refused():
    with pytest.raises(UnsupportedArchitecture, match="image-and-text"):
        family_of("blip-2")  # a zero-shot class, but its config nests a language model too


# ---------------------------------------------------------------- depth


@pytest.mark.parametrize("model_type", DEPTH)
def test_depth_package_and_validation(model_type, converted):
    folder, result = converted(model_type)
    report = _json(result)
    assert report["task"] == "depth-estimation"
    (package,) = result.packages
    info = describe_package(package)
    side = 28 if model_type == "depth_anything" else 32
    assert {i["name"]: (i["shape"], i["dtype"]) for i in info["inputs"]} == {"image": ([1, 3, side, side], "image")}
    assert {o["name"]: o["shape"] for o in info["outputs"]} == {"predicted_depth": [1, side, side]}
    validation = report["validation"]
    assert validation["passed"], validation["message"]
    assert not validation["notes"]  # the map is not constant: the comparison proves something
    for mode in ("fp32", "fp16"):
        for metric in ("psnr_db", "relative_error"):
            (row,) = _checks(report, output="predicted_depth", mode=mode, metric=metric)
            assert row["passed"]
    (relative,) = _checks(report, output="predicted_depth", mode="fp16", metric="relative_error")
    assert 0 < relative["value"] < 0.01
    card = card_body(source_repo=f"owner/{model_type}", revision="0" * 40, source_url="https://example.invalid", report=report,
                     package_paths=[package.name])
    swift = card[card.index("## Use it in Swift"):]
    assert "predicted_depth" in swift and "bicubic" in swift and f"a {side}×{side} photo" in swift


def test_relative_error_and_ranking_metrics():
    reference = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert relative_error(reference, reference) == 0.0
    assert relative_error(reference, reference * 1.1) == pytest.approx(0.1)
    assert math.isinf(relative_error(reference, np.full_like(reference, np.nan)))
    assert relative_error(np.zeros(3), np.ones(3)) == math.inf
    assert ranking_agreement(np.array([3.0, 2.0, 1.0]), np.array([30.0, 20.0, 10.0]), 0.0) == 1.0
    assert ranking_agreement(np.array([3.0, 2.0, 1.0]), np.array([1.0, 2.0, 3.0]), 0.0) == 0.0
    # A near-tie in PyTorch's scores may flip without counting against the package.
    assert ranking_agreement(np.array([3.0, 2.999, 1.0]), np.array([2.0, 3.0, 1.0]), 0.01) == 1.0


# ---------------------------------------------------------------- detection


DETECTORS = ["detr", "rt_detr"]
IMAGENET = (torch.tensor([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1))


@pytest.mark.parametrize("model_type", DETECTORS)
def test_detector_package_and_validation(model_type, converted):
    """The scores the model's processor computes (DETR: softmax, 'no object' dropped; RT-DETR: a
    sigmoid per class) and its boxes (center, size, relative), the class names in the
    metadata; boxes judged by IoU; the card draws them."""
    folder, result = converted(model_type)
    report = _json(result)
    assert report["task"] == "object-detection"
    (package,) = result.packages
    info = describe_package(package)
    hf = AutoConfig.from_pretrained(folder)
    labels = [hf.id2label[i] for i in range(len(hf.id2label))]
    assert {i["name"]: (i["shape"], i["dtype"]) for i in info["inputs"]} == {"image": ([1, 3, 64, 64], "image")}
    assert {o["name"]: o["shape"] for o in info["outputs"]} == {"scores": [1, 8, len(labels)], "boxes": [1, 8, 4]}
    assert json.loads(info["metadata"][PREFIX + "labels"]) == labels
    validation = report["validation"]
    assert validation["passed"], validation["message"]
    for mode in ("fp32", "fp16"):
        (iou,) = _checks(report, output="boxes", mode=mode, metric="min_box_iou")
        assert iou["passed"] and iou["value"] > 0.99
        assert _checks(report, output="scores", mode=mode, metric="top1_agreement")[0]["passed"]
    # The package gives what the untouched model and its processor's activation give.
    cfg = config_class_for(model_type)(hf, "object-detection", ConversionOptions(), json.loads((folder / "preprocessor_config.json").read_text()))
    image = image_inputs(cfg)
    runner = backend_for("coreml").runner(package)
    got = runner.predict(image.package, mode="fp32", state=runner.make_state())
    model = AutoModelForObjectDetection.from_pretrained(folder).eval()
    with torch.no_grad():
        out = model(pixel_values=(image.torch_args[0] - IMAGENET[0]) / IMAGENET[1])
    scores = out.logits.sigmoid() if model_type == "rt_detr" else out.logits.softmax(-1)[..., :-1]
    assert np.allclose(np.asarray(got["scores"]), scores.numpy(), atol=2e-3)
    assert np.allclose(np.asarray(got["boxes"]), out.pred_boxes.numpy(), atol=2e-3)
    card = card_body(source_repo=f"owner/{model_type}", revision="0" * 40, source_url="https://example.invalid", report=report,
                     package_paths=[package.name])
    swift = card[card.index("## Use it in Swift"):]
    assert '"co.huggingface.exporters.labels"' in swift and "CGRect(x: (b[0] - b[2] / 2) * photoSize.width" in swift


def test_rank5_deformable_attention_computes_the_models_own(tmp_path):
    """RT-DETR's deformable attention without the batch axis (Core ML stops at rank 5) and its
    position embeddings made once give the model's very outputs (PyTorch against PyTorch)."""
    folder = build_kind("rt_detr", tmp_path / "rt_detr")
    pixels = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = AutoModelForObjectDetection.from_pretrained(folder).eval()(pixel_values=pixels)
        model = AutoModelForObjectDetection.from_pretrained(folder).eval()
        config_class_for("rt_detr")(model.config, "object-detection").wrap(model)
        got = model(pixel_values=pixels)
    assert torch.allclose(got.logits, want.logits, atol=1e-5) and torch.allclose(got.pred_boxes, want.pred_boxes, atol=1e-5)


def test_focal_detectors_score_by_sigmoid():
    import transformers as tf

    assert not config_class_for("detr")(tf.DetrConfig(use_timm_backbone=False), "object-detection").focal
    for config in (tf.RTDetrConfig(), tf.DeformableDetrConfig(use_timm_backbone=False), tf.ConditionalDetrConfig(use_timm_backbone=False)):
        assert config_class_for(config.model_type)(config, "object-detection").focal, config.model_type


def test_a_timm_backbone_is_refused_before_loading():
    """facebook/detr-resnet-50's config names a timm backbone, which needs a library the service does not
    ship (requirements.txt has no timm)."""
    import transformers as tf

    config = tf.DetrConfig(use_timm_backbone=True)
    with pytest.raises(UserInputError, match=r"backbone is a timm model \(resnet50\)"):
        config_class_for("detr")(config, "object-detection").check_options()
    config_class_for("detr")(KINDS["detr"][0](), "object-detection").check_options()  # a transformers ResNet: converts


def test_rt_detr_is_refused_for_core_ai_before_any_work():
    """coreai-torch cannot convert the deformable attention's grid sampling (measured: 'unsupported ATen ops:
    aten.grid_sampler_2d'), so Core AI output is refused at plan time with why; Core ML takes it."""
    from converters.backends import backend_for

    cfg = config_class_for("rt_detr")(KINDS["rt_detr"][0](), "object-detection")
    why = backend_for("coreai").refusal(cfg, ConversionOptions.from_strings(format="coreai"))
    assert "grid_sampler_2d" in why and "Choose the Core ML format" in why
    assert backend_for("coreml").refusal(cfg, ConversionOptions()) is None
    # The unlisted detectors with the same multi-scale deformable attention (their configs name its sampling
    # points) are refused the same way, at plan time; DETR is not. Conditional DETR's cross-attention, queries and
    # keys twice the values' width, stops coreai-torch's attention (measured): refused with that reason.
    for model_type in ("deformable_detr", "rt_detr_v2", "d_fine"):
        extra = {"use_timm_backbone": False} if model_type == "deformable_detr" else {}
        cfg = config_class_for(model_type)(AutoConfig.for_model(model_type, **extra), "object-detection")
        why = backend_for("coreai").refusal(cfg, ConversionOptions.from_strings(format="coreai"))
        assert why and f"not available for {model_type}" in why and "multi-scale deformable attention" in why, model_type
    conditional = config_class_for("conditional_detr")(AutoConfig.for_model("conditional_detr", use_timm_backbone=False), "object-detection")
    assert "values as wide as the queries" in backend_for("coreai").refusal(conditional, ConversionOptions.from_strings(format="coreai"))
    assert backend_for("coreai").refusal(config_class_for("detr")(KINDS["detr"][0](), "object-detection"),
                                         ConversionOptions.from_strings(format="coreai")) is None


def test_box_iou_metric():
    boxes = np.array([[[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.1, 0.1]]])
    assert min_box_iou(boxes, boxes) == 1.0
    shifted = boxes.copy()
    shifted[0, 1, 0] += 0.05  # half the second box's width: IoU 1/3
    assert min_box_iou(boxes, shifted) == pytest.approx(1 / 3)
    assert min_box_iou(boxes, np.full_like(boxes, np.nan)) == 0.0


# ---------------------------------------------------------------- trying a package on a photo


def _png_bytes(width: int, height: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(4)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _decoded(png: str):
    from PIL import Image

    return Image.open(io.BytesIO(base64.b64decode(png)))


def test_trying_a_depth_package_on_a_photo(converted):
    """A photo of another size is resized to the package's; both maps are drawn on PyTorch's scale."""
    folder, result = converted("depth_anything")
    tried = try_image.depth(result.packages[0], folder, _png_bytes(50, 40), "fp32")
    assert tried["kind"] == "depth" and tried["psnr_db"] > 60 and tried["relative_error"] < 1e-3
    for side in ("package", "pytorch"):
        assert _decoded(tried[side]["map"]).size == (28, 28)
    assert _decoded(tried["photo"]).size == (28, 28)
    with pytest.raises(UserInputError, match="not a photo"):
        try_image.depth(result.packages[0], folder, b"not an image", "fp32")


def test_trying_a_detector_on_the_sample(converted):
    folder, result = converted("detr")
    tried = try_image.detect(result.packages[0], folder, None, "fp16", threshold=0.0)
    ours, theirs = tried["package"]["detections"], tried["pytorch"]["detections"]
    assert len(ours) == len(theirs) == 8  # every query, at threshold 0
    assert [d["label"] for d in ours] == [d["label"] for d in theirs]
    assert np.allclose([d["box"] for d in ours], [d["box"] for d in theirs], atol=1.0)  # pixels of the 64×64 photo
    drawn = _decoded(tried["drawn"]).convert("RGB")
    assert drawn.size == (320, 320)  # enlarged 5×, so that its labels can be read
    colours = {tuple(c) for c in np.asarray(drawn).reshape(-1, 3)}
    assert try_image.COLOURS["package"] in colours and try_image.COLOURS["pytorch"] in colours  # both sides' boxes


def test_a_try_is_routed_by_the_reports_kind(converted):
    """The page and the worker read a conversion's try from its report (its task, and its
    packages' first input: an image); try_it.run hands the photo, as bytes in base64, to its kind."""
    for model_type, kind in (("depth_anything", "depth"), ("detr", "detect"), ("clip", "zero-shot"), ("vit", "classify-image")):
        assert try_it.kind_of_report(_json(converted(model_type)[1])) == kind, model_type
    # The same two towers converted for feature-extraction score labels too; a ViT's features have no try.
    towers = {**_json(converted("clip")[1]), "task": "feature-extraction"}
    assert try_it.kind_of_report(towers) == "zero-shot"
    assert try_it.kind_of_report({**_json(converted("vit")[1]), "task": "feature-extraction"}) is None
    assert try_it.TOKENIZED >= {"zero-shot"} and not try_it.TOKENIZED & {"depth", "detect", "classify-image", "transcribe"}
    folder, result = converted("depth_anything")
    photo = base64.b64encode(_png_bytes(50, 40)).decode()
    tried = try_it.run("depth", list(result.packages), folder, {"photo": photo}, "fp16")
    assert tried["kind"] == "depth" and tried["psnr_db"] > 40
    with pytest.raises(UserInputError, match="did not arrive whole"):
        try_it.run("depth", list(result.packages), folder, {"photo": "not base64!"}, "fp16")
    folder, result = converted("clip")
    tried = try_it.run("zero-shot", list(result.packages), folder, {"text": "a cat\na dog, a car", "photo": photo}, "fp32")
    assert [label for label, _ in tried["pytorch"]["probabilities"]] == [label for label, _ in tried["package"]["probabilities"]]
    assert {label for label, _ in tried["package"]["probabilities"]} == {"a cat", "a dog", "a car"}
    with pytest.raises(UserInputError, match="image package and the text package together"):
        try_it.run("zero-shot", list(result.packages)[:1], folder, {"text": "a\nb"}, "fp32")


def test_trying_an_image_classifier(converted):
    """The classifier's top classes from the package (Core ML's class dictionary) and from PyTorch's softmax."""
    folder, result = converted("vit")
    tried = try_image.classify(result.packages[0], folder, _png_bytes(40, 30), "fp16", top=3)
    ours, theirs = dict(tried["package"]["scores"]), dict(tried["pytorch"]["scores"])
    assert tried["package"]["label"] == tried["pytorch"]["label"] and len(ours) == 3
    assert all(abs(ours[label] - theirs[label]) < 5e-3 for label in ours)
    assert _decoded(tried["photo"]).size == (32, 32)


def test_detections_of_a_yolos_package():
    """YOLOS's package gives logits and boxes: the softmax without its last "no object" class scores them."""
    logits = np.array([[[4.0, 0.0, 0.0], [0.0, 0.0, 9.0]]])  # query 0: class a; query 1: no object
    boxes = np.array([[[0.5, 0.5, 0.5, 0.5], [0.2, 0.2, 0.1, 0.1]]])
    scores, got_boxes = try_image._scores_and_boxes({"logits": logits, "pred_boxes": boxes})
    assert scores.shape == (1, 2, 2) and got_boxes is boxes
    (found,) = try_image._detections(scores, got_boxes, ["a", "b"], 100, 200, 0.5)
    assert found["label"] == "a" and found["score"] > 0.9 and found["box"] == [50.0, 25.0, 150.0, 75.0]


@pytest.mark.parametrize("model_type", ["clip", "siglip2"])
def test_trying_zero_shot_labels(model_type, converted):
    folder, result = converted(model_type)
    labels = list(zero_shot.LABELS)
    tried = try_image.zero_shot(result.packages[0], result.packages[1], folder, None, labels, "fp32")
    assert tried["probability"] == ("softmax" if model_type == "clip" else "sigmoid")
    ours, theirs = dict(tried["package"]["probabilities"]), dict(tried["pytorch"]["probabilities"])
    assert set(ours) == set(labels) and all(abs(ours[label] - theirs[label]) < 5e-3 for label in labels)
    if model_type == "clip":
        assert sum(ours.values()) == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(UserInputError, match="between 2 and"):
        try_image.zero_shot(result.packages[0], result.packages[1], folder, None, ["only one"], "fp32")


# ---------------------------------------------------------------- rows that can fail (issue 31)
# The package's own outputs, tampered after it ran (the reference executor's predict wrapped),
# fail the row of their kind; the honest package passed in the conversion above. A random tiny
# detector near-ties its classes (softmax over 3 labels ~0.33 each, float16's tolerance 0.05), so
# its class row is shown to bite on a head scaled to decide them. Classification, top-1 token,
# embeddings and segmentation: tests/test_validation.py.


def _validated_with(monkeypatch, package, folder, task: str, output: str, change) -> dict:
    from converters.backends.coreml import executor as executor_module
    from converters.validate_package import validate_package

    with monkeypatch.context() as patch:
        real = executor_module.ReferenceExecutor.predict

        def predict(self, *args, **kwargs):
            outputs = real(self, *args, **kwargs)
            return {**outputs, output: change(outputs[output])} if output in outputs else outputs

        patch.setattr(executor_module.ReferenceExecutor, "predict", predict)
        return validate_package(package, str(folder), task)["validation"]


def _failing_modes(validation: dict, output: str, metric: str) -> set[str]:
    rows = [r for r in validation["checks"] if r["output"] == output and r["metric"] == metric]
    assert rows, (output, metric)
    return {r["mode"] for r in rows if not r["passed"]}


def test_a_detector_fails_its_top1_and_iou_rows_when_tampered(converted, monkeypatch, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    # A DETR whose class head is scaled x100: each query's class decided, so its top-1 row can fail in float16 too.
    folder, _ = converted("detr")
    decided = tmp_path / "decided-detr"
    shutil.copytree(folder, decided)
    weights = load_file(decided / "model.safetensors")
    for name in ("class_labels_classifier.weight", "class_labels_classifier.bias"):
        weights[name] = weights[name] * 100
    weights["class_labels_classifier.bias"][-1] = -1000.0  # "no object" never wins: every query names a class
    save_file({k: v.contiguous() for k, v in weights.items()}, decided / "model.safetensors", metadata={"format": "pt"})
    (package,) = convert(str(decided), "object-detection", tmp_path / "out", ConversionOptions(), validate=False).packages
    honest = _validated_with(monkeypatch, package, decided, "object-detection", "scores", lambda scores: scores)
    assert honest["passed"], honest["message"]
    swapped = _validated_with(monkeypatch, package, decided, "object-detection", "scores", _swap_top_two)
    assert not swapped["passed"] and _failing_modes(swapped, "scores", "top1_agreement") == {"fp32", "fp16"}

    def shifted(boxes):  # every box's centre moved a quarter of the image to the right
        boxes = np.array(boxes, copy=True)
        boxes[..., 0] += 0.25
        return boxes

    moved = _validated_with(monkeypatch, package, decided, "object-detection", "boxes", shifted)
    assert not moved["passed"] and _failing_modes(moved, "boxes", "min_box_iou") == {"fp32", "fp16"}
    assert _failing_modes(moved, "scores", "top1_agreement") == set()  # the row of the tampered output, not another


def test_a_depth_map_fails_its_relative_error_row_when_tampered(converted, monkeypatch):
    folder, result = converted("dpt")
    (package,) = result.packages
    scaled = _validated_with(monkeypatch, package, folder, "depth-estimation", "predicted_depth", lambda depth: np.asarray(depth) * 1.2)
    assert not scaled["passed"] and _failing_modes(scaled, "predicted_depth", "relative_error") == {"fp32", "fp16"}


def test_the_pages_sample_photos_reach_the_package(tmp_path):
    """The page's two sample photos are drawn here (no download), sent as PNG no larger than
    PHOTO_SIDE a side, and read by the try at the package's size."""
    from PIL import Image

    from ui.try_panel import photo_bytes, sample_photos

    paths = sample_photos(tmp_path)
    assert [p.name for p in paths] == ["street.png", "shapes.png"] and sample_photos(tmp_path) == paths
    street = Image.open(paths[0])
    assert street.size == (320, 240) and len(set(street.getdata())) > 20  # a picture, not a flat colour
    big = Image.new("RGB", (3000, 1500), (10, 20, 30))
    assert Image.open(io.BytesIO(photo_bytes(big))).size == (try_it.PHOTO_SIDE, try_it.PHOTO_SIDE // 2)
    pixels = try_image.photo(photo_bytes(street), 28, 28)
    assert pixels.shape == (1, 3, 28, 28) and pixels[0, 2, 0].mean() > pixels[0, 0, 0].mean()  # the sky is blue


# ---------------------------------------------------------------- Core AI twins (issue 29)
# The same tiny checkpoints (the module's Core ML fixture built them) as .aimodel folders, validated by
# running them in Core AI's runtime on this CPU, and tried as the page tries them: every image-text,
# depth and detection family Core AI takes (rt_detr is refused: test_rt_detr_is_refused_for_core_ai…).
CORE_AI_TWINS = ["clip", "siglip", "siglip2", "depth_anything", "dpt", "detr"]


@pytest.fixture(scope="module")
def as_aimodel(converted, tmp_path_factory):
    """model_type -> (folder, ConversionResult) of its Core AI conversion, once per module."""
    done = {}

    def get(model_type: str):
        if model_type not in done:
            folder, _ = converted(model_type)
            out = tmp_path_factory.mktemp(f"{model_type}-coreai")
            done[model_type] = folder, convert(str(folder), "auto", out, ConversionOptions.from_strings(format="coreai"))
        return done[model_type]

    return get


@pytest.mark.parametrize("model_type", CORE_AI_TWINS)
def test_core_ai_twin_converts_validates_and_is_tried(model_type, as_aimodel):
    """Each kind's .aimodel takes the image as a pixel tensor (its program scales it), keeps the Core ML
    package's output names and metadata, passes its kind's own checks run in Core AI's runtime, and its
    try gives the PyTorch model's answer — depth and detection were checked by hand only before."""
    from converters.backends.coreai.runtime import MODE

    folder, result = as_aimodel(model_type)
    report = _json(result)
    assert all(p.suffix == ".aimodel" for p in result.packages)
    validation = report["validation"]
    assert validation["passed"], validation["message"]
    assert {row["mode"] for row in validation["checks"]} == {MODE}
    (image,) = [i for i in report["packages"][0]["inputs"] if i["name"] == "image"]
    assert image["type"] == "tensor" and image["shape"][:2] == [1, 3]
    photo = base64.b64encode(_png_bytes(50, 40)).decode()
    if model_type in IMAGE_TEXT:
        for part, output in (("image_encoder", "image_embeds"), ("text_encoder", "text_embeds")):
            assert _checks(report, package=part, output=output, metric="cosine_similarity")[0]["passed"]
        (ranking,) = _checks(report, inputs=zero_shot.WHAT, metric="ranking_agreement")
        assert ranking["value"] == 1.0
        metadata = backend_for("coreai").describe(result.packages[0])["metadata"]
        assert metadata[PREFIX + "probability"] == ("softmax" if model_type == "clip" else "sigmoid")
        assert (PREFIX + "logit_bias" in metadata) == (model_type != "clip")  # SigLIP's and SigLIP 2's sigmoid bias
        tried = try_it.run("zero-shot", list(result.packages), folder, {"text": "a cat\na dog\na car", "photo": photo}, "fp32")
        ours, theirs = dict(tried["package"]["probabilities"]), dict(tried["pytorch"]["probabilities"])
        assert set(ours) == {"a cat", "a dog", "a car"} and all(abs(ours[k] - theirs[k]) < 0.01 for k in ours)
    elif model_type in DEPTH:
        assert {row["metric"] for row in _checks(report, output="predicted_depth")} >= {"psnr_db", "relative_error"}
        tried = try_it.run("depth", list(result.packages), folder, {"photo": photo}, "fp32")
        assert tried["psnr_db"] > 40 and tried["relative_error"] < 0.01
        side = 28 if model_type == "depth_anything" else 32  # the map at the model's output resolution
        assert _decoded(tried["package"]["map"]).size == (side, side)
    else:
        (iou,) = _checks(report, output="boxes", metric="min_box_iou")
        assert iou["passed"] and iou["value"] > 0.9
        assert PREFIX + "labels" in backend_for("coreai").describe(result.packages[0])["metadata"]
        tried = try_image.detect(result.packages[0], folder, None, MODE, threshold=0.0)
        ours, theirs = tried["package"]["detections"], tried["pytorch"]["detections"]
        assert len(ours) == len(theirs) == 8 and [d["label"] for d in ours] == [d["label"] for d in theirs]
        assert np.allclose([d["box"] for d in ours], [d["box"] for d in theirs], atol=1.0)


def test_trying_a_segmentation_package_draws_both_masks(tmp_path):
    """A semantic-segmentation package's try: its class per pixel beside PyTorch's (logits upsampled and
    argmax'd), both drawn in colour over the photo, the classes each finds, the share of pixels agreeing;
    the page shows the two masks and the classes. A random tiny head gives one class everywhere, so its
    classifier is set to split the photo's own features (their two main directions): three classes."""
    from transformers import SegformerForSemanticSegmentation

    from ui import render

    random_head = build_model("segformer", tmp_path / "random", model_class=SegformerForSemanticSegmentation)
    photo = _png_bytes(50, 40)
    model = SegformerForSemanticSegmentation.from_pretrained(random_head).eval()
    cfg = try_image._family(random_head, "semantic-segmentation")
    seen = []
    hook = model.decode_head.classifier.register_forward_hook(lambda module, given, out: seen.append(given[0]))
    with torch.no_grad():
        cfg.wrap(model)(try_image._program_input(cfg, try_image.photo(photo, *cfg.image_size())))
    hook.remove()
    features = seen[0][0].flatten(1).T  # [pixels, channels]
    mean = features.mean(0)
    directions = torch.linalg.svd(features - mean, full_matrices=False).Vh
    weight = torch.stack([directions[0], -directions[0], directions[1]]) * 10
    with torch.no_grad():
        model.decode_head.classifier.weight.copy_(weight[:, :, None, None])
        model.decode_head.classifier.bias.copy_(-(weight @ mean))
    folder = tmp_path / "segformer"
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_bytes((random_head / "preprocessor_config.json").read_bytes())

    (package,) = convert(str(folder), "semantic-segmentation", tmp_path / "out", ConversionOptions(), validate=False).packages
    assert try_it.kind_of_report({"task": "semantic-segmentation", "packages": [{"inputs": [{"name": "image"}]}]}) == "segment"
    tried = try_it.run("segment", [package], folder, {"photo": base64.b64encode(photo).decode()}, "fp16")
    ours, theirs = tried["package"], tried["pytorch"]
    assert tried["kind"] == "segment" and tried["agreement"] > 0.95
    assert len(theirs["classes"]) == 3 and max(share for _, share, _ in theirs["classes"]) < 0.9  # the mask varies
    assert [c[0] for c in ours["classes"]] == [c[0] for c in theirs["classes"]]  # the same classes, the same order
    assert abs(sum(share for _, share, _ in theirs["classes"]) - 1.0) < 1e-3
    assert all(abs(a[1] - b[1]) < 0.05 for a, b in zip(ours["classes"], theirs["classes"]))
    assert _decoded(ours["mask"]).size == _decoded(theirs["mask"]).size == (320, 320)  # 32 pixels enlarged 10×
    assert _decoded(tried["photo"]).size == (32, 32)
    html = render.try_result(tried)
    assert "data-role='package-mask'" in html and "data-role='pytorch-mask'" in html and "of the pixels" in html
