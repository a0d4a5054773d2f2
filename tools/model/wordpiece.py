"""A whole-word WordPiece tokenizer written as a Hugging Face ``tokenizer.json`` (loadable by @huggingface/tokenizers
and by the Rust ``tokenizers`` crate), with a Python encoder that gives the same ids for training.

Every word of the world is one token; anything else falls back to single characters (``x ##y ##z``), so no input is
unrepresentable.  Pre-tokenisation is HF's ``Whitespace`` (``\\w+|[^\\w\\s]+``)."""
from __future__ import annotations

import json
import re
import string

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>", "<sink>"]
PRE_TOKENIZE = re.compile(r"\w+|[^\w\s]+")
CHARS = [c for c in string.printable if not c.isspace()]


class WordPiece:
    def __init__(self, words):
        vocab = list(SPECIALS)
        seen = set(vocab)
        for w in list(words) + CHARS + ["##" + c for c in CHARS]:
            if w not in seen:
                seen.add(w)
                vocab.append(w)
        self.vocab = {w: i for i, w in enumerate(vocab)}
        self.inv = vocab

    def __len__(self):
        return len(self.inv)

    def id(self, tok: str) -> int:
        return self.vocab[tok]

    def _word(self, w: str):
        if w in self.vocab:
            return [self.vocab[w]]
        out, start = [], 0
        while start < len(w):
            end, cur = len(w), None
            while start < end:
                piece = w[start:end] if start == 0 else "##" + w[start:end]
                if piece in self.vocab:
                    cur = self.vocab[piece]
                    break
                end -= 1
            if cur is None:
                return [self.vocab["<unk>"]]
            out.append(cur)
            start = end
        return out

    def encode(self, text: str):
        ids = []
        for w in PRE_TOKENIZE.findall(text):
            ids.extend(self._word(w))
        return ids

    def decode(self, ids):
        return " ".join(self.inv[i] for i in ids).replace(" ##", "")

    def to_json(self) -> dict:
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": [
                {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                 "normalized": False, "special": True}
                for i, t in enumerate(SPECIALS)
            ],
            "normalizer": None,
            "pre_tokenizer": {"type": "Whitespace"},
            "post_processor": None,
            "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": False},
            "model": {
                "type": "WordPiece",
                "unk_token": "<unk>",
                "continuing_subword_prefix": "##",
                "max_input_chars_per_word": 100,
                "vocab": self.vocab,
            },
        }

    def save(self, directory: str, model_max_length: int):
        with open(f"{directory}/tokenizer.json", "w") as f:
            json.dump(self.to_json(), f, ensure_ascii=False)
        with open(f"{directory}/tokenizer_config.json", "w") as f:
            json.dump({
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>", "pad_token": "<pad>",
                "model_max_length": model_max_length, "clean_up_tokenization_spaces": False,
            }, f, indent=2)
            f.write("\n")

    @staticmethod
    def load(directory: str) -> "WordPiece":
        with open(f"{directory}/tokenizer.json") as f:
            vocab = json.load(f)["model"]["vocab"]
        wp = WordPiece([])
        wp.vocab = dict(vocab)
        wp.inv = [None] * len(vocab)
        for w, i in vocab.items():
            wp.inv[i] = w
        return wp
