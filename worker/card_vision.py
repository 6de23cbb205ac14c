"""The card's Swift for the vision kinds that need more than one prediction call to be used
(issue 29): an image–text model's two packages scored together, as the model scores a label;
a depth map brought back to the photo's size.

An image–text model's probability is computed as transformers' zero-shot pipeline computes it
(pipelines/zero_shot_image_classification.py: `logits_per_image.softmax(dim=-1)` for CLIP,
`torch.sigmoid(logits)` for SigLIP), from the scale and bias the packages carry in their
metadata (`co.huggingface.exporters.logit_scale`, `.logit_bias`, `.probability`), which the
snippet reads through `MLModelDescription.metadata[.creatorDefinedKey]`."""

from __future__ import annotations

from converters.image_size_rules import ENUMERATED, design_for, function_name


def package_name(path: str) -> str:
    return path.split("/")[-1].removesuffix(".mlpackage")


def is_image_text(report: dict) -> bool:
    """Whether the packages are an image–text model's two encoders."""
    outputs = {o.get("name") for package in report.get("packages") or [] for o in package.get("outputs") or []}
    return {"image_embeds", "text_embeds"} <= outputs


def _shape(report: dict, name: str) -> list:
    for package in report.get("packages") or []:
        for item in package.get("inputs") or []:
            if item.get("name") == name:
                return item.get("shape") or []
    return []


def image_text_snippet(report: dict, package_paths: list[str], compute_units: str) -> list[str]:
    image_path = next((p for p in package_paths if "image_encoder" in p), package_paths[0])
    text_path = next((p for p in package_paths if "text_encoder" in p), package_paths[-1])
    image_shape, ids_shape = _shape(report, "image"), _shape(report, "input_ids")
    width, height = (image_shape[-1], image_shape[-2]) if len(image_shape) == 4 else ("W", "H")
    length = ids_shape[-1] if ids_shape else "the package's"
    return [
        "Two packages: the image encoder embeds a photo, the text encoder a label or a search query; both "
        "embeddings have unit length, so their dot product is the cosine similarity (photo search ranks by it). "
        "A label's probability is computed as the model computes it, with the scale (and bias) in the packages' metadata:",
        "",
        "```swift",
        "import CoreML",
        "",
        "func load(_ name: String) throws -> MLModel {",
        '    let url = Bundle.main.url(forResource: name, withExtension: "mlmodelc")!  // Xcode compiles the .mlpackage',
        "    let configuration = MLModelConfiguration()",
        f"    configuration.computeUnits = {compute_units}",
        "    return try MLModel(contentsOf: url, configuration: configuration)",
        "}",
        f'let imageEncoder = try load("{package_name(image_path)}")',
        f'let textEncoder = try load("{package_name(text_path)}")',
        "",
        "func vector(_ output: MLFeatureProvider, _ name: String) -> [Float] {",
        "    let array = output.featureValue(for: name)!.multiArrayValue!",
        "    return (0..<array.count).map { array[$0].floatValue }",
        "}",
        "",
        f"/// `image`: a {width}×{height} photo. `labels`: each label's token ids and mask from the model's tokenizer,",
        f"/// padded to {length} tokens.",
        "func labelProbabilities(image: CVPixelBuffer, labels: [(ids: MLMultiArray, mask: MLMultiArray)]) throws -> [Float] {",
        '    let imageEmbedding = vector(try imageEncoder.prediction(from: MLDictionaryFeatureProvider(',
        '        dictionary: ["image": MLFeatureValue(pixelBuffer: image)])), "image_embeds")',
        "    let metadata = imageEncoder.modelDescription.metadata[.creatorDefinedKey] as! [String: String]",
        '    let scale = Float(metadata["co.huggingface.exporters.logit_scale"]!)!',
        '    let bias = Float(metadata["co.huggingface.exporters.logit_bias"] ?? "0")!',
        "    let scores = try labels.map { label -> Float in",
        "        let textEmbedding = vector(try textEncoder.prediction(from: MLDictionaryFeatureProvider(",
        '            dictionary: ["input_ids": label.ids, "attention_mask": label.mask])), "text_embeds")',
        "        return scale * zip(imageEmbedding, textEmbedding).map(*).reduce(0, +) + bias",
        "    }",
        '    if metadata["co.huggingface.exporters.probability"] == "sigmoid" {',
        "        return scores.map { 1 / (1 + exp(-$0)) }  // SigLIP: each label on its own",
        "    }",
        "    let top = scores.max() ?? 0  // CLIP: softmax over the labels",
        "    let exps = scores.map { exp($0 - top) }",
        "    let total = exps.reduce(0, +)",
        "    return exps.map { $0 / total }",
        "}",
        "```",
    ]


def _photo_size(report: dict) -> tuple:
    """The photo's width and height the package takes (W, H when its image input is not 4-D)."""
    image_shape = _shape(report, "image")
    return (image_shape[-1], image_shape[-2]) if len(image_shape) == 4 else ("W", "H")


def _loaded_model(name: str, compute_units: str) -> list[str]:
    """The Swift lines that load the app's compiled package `name` on `compute_units`."""
    return [
        f'    let url = Bundle.main.url(forResource: "{name}", withExtension: "mlmodelc")!  // Xcode compiles the .mlpackage',
        "    let configuration = MLModelConfiguration()",
        f"    configuration.computeUnits = {compute_units}",
        "    let model = try MLModel(contentsOf: url, configuration: configuration)",
    ]


def depth_snippet(report: dict, name: str, compute_units: str) -> list[str]:
    width, height = _photo_size(report)
    return [
        f"The package takes a {width}×{height} photo and gives `predicted_depth`, one value per pixel of the model's "
        "output. A relative-depth model's values grow as points get nearer (inverse depth, no unit); a metric one's are "
        "metres. transformers' `post_process_depth_estimation` resizes the map back to the photo's size (bicubic); "
        "to draw it, scale it to 0–255 by its minimum and maximum:",
        "",
        "```swift",
        "import CoreML",
        "",
        "func depthMap(image: CVPixelBuffer) throws -> MLMultiArray {",
        *_loaded_model(name, compute_units),
        '    let output = try model.prediction(from: MLDictionaryFeatureProvider(dictionary: ["image": MLFeatureValue(pixelBuffer: image)]))',
        '    return output.featureValue(for: "predicted_depth")!.multiArrayValue!  // [1, height, width]',
        "}",
        "```",
    ]


def is_detection(report: dict) -> bool:
    """Whether the package is a DETR-style detector's: per-query scores and boxes."""
    outputs = {o.get("name") for package in report.get("packages") or [] for o in package.get("outputs") or []}
    return {"scores", "boxes"} <= outputs


def detection_snippet(report: dict, name: str, compute_units: str) -> list[str]:
    width, height = _photo_size(report)
    return [
        f"The package takes a {width}×{height} photo and gives, for each of its fixed number of detections, `scores` "
        "(the probability of each class, as the model's processor computes it) and `boxes` (center x, center y, width, "
        "height, relative to the image: 0 to 1). The class names are in the package's metadata "
        "(`co.huggingface.exporters.labels`). Keep the detections whose best score passes a threshold and draw their "
        "boxes on the photo at its own size:",
        "",
        "```swift",
        "import CoreML",
        "import CoreGraphics",
        "",
        "struct Detection { let label: String; let score: Float; let box: CGRect }  // box: top-left origin, in pixels",
        "",
        "func detect(image: CVPixelBuffer, photoSize: CGSize, threshold: Float = 0.5) throws -> [Detection] {",
        *_loaded_model(name, compute_units),
        "    let metadata = model.modelDescription.metadata[.creatorDefinedKey] as! [String: String]",
        '    let labels = try JSONDecoder().decode([String].self, from: Data(metadata["co.huggingface.exporters.labels"]!.utf8))',
        '    let output = try model.prediction(from: MLDictionaryFeatureProvider(dictionary: ["image": MLFeatureValue(pixelBuffer: image)]))',
        '    let scores = output.featureValue(for: "scores")!.multiArrayValue!  // [1, detections, classes]',
        '    let boxes = output.featureValue(for: "boxes")!.multiArrayValue!    // [1, detections, 4]',
        "    var found: [Detection] = []",
        "    for d in 0..<scores.shape[1].intValue {",
        "        let classScores = (0..<scores.shape[2].intValue).map { scores[[0, d, $0] as [NSNumber]].floatValue }",
        "        guard let best = classScores.indices.max(by: { classScores[$0] < classScores[$1] }), classScores[best] >= threshold else { continue }",
        "        let b = (0..<4).map { CGFloat(boxes[[0, d, $0] as [NSNumber]].floatValue) }  // cx, cy, w, h",
        "        let box = CGRect(x: (b[0] - b[2] / 2) * photoSize.width, y: (b[1] - b[3] / 2) * photoSize.height,",
        "                         width: b[2] * photoSize.width, height: b[3] * photoSize.height)",
        "        found.append(Detection(label: labels[best], score: classScores[best], box: box))",
        "    }",
        "    return found  // (Vision's normalized rects have their origin bottom-left: y = 1 - cy - h / 2)",
        "}",
        "```",
    ]


# Apple's API for a multifunction package's function (iOS 18 / macOS 15):
# https://developer.apple.com/documentation/coreml/mlmodelconfiguration/functionname ("Use `nil` to use a
# default function"); for enumerated image sizes, the input's `MLImageConstraint.sizeConstraint`
# (`MLImageSizeConstraint.enumeratedImageSizes`) lists them.
FUNCTION_NAME_DOC = "https://developer.apple.com/documentation/coreml/mlmodelconfiguration/functionname"


def image_sizes_section(report: dict) -> list[str]:
    """Which image sizes the package takes and how a Swift app picks one (none: one size, said by its snippet)."""
    chosen = str((report.get("options") or {}).get("image_size") or "auto")
    if chosen == "auto" or "," not in chosen:
        return []
    sizes = [int(side) for side in chosen.split(",")]
    model_type = (report.get("architecture") or {}).get("model_type")
    listed = ", ".join(f"{s}×{s}" for s in sizes)
    width, height = _photo_size(report)
    if design_for(model_type, len(sizes)) == ENUMERATED:  # one program; its image input lists the sizes
        return [
            f"The package takes a photo of any of these sizes: {listed} (its image input's enumerated sizes; "
            f"{width}×{height} is the default). Resize the photo to the size you want and pass it: a larger one sees more "
            "detail and costs more time. The sizes are in `model.modelDescription.inputDescriptionsByName[\"image\"]!"
            ".imageConstraint!.sizeConstraint.enumeratedImageSizes` and in the metadata key "
            "`co.huggingface.exporters.image_sizes`.",
        ]
    names = [function_name((s, s)) for s in sizes]
    return [
        f"The package holds one function per image size ({', '.join(f'`{n}` for {s}×{s}' for n, s in zip(names, sizes))}; "
        f"the weights are stored once). Without a function name Core ML loads the default, `{function_name((height, width))}` "
        f"({width}×{height}, the model's own size). To use another size, name its function when loading "
        f"([`MLModelConfiguration.functionName`]({FUNCTION_NAME_DOC}), iOS 18 / macOS 15) and pass a photo of that size; "
        "the names are also in the metadata key `co.huggingface.exporters.functions`:",
        "",
        "```swift",
        "let configuration = MLModelConfiguration()",
        f'configuration.functionName = "{names[-1]}"  // a {sizes[-1]}×{sizes[-1]} photo',
        "let model = try MLModel(contentsOf: url, configuration: configuration)",
        "```",
        "",
    ]
