"""Vision packages at the image sizes an app chooses (issue 29, the `image_size` option):
a ViT as one Core ML function per size (its position embeddings resized by the model's own
bicubic code, in PyTorch, at conversion), a ConvNeXt as one program with enumerated image
shapes. Each package is converted and validated once (module fixture) and every size is checked
against PyTorch at that size; a tampered package (another resize of the embeddings) fails."""

from __future__ import annotations

import json
import platform

import coremltools as ct
import numpy as np
import pytest
import torch
from transformers.models.vit import modeling_vit

from converters.backends import backend_for_package
from converters.errors import UserInputError
from converters import try_image
from converters.export import convert
from converters.options import ConversionOptions
from converters.plan import make_plan
from converters.source import open_source
from converters.validate_package import validate_package
from tests.kind_models import build_kind
from tests.models import build_model
from worker.card_vision import FUNCTION_NAME_DOC, image_sizes_section

VIT_SIZES, CONVNEXT_SIZES = (32, 48), (32, 64)  # the tiny models' own size is 32 (ViT: patches of 8)


def _options(sizes, **more) -> ConversionOptions:
    return ConversionOptions.from_strings(image_size=",".join(str(s) for s in sizes), **more)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("image-sizes")
    folders = {name: build_model(name, root / name) for name in ("vit", "convnext")}
    # Position embeddings of unit scale (transformers initialises them at std 0.02, where they hardly
    # move the output): a resize done wrong must show.
    vit = modeling_vit.ViTForImageClassification.from_pretrained(folders["vit"])
    with torch.no_grad():
        vit.vit.embeddings.position_embeddings.normal_(generator=torch.Generator().manual_seed(0))
    vit.save_pretrained(folders["vit"])
    return folders


@pytest.fixture(scope="module")
def converted(models, tmp_path_factory):
    out = tmp_path_factory.mktemp("image-sizes-out")
    vit = convert(str(models["vit"]), "image-classification", out / "vit", _options(VIT_SIZES, minimum_deployment_target="iOS18"))
    convnext = convert(str(models["convnext"]), "image-classification", out / "convnext", _options(CONVNEXT_SIZES))
    return {"vit": vit, "convnext": convnext}


def _sizes_checked(result) -> dict[str, bool]:
    """Each input set's name -> whether all its rows passed."""
    rows: dict[str, bool] = {}
    for check in result.report_json["validation"]["checks"]:
        rows[check["inputs"]] = rows.get(check["inputs"], True) and check["passed"]
    return rows


def test_a_position_embedding_model_gets_one_function_per_size(converted):
    result = converted["vit"]
    (package,) = result.packages
    spec = ct.utils.load_spec(str(package))
    functions = {f.name: f for f in spec.description.functions}
    assert list(functions) == ["image_32", "image_48"]
    assert spec.description.defaultFunctionName == "image_32"  # the processor's size
    for side in VIT_SIZES:
        (image,) = [i for i in functions[f"image_{side}"].input if i.type.WhichOneof("Type") == "imageType"]
        assert (image.type.imageType.height, image.type.imageType.width) == (side, side)
        assert {o.name for o in functions[f"image_{side}"].output} >= {"probabilities", "classLabel"}
    assert functions["image_48"].input[0].shortDescription == "RGB image, 48x48 (function image_48; other sizes: image_32 (32x32))"
    metadata = dict(spec.description.metadata.userDefined)
    assert metadata["co.huggingface.exporters.image_sizes"] == "32,48"
    assert json.loads(metadata["co.huggingface.exporters.functions"]) == {"image_32": [32, 32], "image_48": [48, 48]}
    # the report reads the default function's interface; every size was validated in both modes
    assert result.report_json["packages"][0]["inputs"][0]["shape"] == [1, 3, 32, 32]
    assert _sizes_checked(result) == {"synthetic image 32x32": True, "synthetic image 48x48": True}
    assert result.report_json["validation"]["passed"]
    assert {c["mode"] for c in result.report_json["validation"]["checks"]} == {"fp32", "fp16"}


def test_the_reference_executor_runs_the_function_of_each_size(converted):
    (package,) = converted["vit"].packages
    runner = backend_for_package(package).runner(package)
    assert sorted(runner.by_size) == [(32, 32), (48, 48)]
    for side in VIT_SIZES:
        image = torch.rand(1, 3, side, side).numpy() * 255
        assert len(runner.predict({"image": image})["probabilities"]) == 3  # the classifier's {label: probability}


def test_on_a_mac_each_compute_unit_loads_one_function_per_size(converted, monkeypatch):
    """Validation's Core ML rows on a Mac: Core ML loads one function at a time, so each compute
    unit gets a load per size (coremltools' function_name) and each size's feeds go to its load.
    Core ML itself loads only on macOS: here the load is recorded instead (the routing is ours)."""
    from converters.backends.coreml import runtime

    (package,) = converted["vit"].packages
    loads = []
    monkeypatch.setattr(runtime, "load", lambda path, unit, function=None: loads.append((unit, function)) or function)
    monkeypatch.setattr(runtime, "predict", lambda model, feeds, stateful: [{"function": model} for _ in feeds])
    runs = backend_for_package(package).device_runs(package)
    assert sorted(loads) == sorted((unit, f"image_{side}") for unit in runtime.COMPUTE_UNITS for side in VIT_SIZES)
    assert [run.mode for run in runs] == [f"coreml-{unit}" for unit in runtime.COMPUTE_UNITS]
    for side in VIT_SIZES:
        feeds = [{"image": np.zeros((1, 3, side, side), np.float32)}]
        assert all(run.predict(feeds, False) == [{"function": f"image_{side}"}] for run in runs)


@pytest.mark.macos
@pytest.mark.skipif(platform.system() != "Darwin", reason="Core ML loads and runs a package only on macOS")
def test_on_a_mac_every_size_is_validated_on_every_compute_unit(converted, models):
    (package,) = converted["vit"].packages
    validation = validate_package(package, str(models["vit"]), "image-classification")["validation"]
    assert validation["passed"], validation["message"]
    units = {f"coreml-{unit}" for unit in ("CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE", "ALL")}
    for side in VIT_SIZES:
        modes = {row["mode"] for row in validation["checks"] if row["inputs"] == f"synthetic image {side}x{side}"}
        assert modes >= units | {"fp32", "fp16"}, (side, modes)


def test_a_size_agnostic_convnet_gets_enumerated_image_shapes(converted):
    result = converted["convnext"]
    (package,) = result.packages
    spec = ct.utils.load_spec(str(package))
    assert not spec.description.functions  # one program
    image = spec.description.input[0].type.imageType
    assert [(s.height, s.width) for s in image.enumeratedSizes.sizes] == [(32, 32), (64, 64)]
    assert (image.height, image.width) == (32, 32)  # the default: the processor's size
    assert result.report_json["packages"][0]["inputs"][0]["description"] == "RGB image: 32x32 (default), 64x64"
    assert spec.specificationVersion < 9  # enumerated shapes need no iOS 18 (the default target, iOS 17)
    assert _sizes_checked(result) == {"synthetic image 32x32": True, "synthetic image 64x64": True}


def test_the_card_says_the_sizes_and_how_an_app_picks_one(converted):
    functions = "\n".join(image_sizes_section(converted["vit"].report_json))
    assert "`image_48` for 48×48" in functions and 'configuration.functionName = "image_48"' in functions
    assert FUNCTION_NAME_DOC in functions and "`image_32` (32×32" in functions
    enumerated = "\n".join(image_sizes_section(converted["convnext"].report_json))
    assert "32×32, 64×64" in enumerated and "enumeratedImageSizes" in enumerated and "functionName" not in enumerated
    assert image_sizes_section({"options": {"image_size": "auto"}}) == []


def test_embeddings_resized_another_way_fail_validation(models, tmp_path, monkeypatch):
    """A package whose 48-pixel function holds embeddings resized bilinearly (not as the model's own
    bicubic code does) converts, and validation against PyTorch at 48 pixels fails; 32 still passes."""
    original = modeling_vit.ViTEmbeddings.interpolate_pos_encoding

    def bilinear(self, embeddings, height, width):
        patches = self.position_embeddings[:, 1:]
        side = int(patches.shape[1] ** 0.5)
        grid = patches.reshape(1, side, side, -1).permute(0, 3, 1, 2)
        grid = torch.nn.functional.interpolate(grid, size=(height // self.patch_size, width // self.patch_size), mode="bilinear")
        return torch.cat([self.position_embeddings[:, :1], grid.permute(0, 2, 3, 1).reshape(1, -1, patches.shape[-1])], dim=1)

    monkeypatch.setattr(modeling_vit.ViTEmbeddings, "interpolate_pos_encoding", bilinear)
    (package,) = convert(str(models["vit"]), "feature-extraction", tmp_path / "out",
                         _options(VIT_SIZES, minimum_deployment_target="iOS18"), validate=False).packages
    monkeypatch.setattr(modeling_vit.ViTEmbeddings, "interpolate_pos_encoding", original)
    checks = validate_package(package, str(models["vit"]), "feature-extraction")["validation"]["checks"]
    by_size = {}
    for check in checks:  # the pooler is not in the classification checkpoint: each load draws its own
        if check["output"] == "last_hidden_state":
            by_size[check["inputs"]] = by_size.get(check["inputs"], True) and check["passed"]
    assert by_size == {"synthetic image 32x32": True, "synthetic image 48x48": False}


def _refusal(folder, **options) -> str:
    with pytest.raises(UserInputError) as refused:
        make_plan(open_source(str(folder)), "auto", ConversionOptions.from_strings(**options))
    return str(refused.value)


def test_sizes_a_model_cannot_take_are_refused_at_plan_time(models, tmp_path):
    vit, convnext = models["vit"], models["convnext"]
    assert "not a multiple of this model's patch size (8)" in _refusal(vit, image_size="30") and "Type 24 or 32" in _refusal(vit, image_size="30")
    assert "at least 8 pixels" in _refusal(vit, image_size="4")
    assert "at least 32 pixels" in _refusal(convnext, image_size="16,64")
    assert "needs minimum deployment target iOS18" in _refusal(vit, image_size="32,48")  # one function per size
    assert "Core AI output takes one image size" in _refusal(convnext, image_size="32,64", format="coreai")
    with pytest.raises(UserInputError, match="listed twice"):
        ConversionOptions.from_strings(image_size="32,32")
    with pytest.raises(UserInputError, match="at most 8"):
        ConversionOptions.from_strings(image_size=",".join(str(32 + 8 * i) for i in range(9)))
    bert = build_model("bert", tmp_path / "bert")
    assert "takes no image" in _refusal(bert, image_size="224")
    assert "Type one size" in _refusal(build_kind("detr", tmp_path / "detr"), image_size="64,96")
    assert "Leave the image size at auto" in _refusal(build_kind("siglip2", tmp_path / "siglip2"), image_size="32,48")
    # what is accepted: one size other than the model's own, a list on enumerated shapes below iOS 18
    assert make_plan(open_source(str(vit)), "auto", _options((48,))).cfg.image_size() == (48, 48)
    assert make_plan(open_source(str(convnext)), "auto", _options((64, 32))).cfg.image_sizes() == [(32, 32), (64, 64)]


def _photo_side(tried: dict) -> int:
    from PIL import Image
    import base64
    import io

    return Image.open(io.BytesIO(base64.b64decode(tried["photo"].split(",")[-1]))).size[0]


def test_try_it_feeds_the_package_its_default_size(models, converted, tmp_path):
    """Try it resizes the photo to the size the package was made for (its default function, or its
    one chosen size), and PyTorch answers at that size too."""
    (functions,) = converted["vit"].packages
    tried = try_image.classify(functions, models["vit"], None, "fp32")
    assert _photo_side(tried) == 32 and tried["package"]["scores"][0][0] == tried["pytorch"]["scores"][0][0]
    (one,) = convert(str(models["convnext"]), "image-classification", tmp_path / "out", _options((64,)), validate=False).packages
    tried = try_image.classify(one, models["convnext"], None, "fp32")
    assert _photo_side(tried) == 64
    assert [label for label, _ in tried["package"]["scores"]] == [label for label, _ in tried["pytorch"]["scores"]]


def test_one_function_per_size_compresses_each(models, tmp_path):
    """int8 weights in every function (each compressed before they are joined, its weights stored once),
    judged at each size by the scheme's quality bar."""
    result = convert(str(models["vit"]), "image-classification", tmp_path / "out",
                     _options(VIT_SIZES, minimum_deployment_target="iOS18", quantize="int8"))
    (package,) = result.packages
    assert [f.name for f in ct.utils.load_spec(str(package)).description.functions] == ["image_32", "image_48"]
    assert result.report_json["packages"][0]["program"]["weight_bits"] < 16  # the tiny model keeps its smallest weights float16
    assert _sizes_checked(result) == {"synthetic image 32x32": True, "synthetic image 48x48": True}
