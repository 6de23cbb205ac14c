"""The claims table (docs/claims.md) stays honest, and the README's cheap claims are asserted at
their numbers: every test the table names exists, every number the README quotes is in the table,
and the toolchain, defaults, quality bars, size ratios, memory rule, per-person limits and
architecture count are what the README says. The real-model claims are asserted where their
conversions are (the table names each test)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CLAIMS = ROOT / "docs" / "claims.md"
# A number the README quotes as a claim: with a unit of what it counts, or a decimal (versions, ratios).
QUOTED = re.compile(r"(?<![\w.])(\d[\d,]*(?:\.\d+)?)(?:(\s?(?:×|%|GB|B parameters|bytes|tries|conversions|architectures|tokens))|(?=\D|$))")


def _readme_prose() -> str:
    """The README without its Space front matter, code blocks and the generated architecture table."""
    text = README.read_text().split("\n---\n", 1)[1]
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"<!-- supported-architectures:begin.*?supported-architectures:end -->", "", text, flags=re.S)
    return " ".join(text.split())


def _quoted_numbers(text: str) -> set[str]:
    found = set()
    for match in QUOTED.finditer(text):
        number, unit = match.group(1).rstrip(","), match.group(2)
        if unit:
            found.add(number + unit)
        elif "." in number:
            found.add(number)
    return found


def _table_tests() -> list[tuple[str, str]]:
    return re.findall(r"`(tests/[\w/]+\.py)::(\w+)(?:\[[^\]]*\])?`", CLAIMS.read_text())


def test_every_test_the_claims_table_names_exists():
    named = _table_tests()
    assert len(named) >= 40, named
    missing = [f"{path}::{name}" for path, name in named
               if not (ROOT / path).is_file() or not re.search(rf"^\s*def {name}\(", (ROOT / path).read_text(), re.M)]
    assert not missing, f"docs/claims.md names tests that do not exist: {missing}"
    benches = set(re.findall(r"`(bench/\w+\.py)", CLAIMS.read_text()))
    assert benches and all((ROOT / bench).is_file() for bench in benches), benches


def test_every_number_the_readme_quotes_is_in_the_claims_table():
    numbers = _quoted_numbers(_readme_prose())
    # What the check sees, so that a rewrite of the README cannot blind it.
    assert {"0.30×", "1.11×", "0.995×", "1.36×", "2.5 bytes", "20 tries", "22 architectures", "2.13", "128 tokens"} <= numbers
    claims = CLAIMS.read_text()
    missing = sorted(n for n in numbers if n not in claims)
    assert not missing, f"README numbers with no row in docs/claims.md: {missing}"


def test_the_readme_links_the_claims_table():
    assert "[docs/claims.md](docs/claims.md)" in README.read_text()


def test_the_toolchain_is_the_readmes():
    import coremltools
    import torch
    import transformers

    readme = README.read_text()
    versions = re.search(r"transformers (\d+), torch (\d+\.\d+), coremltools (\d+\.\d+)", readme).groups()
    assert transformers.__version__.split(".")[0] == versions[0]
    assert torch.__version__.startswith(versions[1] + ".")
    assert coremltools.__version__ == versions[2] or coremltools.__version__.startswith(versions[2] + ".")
    python = re.search(r"Python (\d+\.\d+) is required \(`PYTHON=python(\d+\.\d+)`", readme).groups()
    assert python[0] == python[1] and f"PYTHON ?= python{python[0]}" in (ROOT / "Makefile").read_text()


def test_the_default_options_and_targets_are_the_readmes():
    from converters.formats import CORE_AI, CORE_ML
    from converters.options import DEPLOYMENT_TARGETS, ConversionOptions

    readme = README.read_text()
    assert "(float16, 128 tokens, iOS 17)" in readme and "(iOS 18)" in readme
    defaults = ConversionOptions().for_model(8192)  # auto, resolved for a model like SmolLM2 (8192 positions)
    assert (defaults.precision, str(defaults.sequence_length), defaults.minimum_deployment_target) == ("float16", "128", "iOS17")
    assert "Core ML (iOS 15+ / macOS 12+)" in readme and "iOS 15+ / macOS 12+" in CORE_ML.choice
    assert min(t for t in DEPLOYMENT_TARGETS if t.startswith("iOS")) == "iOS15"
    assert min(t for t in DEPLOYMENT_TARGETS if t.startswith("macOS")) == "macOS12"
    assert "Core AI (iOS/macOS 27)" in readme and "iOS/macOS 27" in CORE_AI.choice


def _readme_size_table() -> dict[str, tuple[str, str]]:
    """scheme -> (size cell, quality bar cell) of the README's "Smaller packages" table."""
    rows = {}
    for line in README.read_text().splitlines():
        match = re.match(r"^\| [^|]*\(`(\w+)`\)[^|]* \|[^|]*\| ([^|]+) \| ([^|]+) \|", line)
        if match:
            rows[match[1]] = (match[2].strip(), match[3].strip())
    return rows


def test_the_quality_bars_are_the_readmes():
    from converters.validation.quality_bars import COMPRESSED_QUALITY

    table = _readme_size_table()
    assert set(table) == {"none", *COMPRESSED_QUALITY}, table
    for scheme, bar in COMPRESSED_QUALITY.items():
        stated = float(re.search(r"≤ ([\d.]+)×", table[scheme][1])[1])
        assert bar.max_perplexity_ratio == pytest.approx(stated), (scheme, stated, bar)
    assert table["none"][1] == "exact checks"
    # docs/compression.md repeats the same table
    compression = (ROOT / "docs" / "compression.md").read_text()
    for line in README.read_text().splitlines():
        if re.match(r"^\| [^|]*\(`\w+`\)", line):
            assert line in compression, line


def test_the_size_choices_estimate_the_readmes_ratios_for_smollm2(real_llm):
    """The README's size column (measured packages of the suite's SmolLM2, iOS18) against the
    size estimate from its config; the real packages are held to their bars where they are converted."""
    from converters.loading import load_hf_config
    from converters.options import ConversionOptions
    from converters.size_estimate import estimates, weight_shapes

    options = ConversionOptions.from_strings(minimum_deployment_target="iOS18")
    sizes = estimates(weight_shapes(load_hf_config(real_llm), "text-generation"), options, "text-generation")
    table = _readme_size_table()
    for scheme, (cell, _) in table.items():
        stated = float(re.match(r"(?:about )?([\d.]+)×", cell)[1])
        slack = 0.05 if cell.startswith("about") else 0.01
        assert sizes[scheme] / sizes["none"] == pytest.approx(stated, abs=slack), (scheme, cell, sizes[scheme] / sizes["none"])


def test_the_worker_memory_rule_is_the_readmes(monkeypatch):
    from worker import capabilities

    readme = README.read_text()
    fixed, per, billions, memory = re.search(
        r"\((\d+) GB plus ([\d.]+) bytes per parameter: (\d+) B\s+parameters on (\d+) GB;", readme).groups()
    assert capabilities.FIXED_BYTES == int(fixed) * 10**9 and capabilities.BYTES_PER_PARAMETER == float(per)
    monkeypatch.delenv("COREML_CONVERTER_MAX_PARAMS", raising=False)
    monkeypatch.setattr(capabilities, "memory_bytes", lambda: (int(memory) * 10**9, None))
    limit = capabilities.parameter_limit()
    assert int(billions) * 10**9 <= limit < (int(billions) + 1) * 10**9, limit
    space = re.search(r"the free Space takes (\d+) B\)", readme)[1]
    assert f"COREML_CONVERTER_MAX_PARAMS={space}000000000" in (ROOT / "Dockerfile").read_text()


def test_the_per_person_limits_are_the_readmes(monkeypatch):
    from worker import settings

    jobs, tries = re.search(r"Per person on a shared service: (\d+) conversions queued or running, (\d+) tries an hour",
                            README.read_text()).groups()
    for name in ("COREML_CONVERTER_USER_ACTIVE_JOBS", "COREML_CONVERTER_USER_TRIES_PER_HOUR"):
        monkeypatch.delenv(name, raising=False)
    assert (settings.user_active_jobs(), settings.user_tries_per_hour()) == (int(jobs), int(tries))


def test_the_readme_counts_the_unlisted_architectures_the_suite_converts():
    """"Measured on tiny models of 22 architectures outside the list": each name the README says
    converts and validates is one the suite converts and validates (test_generic_architectures.py),
    each op it says stops the others is the suite's, and the count is those together."""
    from tests.test_generic_architectures import CONVERTS, FAILS

    def plain(name: str) -> str:
        return re.sub(r"[^a-z0-9]", "", name.lower())

    readme = " ".join(README.read_text().split())
    count = int(re.search(r"tiny models of (\d+) architectures outside the list", readme)[1])
    converts = re.search(r"\(`tests/test_generic_architectures.py`\): (.*?) convert and validate;", readme)[1]
    names = [plain(n) for n in re.split(r",| and ", converts) if n.strip()]
    assert names and set(names) <= {plain(t) for t in CONVERTS}, set(names) - {plain(t) for t in CONVERTS}
    stops = [t for t, (_, _, op, _) in FAILS.items() if f"`{op}`" in readme and t.replace("_", "").upper() in readme.upper()]
    assert len(stops) == len(FAILS) == 3
    assert count == len(names) + len(stops) == 22


def test_wherever_compression_numbers_on_smollm2_are_quoted_the_q4_1_grid_is_said():
    """The suite's SmolLM2 is a Q4_1 GGUF dequantized (its layers already on a 4-bit grid), so its
    compression numbers may be kinder than a float16 checkpoint's: each page quoting them says so."""
    quoting = re.compile(r"\d\.\d+× (?:perplexity|the float32)|int8 0\.50×|0\.30× \(1\.20×")
    pages = [README, *sorted((ROOT / "docs").glob("*.md"))]
    quoted = [page for page in pages if quoting.search(page.read_text())]
    assert {README.name, "compression.md", "core-ai.md", "command-line.md", "claims.md"} <= {p.name for p in quoted}
    silent = [page.name for page in quoted if "Q4_1" not in page.read_text()]
    assert not silent, f"compression numbers on the suite's SmolLM2 without its Q4_1 grid caveat: {silent}"
