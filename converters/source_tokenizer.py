"""The source repo's tokenizer, used only when it really tokenizes.

Every check that turns text into token ids (validation's inputs, the continuation, GPTQ's
calibration text, Try it, the card's prompt lines) asks here first. transformers 5 does not
raise on a folder without tokenizer files: `AutoTokenizer` returns an *empty* tokenizer of
the model's class, which encodes any text to `[]` — and a model called on `[1, 0]` ids
fails deep inside. Weight-only repos (fine-tunes that rely on their base model's
tokenizer) are common on the Hub, so such a repo is converted and checked on synthetic ids
instead, and the report says so once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PROBE = "The quick brown fox jumps over the lazy dog."
# Files any transformers tokenizer is built from (fast, sentencepiece, BPE and WordPiece vocabularies).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "spiece.model",
                   "sentencepiece.bpe.model", "vocab.json", "vocab.txt", "merges.txt")

# Why a repo's tokenizer is not used: the report's words, and the card's and page's.
NO_FILES = "the repo has no tokenizer files"
UNREADABLE = "the repo's tokenizer files cannot be read"
ENCODES_NOTHING = "the repo's tokenizer turns a plain sentence into no known tokens"
BEYOND_VOCABULARY = "the repo's tokenizer gives token ids beyond the model's vocabulary"


@dataclass
class TokenizerCheck:
    """The tokenizer to use (None: synthetic ids) and, when there is none, why."""

    tokenizer: object | None
    missing: str | None = None  # one of the reasons above

    def warning(self, task: str | None = None) -> str | None:
        """The report's one warning about it (None when the tokenizer is used)."""
        if self.missing is None:
            return None
        text = f"No usable tokenizer in the repo ({self.missing}): checks use synthetic token ids"
        return text + ("; the continuation is compared on ids." if task == "text-generation" else ".")


def check_tokenizer(path: Path, vocab_size: int | None = None) -> TokenizerCheck:
    """The tokenizer in the folder `path`, if it tokenizes a plain sentence into ids inside
    the model's vocabulary (`vocab_size`, when known). Never remote code."""
    from transformers import AutoTokenizer

    if not any((Path(path) / name).is_file() for name in TOKENIZER_FILES):
        return TokenizerCheck(None, NO_FILES)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
    except Exception:  # noqa: BLE001 - incomplete or damaged tokenizer files: synthetic ids
        return TokenizerCheck(None, UNREADABLE)
    return judge(tokenizer, vocab_size)


def judge(tokenizer, vocab_size: int | None = None) -> TokenizerCheck:
    """The rule itself, for a tokenizer already loaded."""
    try:
        ids = list(tokenizer(PROBE, add_special_tokens=False)["input_ids"])
    except Exception:  # noqa: BLE001 - a tokenizer object that cannot encode: synthetic ids
        return TokenizerCheck(None, ENCODES_NOTHING)
    # An empty tokenizer encodes to [] (or, with byte fallback off, to unknown tokens only).
    if not ids or set(ids) <= {tokenizer.unk_token_id}:
        return TokenizerCheck(None, ENCODES_NOTHING)
    if vocab_size and any(not 0 <= int(i) < vocab_size for i in ids):
        return TokenizerCheck(None, BEYOND_VOCABULARY)
    return TokenizerCheck(tokenizer)


def load_tokenizer(path: Path, vocab_size: int | None = None):
    """The usable tokenizer in `path`, or None (callers then use synthetic ids)."""
    return check_tokenizer(path, vocab_size).tokenizer
