"""Which of a model's parameters get per-example gradients: name patterns and the last n blocks.

A large proxy need not be sketched whole: TRAK/LoGra-style attribution on LMs often keeps
only the last blocks (and the head), holding the rest fixed. `chosen_parameters` turns a
workload's two settings into the parameter names to differentiate; every other parameter
enters the forward as a constant (gradients.PerExampleGradients), so it costs no gradient
memory at all. Patterns are shell-style (`fnmatch.fnmatchcase`, case-sensitive) over the
names `named_parameters(remove_duplicate=False)` lists, so a tied weight answers to each of
its names (GPT-2's `lm_head.weight` selects the shared `transformer.wte.weight`).
"""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase

from torch import nn


def block_list(model: nn.Module) -> tuple[str, int]:
    """(name, length) of the model's transformer blocks: its longest `nn.ModuleList`
    (GPT-2 `transformer.h`, Llama `model.layers`); raises ValueError when it has none."""
    lists = [(len(m), name) for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m)]
    if not lists:
        raise ValueError(f"{type(model).__name__} has no nn.ModuleList of blocks to take the last ones of")
    length, name = max(lists, key=lambda item: (item[0], -len(item[1])))
    return name, length


def chosen_parameters(model: nn.Module, patterns: Sequence[str], last_blocks: int, *,
                      patterns_field: str, blocks_field: str) -> list[str] | None:
    """The names (in `named_parameters()` order) of the parameters to sketch, or None for all.

    The union of the parameters matching any of `patterns` and those of the last
    `last_blocks` blocks; with no pattern and `last_blocks` 0, None (every parameter).
    Raises ValueError naming `patterns_field` for a pattern that matches nothing, and
    `blocks_field` when the model has fewer blocks than asked for.
    """
    if not patterns and not last_blocks:
        return None
    canonical = {id(p): name for name, p in model.named_parameters()}
    aliases = [(name, canonical[id(p)]) for name, p in model.named_parameters(remove_duplicate=False)]
    chosen: set[str] = set()
    for pattern in patterns:
        hits = {owner for name, owner in aliases if fnmatchcase(name, pattern)}
        if not hits:
            examples = ", ".join(name for name, _ in aliases[:4])
            raise ValueError(f"{patterns_field}: pattern {pattern!r} matches no parameter of "
                             f"{type(model).__name__} (fnmatch over parameter names such as {examples}, …)")
        chosen |= hits
    if last_blocks:
        name, length = block_list(model)
        if last_blocks > length:
            raise ValueError(f"{blocks_field}={last_blocks} but {type(model).__name__} has {length} blocks ({name})")
        prefixes = tuple(f"{name}.{i}." for i in range(length - last_blocks, length))
        chosen |= {owner for alias, owner in aliases if alias.startswith(prefixes)}
    return [name for name in canonical.values() if name in chosen]
