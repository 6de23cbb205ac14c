"""Stage 1, plan: what will be converted, decided before any weights are loaded.

From the source (a folder, or a Hub repo downloaded), its config, the requested task and
the options: the architecture's config (`cfg`, which knows the packages' interface), the
task, the parts to build and the repo the packages name for their tokenizer. Every refusal
of the request happens here, so nothing is loaded for a request that cannot be served.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .backends import backend_for
from .configs import ExportConfig, config_class_for, image_sizes
from .errors import UserInputError
from .loading import load_hf_config, load_preprocessor, resolve_task
from .formats import format_of
from .options import OPTIONS, ConversionOptions
from .source import ModelSource


@dataclass
class Plan:
    source: ModelSource
    requested_task: str
    cfg: ExportConfig
    options: ConversionOptions
    hub_name: str  # the repo the packages name for their tokenizer (co.huggingface.exporters.name)
    warnings: list[str] = field(default_factory=list)
    compression: dict[str, dict] = field(default_factory=dict)  # part -> what the compression transform did
    calibration: dict | None = None  # what calibrate.py did (GPTQ), for the report
    parameters: int = 0  # the model's, counted once it loads (memory.release asks)

    @property
    def task(self) -> str:
        return self.cfg.task

    @property
    def hf_config(self):
        return self.cfg.hf_config

    @property
    def parts(self) -> list[str]:
        return self.cfg.parts()


def make_plan(source: ModelSource, task: str, options: ConversionOptions, hub_name: str | None = None) -> Plan:
    hf_config = load_hf_config(source.path)
    config_cls = config_class_for(hf_config.model_type)
    resolved_task = resolve_task(task, hf_config, source=source)
    cfg = config_cls(hf_config, resolved_task, options, load_preprocessor(source.path))
    check_request(cfg)
    # cfg.options: the options with an auto sequence length resolved for this model.
    plan = Plan(source, task, cfg, cfg.options, hub_name or source.hub_id or source.name)
    if options.sequence_length.kind == "range" and cfg.modality == "text":
        plan.warnings.append(
            "The sequence length is a range: Core ML runs range-shaped models on the GPU or CPU, and on the "
            "Neural Engine only at the default length. Use a list of lengths to let the Neural Engine run each."
        )
    return plan


def check_request(cfg: ExportConfig) -> None:
    """Every refusal of the options `cfg` carries for its model and task (UserInputError saying
    why), before any weights load: what the architecture's family cannot honour
    (cfg.check_options), then what each output format cannot take (Core ML: what its deployment
    target cannot run). The form and the worker ask the same (preflight.check_options)."""
    options = cfg.options
    cfg.check_options()
    image_sizes.check(cfg)  # the image sizes a vision model can take (any family, any format)
    if options.llm_bundle != OPTIONS["llm_bundle"].default and not any(format_of(name).llm_cache for name in options.formats):
        raise UserInputError("The iOS LLM bundle is a Core AI package: choose the Core AI format (or both), "
                             "or keep the macOS choice.")
    for name in options.formats:
        reason = backend_for(name).refusal(cfg, options)
        if reason:
            raise UserInputError(reason)
