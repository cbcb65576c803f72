"""Your own proxy architecture: a Hugging Face `transformers` causal language model.

The model comes from a local directory saved with `save_pretrained` (`hf_model_path`, loaded
with `local_files_only=True`: fine-tuning starts from those weights whatever the seed) or
is built randomly initialised from a configuration (`hf_model_config`: a config.json path or
inline JSON with a `model_type`, seeded by the recipe's init seed). The tokenizer is a local
`tokenizers` file (tokenizer.json) or a local tokenizer directory. Nothing is downloaded.

Each document is tokenized once and cut into windows of `max_tokens` tokens (`example_cuts`,
token_windows.py; `example_bytes` plays no part): an example's text is the document's span
of its window, which re-tokenizes to exactly the window's tokens, and only a document's
last window is shorter. `encode` pads/truncates to `max_tokens` and marks padding with -1; the model sees id 0 there
and the loss ignores it. No attention mask is passed: padding is on the right and attention
is causal, so no real token attends to padding, and mask-building code (data-dependent in
some transformers versions) stays out of the vmapped forward. The per-example loss is the
mean next-token cross-entropy over the example's real tokens.

torch.func needs a functional, deterministic forward: the model runs in eval mode with
every dropout probability set to 0, without a KV cache, and with `attn_implementation =
"eager"` (fused SDPA kernels lack vmap batching rules on CPU). Tied input/output embeddings
are handled by `functional_call`'s weight tying.

`python -m grasp_pipeline.workloads.hf_causal_lm --make-tiny DIR` writes a tiny random GPT-2 and a
byte-level BPE tokenizer trained on the embedded corpus, for trying the workload offline.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..infra.fields import doc
from .base import IGNORE, masked_token_cross_entropy, seeded_build
from .parameter_subsets import chosen_parameters
from .token_windows import window_byte_cuts

PADDING = -1  # encode's padding marker (never a token id)
_DROPOUT_FIELDS = ("resid_pdrop", "embd_pdrop", "attn_pdrop", "summary_first_dropout", "dropout",
                   "attention_dropout", "hidden_dropout", "hidden_dropout_prob",
                   "attention_probs_dropout_prob", "activation_dropout", "classifier_dropout")


@dataclass(frozen=True)
class HFCausalLMParams:
    hf_model_path: str = doc("hf_causal_lm: local directory of a saved model (save_pretrained); never downloads.", "")
    hf_model_config: str = doc("hf_causal_lm: instead of hf_model_path, a config.json path or inline JSON "
                               "(e.g. {\"model_type\": \"gpt2\", \"n_layer\": 2}) for a randomly "
                               "initialised model.", "")
    hf_tokenizer_path: str = doc("hf_causal_lm: a tokenizer.json file or a local tokenizer directory "
                                 "(empty = hf_model_path).", "")
    max_tokens: int = doc("hf_causal_lm: tokens per example: each document is tokenized once and cut into "
                          "windows of this many tokens (its last window shorter; encode pads/truncates to it).",
                          64, minimum=1)
    hf_sketch_modules: tuple[str, ...] = doc(
        "hf_causal_lm: parameters whose per-example gradients are sketched, as shell-style (fnmatch, "
        "case-sensitive) patterns over parameter names, e.g. [\"transformer.h.5.*\", \"lm_head.*\"] (a tied "
        "weight answers to each of its names); the others are held fixed. Combined (union) with "
        "hf_sketch_last_blocks; both empty = every parameter.", ())
    hf_sketch_last_blocks: int = doc("hf_causal_lm: also sketch every parameter of the last n transformer "
                                     "blocks (the model's longest ModuleList, e.g. transformer.h); 0 = none by "
                                     "this rule.", 0, minimum=0)


SKETCH_FIELDS = ("hf_sketch_modules", "hf_sketch_last_blocks")  # choose what is sketched, not the model


class HFCausalLMWorkload:
    """A local Hugging Face causal LM and tokenizer; loss = mean next-token cross-entropy."""

    name = "hf_causal_lm"
    whole_documents = False
    default_corpus = None  # the embedded text corpus

    def __init__(self, params: HFCausalLMParams = HFCausalLMParams(), device: str = "cpu"):
        if bool(params.hf_model_path) == bool(params.hf_model_config):
            raise ValueError("hf_causal_lm needs exactly one of workload.hf_model_path (a local saved model "
                             "directory) and workload.hf_model_config (a config.json path or inline JSON)")
        if params.max_tokens < 2:
            raise ValueError(f"max_tokens must be >= 2 (one token predicts the next), got {params.max_tokens}")
        if params.hf_model_path and not Path(params.hf_model_path).is_dir():
            raise FileNotFoundError(f"hf_model_path {params.hf_model_path!r} is not a directory; save a model "
                                    "there with save_pretrained (or: python -m grasp_pipeline.workloads.hf_causal_lm "
                                    "--make-tiny DIR)")
        self.params = params
        self.device = torch.device(device)
        self.transformers_config = self._load_config()
        self._tokenize, self._spans = self._load_tokenizer()
        self._fingerprint: str | None = None
        positions = getattr(self.transformers_config, "max_position_embeddings", None)
        if positions is not None and params.max_tokens > positions:
            raise ValueError(f"max_tokens={params.max_tokens} exceeds the model's {positions} positions")

    # -- loading ---------------------------------------------------------------------------

    def _load_config(self):
        from transformers import AutoConfig

        if self.params.hf_model_path:
            config = AutoConfig.from_pretrained(self.params.hf_model_path, local_files_only=True)
        else:
            text = self.params.hf_model_config.strip()
            if not text.startswith("{"):
                text = Path(text).read_text()
            values = json.loads(text)
            if "model_type" not in values:
                raise ValueError("hf_model_config needs a 'model_type' (e.g. \"gpt2\") to pick the architecture")
            config = AutoConfig.for_model(**values)
        config.use_cache = False  # no KV cache objects inside the vmapped forward
        for name in _DROPOUT_FIELDS:  # training must be deterministic (and vmap refuses randomness)
            if isinstance(getattr(config, name, None), float):
                setattr(config, name, 0.0)
        return config

    def _tokenizer_source(self) -> Path:
        path = Path(self.params.hf_tokenizer_path or self.params.hf_model_path)
        if not str(path) or str(path) == ".":
            raise ValueError("hf_causal_lm needs workload.hf_tokenizer_path (a tokenizer.json file or a local "
                             "tokenizer directory) when the model comes from hf_model_config")
        if not path.exists():
            raise FileNotFoundError(f"hf_tokenizer_path {str(path)!r} does not exist")
        return path

    def _load_tokenizer(self):
        """Returns (texts -> lists of token ids, text -> (token ids, character spans)); no special
        tokens are added."""
        path = self._tokenizer_source()
        if path.is_file():
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(str(path))
            vocab = tokenizer.get_vocab_size()

            def tokenize(texts):
                return [e.ids for e in tokenizer.encode_batch(list(texts), add_special_tokens=False)]

            def spans(text):
                encoding = tokenizer.encode(text, add_special_tokens=False)
                return encoding.ids, encoding.offsets
        else:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            vocab = len(tokenizer)

            def tokenize(texts):
                return tokenizer(list(texts), add_special_tokens=False)["input_ids"]

            def spans(text):
                if not tokenizer.is_fast:
                    raise ValueError(f"token windows need a fast tokenizer (its offsets); {path} has a slow one — "
                                     "point workload.hf_tokenizer_path at its tokenizer.json")
                out = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
                return out["input_ids"], out["offset_mapping"]
        model_vocab = getattr(self.transformers_config, "vocab_size", None)
        if model_vocab is not None and vocab > model_vocab:
            raise ValueError(f"the tokenizer at {path} has {vocab} tokens but the model only {model_vocab}; "
                             "use the model's own tokenizer")
        return tokenize, spans

    # -- the Workload interface -----------------------------------------------------------

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Returns (n, max_tokens) int64 token ids, right-padded with -1, truncated."""
        length = self.params.max_tokens
        out = torch.full((len(texts), length), PADDING, dtype=torch.long)
        for row, ids in enumerate(self._tokenize(texts)):
            ids = ids[:length]
            if ids:
                out[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
        return out.to(self.device)

    def example_cuts(self, text: str) -> list[int]:
        """Byte offsets [start, end of window 1, …, end of the last window] of a document's token
        windows (the corpus stage cuts examples there instead of into byte pieces)."""
        return window_byte_cuts(text, self._spans, self._tokenize, self.params.max_tokens)

    @property
    def unit_vocabulary(self) -> int:
        return int(self.transformers_config.vocab_size)

    def predicted_units(self, texts: Sequence[str]) -> list[np.ndarray]:
        """The token ids the loss predicts in each example (every token after the first)."""
        return [np.asarray(ids[1:self.params.max_tokens], np.int64) for ids in self._tokenize(texts)]

    def build_model(self, seed: int) -> nn.Module:
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # models are built once per stage and per trainer
        if self.params.hf_model_path:
            model = seeded_build(seed, lambda: AutoModelForCausalLM.from_pretrained(
                self.params.hf_model_path, config=self.transformers_config, local_files_only=True,
                attn_implementation="eager", dtype=torch.float32))
        else:
            model = seeded_build(seed, lambda: AutoModelForCausalLM.from_config(
                self.transformers_config, attn_implementation="eager"))
        model.eval()  # no dropout; gradients still flow
        return model.float().to(self.device)

    def example_losses(self, model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        inputs = batch.clamp(min=0)
        logits = model(inputs).logits[:, :-1]  # positional: the pipeline may wrap the model (functional_call)
        return masked_token_cross_entropy(logits, batch[:, 1:].masked_fill(batch[:, 1:] < 0, IGNORE))

    def config(self) -> dict:
        """Hyper-parameters plus a content hash of the model and tokenizer files, so a changed
        checkpoint at the same path is a different workload (stale reference model). The
        sketch settings are left out: they change the sketches (`sketch_settings`, recorded
        in sketch_config), not the reference model or retraining."""
        if self._fingerprint is None:
            self._fingerprint = self._files_fingerprint()
        settings = {k: v for k, v in asdict(self.params).items() if k not in SKETCH_FIELDS}
        return {"workload": self.name, **settings, "files_sha1": self._fingerprint}

    def sketch_settings(self) -> dict:
        """The settings that choose which parameters are sketched (recorded in sketch_config)."""
        return {"hf_sketch_modules": list(self.params.hf_sketch_modules),
                "hf_sketch_last_blocks": self.params.hf_sketch_last_blocks}

    def sketch_parameters(self, model: nn.Module) -> list[str] | None:
        """The names of the parameters to sketch (`named_parameters()` order), or None for all."""
        return chosen_parameters(model, self.params.hf_sketch_modules, self.params.hf_sketch_last_blocks,
                                 patterns_field="workload.hf_sketch_modules",
                                 blocks_field="workload.hf_sketch_last_blocks")

    def _files_fingerprint(self) -> str:
        files = [self._tokenizer_source()]
        if self.params.hf_model_path:
            files.append(Path(self.params.hf_model_path))
        elif not self.params.hf_model_config.strip().startswith("{"):
            files.append(Path(self.params.hf_model_config))
        digest = hashlib.sha1()
        for root in files:
            for f in sorted([root] if root.is_file() else (p for p in root.iterdir() if p.is_file())):
                digest.update(f.name.encode())
                with open(f, "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(block)
        return digest.hexdigest()[:16]


# ---------------------------------------------------------------- a tiny local model

# `--make-tiny DIR --proxy`: a GPT-2-style proxy past the ~15M parameters under which mixture
# rankings transfer poorly (≈ 23M with the 8k vocabulary), with the run settings it needs on
# CPU: only the last two blocks sketched (Kronecker, small chunks: a flat per-example
# gradient of 23M floats is 92 MB) and fine-tuning learning rates instead of the byte models'.
PROXY = {"vocab_size": 8192, "n_layer": 6, "n_embd": 512, "n_head": 8, "n_positions": 64}
PROXY_SETTINGS = {"workload": {"hf_sketch_last_blocks": 2},
                  "sketch": {"projection": "kronecker", "chunk_size": 16},
                  "reference": {"lr": 1e-3, "batch_size": 16},
                  "retrain": {"lr": 1e-3, "batch_size": 8},
                  "target": {"workload": "{}"}}


def make_tiny(directory: str | Path, *, vocab_size: int = 512, n_layer: int = 2, n_embd: int = 64,
              n_head: int = 2, n_positions: int = 64, seed: int = 0, training_texts: Sequence[str] | None = None,
              settings: dict[str, dict] | None = None) -> Path:
    """Writes a randomly initialised GPT-2 (save_pretrained), a byte-level BPE tokenizer.json
    trained on `training_texts` (default: the embedded corpus) and grasp.toml (the [workload]
    settings that use them, plus the sections of `settings`) into `directory`; returns it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if training_texts is None:
        from ..corpus import load_documents

        training_texts = load_documents(None)[0]["text"].to_list()
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(training_texts, trainer)
    tokenizer.save(str(directory / "tokenizer.json"))
    end = tokenizer.token_to_id("<|endoftext|>")
    config = GPT2Config(vocab_size=tokenizer.get_vocab_size(), n_positions=n_positions, n_embd=n_embd,
                        n_layer=n_layer, n_head=n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=end, eos_token_id=end)
    model = seeded_build(seed, lambda: GPT2LMHeadModel(config))
    model.save_pretrained(directory)
    absolute = directory.resolve()
    sections = {"workload": {"name": "hf_causal_lm", "hf_model_path": str(absolute),
                             "hf_tokenizer_path": str(absolute / "tokenizer.json"), "max_tokens": n_positions}}
    for name, values in (settings or {}).items():
        sections[name] = {**sections.get(name, {}), **values}
    # the run settings that use this model: grasp run --config
    (directory / "grasp.toml").write_text("\n".join(_toml_section(n, v) for n, v in sections.items()))
    return directory


def _toml_section(name: str, values: dict) -> str:
    """A TOML table of scalar values (strings quoted JSON-style, which TOML reads alike)."""
    def value(v):
        return str(v).lower() if isinstance(v, bool) else json.dumps(v)
    return f"[{name}]\n" + "".join(f"{key} = {value(v)}\n" for key, v in values.items())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m grasp_pipeline.workloads.hf_causal_lm",
        description="Write a tiny random GPT-2 and tokenizer for the hf_causal_lm workload.")
    parser.add_argument("--make-tiny", metavar="DIR", required=True, help="output directory")
    parser.add_argument("--proxy", action="store_true",
                        help=f"a ≥ 15M-parameter GPT-2-style proxy instead ({PROXY}; the size flags are ignored) "
                             "and the run settings it needs on CPU")
    parser.add_argument("--vocab-size", type=int, default=512)
    parser.add_argument("--n-layer", type=int, default=2)
    parser.add_argument("--n-embd", type=int, default=64)
    parser.add_argument("--n-head", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=64, help="positions of the model")
    args = parser.parse_args(argv)
    sizes = dict(PROXY) if args.proxy else {"vocab_size": args.vocab_size, "n_layer": args.n_layer,
                                             "n_embd": args.n_embd, "n_head": args.n_head,
                                             "n_positions": args.max_tokens}
    directory = make_tiny(args.make_tiny, **sizes, settings=PROXY_SETTINGS if args.proxy else None).resolve()
    print(f"wrote a model, tokenizer.json and grasp.toml to {directory}\n"
          f"run the pipeline on it with: grasp run --config {directory / 'grasp.toml'} --profile smoke")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
