"""Stage parameters and run profiles.

Every stage has one frozen dataclass of parameters (the single source of truth for names,
defaults and help text); the Dagster layer turns each into a launchpad `Config`. Defaults
are the `demo` profile; `smoke` shrinks every bound that drives cost. Profiles bound the
work (pool examples per domain, subsets, steps), so a run's time does not grow with the
corpus it is pointed at; `--config FILE` overrides any field.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from .mixture import MixtureParams
from .plan import PlanParams
from .select import SelectionParams
from .surrogate import SurrogateParams


def doc(text: str, default=None, **kwargs):
    """A dataclass field with help text (shown in the Dagster launchpad)."""
    if "default_factory" in kwargs:
        return field(metadata={"help": text}, **kwargs)
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class WorkloadParams:
    name: str = doc("Workload (proxy model + loss): byte_mlp, byte_transformer (~0.9M parameters), "
                    "vision (digits classifier; its own corpus when corpus_path is empty) or "
                    "hf_causal_lm (a local Hugging Face causal LM).", "byte_mlp")
    device: str = doc("Torch device for every stage: cpu, cuda, cuda:1, mps.", "cpu")
    example_bytes: int = doc("Bytes per text example (documents are cut into pieces of at most this; "
                             "byte models pad/truncate to it).", 128)
    context: int = doc("Bytes of context the byte MLP sees per prediction.", 8)
    embed_dim: int = doc("Byte embedding width.", 16)
    hidden: int = doc("Hidden units of the byte MLP and of the vision MLP.", 64)
    d_model: int = doc("Width of the byte transformer.", 128)
    n_layers: int = doc("Blocks of the byte transformer.", 4)
    n_heads: int = doc("Attention heads of the byte transformer.", 4)
    vision_model: str = doc("vision: mlp (one tanh hidden layer of `hidden` units) or cnn (two 3×3 conv "
                            "layers; slower to train: raise the retrain lr).", "mlp")
    vision_channels: int = doc("vision cnn: channels of the first convolution (the second has twice as many).", 8)
    hf_model_path: str = doc("hf_causal_lm: local directory of a saved model (save_pretrained); never downloads.", "")
    hf_model_config: str = doc("hf_causal_lm: instead of hf_model_path, a config.json path or inline JSON "
                               "(e.g. {\"model_type\": \"gpt2\", \"n_layer\": 2}) for a randomly "
                               "initialised model.", "")
    hf_tokenizer_path: str = doc("hf_causal_lm: a tokenizer.json file or a local tokenizer directory "
                                 "(empty = hf_model_path).", "")
    max_tokens: int = doc("hf_causal_lm: tokens per example (padded/truncated to this).", 64)
    torch_threads: int = doc("torch intra-op threads per step (0 = torch default).", 0)

    def model_params(self) -> dict:
        """Returns the hyper-parameters that the chosen workload takes."""
        from .workload import workload_parameter_names

        names = workload_parameter_names(self.name)
        return {k: v for k, v in asdict(self).items() if k in names}


@dataclass(frozen=True)
class CorpusParams:
    corpus_path: str = doc("Parquet/JSONL file, directory or glob with text and domain columns; "
                           "empty = the embedded default corpus.", "")
    task_examples_per_domain: int = doc("Held-out examples per domain forming its task set.", 64)
    pool_examples_per_domain: int = doc("Pool bound per domain (0 = every example).", 400)
    shard_size: int = doc("Pool examples per shard (the unit of sketching).", 256)
    seed: int = doc("Seed of the pool sample.", 0)


@dataclass(frozen=True)
class ReferenceParams:
    warmup_examples: int = doc("Pool examples the reference model θ₀ warms up on.", 1000)
    steps: int = doc("Warm-up optimisation steps.", 150)
    sketch_steps: tuple[int, ...] = doc(
        "Warm-up checkpoints (steps; 0 = the initialisation, at most `steps`) at which the gradients are "
        "sketched. Each pool and task sketch concatenates one k-dimensional block per checkpoint; every "
        "sketch-based surrogate picks its block by the LCB protocol (surrogate.sketch_blocks). Early "
        "checkpoints sit where the retraining recipe trains (it starts from the same initialisation).",
        (20, 40, 150))
    batch_size: int = doc("Warm-up batch size.", 32)
    lr: float = doc("Warm-up Adam learning rate.", 3e-3)
    seed: int = doc("Seed of initialisation, warm-up sample and data order.", 0)


@dataclass(frozen=True)
class SketchParams:
    projection: str = doc("Random projection: sjlt (sparse JL, fastest at equal error), gaussian, rademacher "
                          "or kronecker (LoGra-style, Linear layers).", "sjlt")
    k: int = doc("Sketch dimension.", 256)
    seed: int = doc("Projection seed.", 0)
    chunk_size: int = doc("Examples per vmap chunk (bounds memory).", 64)
    nonzeros: int = doc("SJLT nonzeros per gradient coordinate (also the Kronecker second stage).", 4)
    factor_dim: int = doc("Kronecker projection: width each layer's input/output factor is projected to.", 32)
    storage_dtype: str = doc("Precision the sketches are rounded to before storage: float32, float16, bfloat16.",
                             "float32")


@dataclass(frozen=True)
class RetrainParams:
    steps: int = doc("Optimisation steps per retraining (fixed-steps recipe).", 40)
    batch_size: int = doc("Batch size per step.", 16)
    lr: float = doc("Learning rate.", 3e-3)
    optimizer: str = doc("adam or sgd.", "adam")
    init_seed: int = doc("Initialisation seed shared by every retraining.", 0)
    data_order_seed: int = doc("Base data-order seed; repeat r uses seed + r.", 0)
    repeats: int = doc("Retrainings per subset with other data-order seeds (≥2 gives a noise ceiling; "
                       "doubles the retraining cost).", 1)
    models_per_batch: int = doc("Subsets trained together in one vectorised loop.", 16)


@dataclass(frozen=True)
class ValidationParams:
    models_per_batch: int = doc("Selections retrained together in one vectorised loop.", 16)
    repeats: int = doc("Retrainings per selection with other data orders (utilities are averaged).", 2)
    mixture_seed: int = doc("Seed of the sample drawn from each mixture for its validation.", 0)


@dataclass(frozen=True)
class PipelineParams:
    """All stage parameters of one run."""

    workload: WorkloadParams = field(default_factory=WorkloadParams)
    corpus: CorpusParams = field(default_factory=CorpusParams)
    reference: ReferenceParams = field(default_factory=ReferenceParams)
    sketch: SketchParams = field(default_factory=SketchParams)
    plan: PlanParams = field(default_factory=PlanParams)
    retrain: RetrainParams = field(default_factory=RetrainParams)
    surrogate: SurrogateParams = field(default_factory=SurrogateParams)
    selection: SelectionParams = field(default_factory=SelectionParams)
    mixture: MixtureParams = field(default_factory=MixtureParams)
    validation: ValidationParams = field(default_factory=ValidationParams)


PROFILES: dict[str, dict] = {
    "demo": {},
    "smoke": {
        "corpus": {"task_examples_per_domain": 32, "pool_examples_per_domain": 120, "shard_size": 64},
        "reference": {"warmup_examples": 300, "steps": 60, "sketch_steps": [10, 20, 60]},
        "sketch": {"k": 64},
        "plan": {"uniform_fit": 20, "uniform_holdout": 10, "dirichlet_fit": 20, "dirichlet_holdout": 10},
        "retrain": {"steps": 20, "repeats": 1},
        "surrogate": {"grasp_normalisations": ["none", "mean"], "datamodel_ridges": [1.0, 10.0]},
    },
}


def _apply(section, overrides: dict):
    valid = {f.name for f in fields(section)}
    unknown = set(overrides) - valid
    if unknown:
        raise ValueError(f"unknown setting(s) {sorted(unknown)} for {type(section).__name__}; "
                         f"valid: {sorted(valid)}")
    converted = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    return replace(section, **converted)


def with_overrides(params: PipelineParams, overrides: dict) -> PipelineParams:
    """Returns params with {section: {field: value}} overrides applied (validated)."""
    sections = {f.name for f in fields(PipelineParams)}
    unknown = set(overrides) - sections
    if unknown:
        raise ValueError(f"unknown config section(s) {sorted(unknown)}; valid: {sorted(sections)}")
    return replace(params, **{name: _apply(getattr(params, name), values) for name, values in overrides.items()})


def load_params(profile: str = "demo", config_file: str | Path | None = None) -> PipelineParams:
    """Returns the profile's parameters, then the overrides of a JSON or TOML file."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    params = with_overrides(PipelineParams(), PROFILES[profile])
    if config_file:
        path = Path(config_file)
        text = path.read_text()
        overrides = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        params = with_overrides(params, overrides)
    return params
