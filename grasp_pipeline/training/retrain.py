"""Training recipe A: train the proxy model on a subset S, many subsets at once.

M subsets train in one vectorised loop: parameters are stacked along a leading model axis,
`torch.func.vmap(grad(...))` computes every model's gradient on its own batch in one call,
and a functional Adam/SGD step updates the stack. Each subset keeps its own data order, so
training M subsets together gives the same result as training them one after another
(M = 1), up to floating-point reassociation.
"""

from __future__ import annotations

import math
import pickle
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace

import numpy as np
import torch
from torch.func import functional_call, grad_and_value, vmap

from ..infra import progress
from ..infra.processes import available_cores, worker_pool
from ..workloads.base import Params, Workload

OPTIMIZERS = ("adam", "sgd")
LR_SCHEDULES = ("constant", "linear", "cosine")


def lr_factor(schedule: str, step: int, steps: int) -> float:
    """The multiplier of the base learning rate at `step` (0-based) of `steps`.

    "linear" and "cosine" decay towards 0 over the run (the last step still moves): with a
    constant rate the final model is mostly its last few batches, so which examples a data
    order happens to put last shows in the outcome as noise.
    """
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return (steps - step) / steps
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * step / steps))
    raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, not {schedule!r}")


@dataclass(frozen=True)
class Recipe:
    """A fixed, seeded training recipe; recorded with every outcome row.

    It has no defaults of its own: it is built from the settings that declare them
    (`Recipe.from_params(RetrainParams)`, or the reference stage's warm-up settings), so the
    recipe a run records is always the one its config says.
    """

    steps: int
    batch_size: int
    lr: float
    lr_schedule: str  # "constant", "linear" or "cosine" (decay to 0 over the steps)
    optimizer: str  # "adam" or "sgd"
    adam_beta1: float
    adam_beta2: float
    adam_eps: float
    init_seed: int
    data_order_seed: int

    @classmethod
    def from_params(cls, params, **changes) -> Recipe:
        """The recipe of `params` (RetrainParams, or anything with the same field names), with `changes`."""
        return cls(**{f.name: changes[f.name] if f.name in changes else getattr(params, f.name) for f in fields(cls)})

    def to_dict(self) -> dict:
        return asdict(self)


def batch_schedule(n_members: int, steps: int, batch_size: int, seed: Sequence[int]) -> np.ndarray:
    """Returns (steps, batch_size) member positions: concatenated seeded permutations (epochs)."""
    if n_members == 0:
        raise ValueError("cannot train on an empty subset")
    rng = np.random.default_rng(list(seed))
    needed = steps * batch_size
    epochs = -(-needed // n_members)
    order = np.concatenate([rng.permutation(n_members) for _ in range(epochs)])[:needed]
    return order.reshape(steps, batch_size)


class StackedTrainer:
    """Trains and evaluates a stack of M models of one workload (functional, vmapped)."""

    def __init__(self, workload: Workload, recipe: Recipe, compile: bool = False):
        """`compile`: run the stacked gradient through `torch.compile` (fused kernels; the
        first call of each batch shape compiles, which pays off over many steps on CPU)."""
        if recipe.optimizer not in OPTIMIZERS:
            raise ValueError(f"recipe.optimizer must be 'adam' or 'sgd', got {recipe.optimizer!r}")
        self.workload = workload
        self.recipe = recipe
        self.base = workload.build_model(recipe.init_seed)
        self.init_params = {n: p.detach() for n, p in self.base.named_parameters()}

        # functional_call runs base.forward; route it through the workload's loss instead.
        self._loss_module = _LossModule(self.base, workload)
        self._batch_loss = lambda params, batch: functional_call(
            self._loss_module, _prefixed(params), (batch,)
        ).mean()
        self._example_losses = lambda params, batch: functional_call(
            self._loss_module, _prefixed(params), (batch,)
        )
        # grad_and_value: the same backward as grad, plus each model's batch loss for on_step
        self._stacked_grad = vmap(grad_and_value(self._batch_loss))
        if compile:
            self._stacked_grad = _CompiledOrEager(self._stacked_grad)
        self._stacked_losses = vmap(self._example_losses, in_dims=(0, None))

    def stack(self, m: int, params: Params | None = None) -> Params:
        """Returns m copies of `params` (default: the recipe's initialisation) stacked on dim 0."""
        source = self.init_params if params is None else params
        return {n: p.detach().unsqueeze(0).repeat(m, *[1] * p.dim()).clone() for n, p in source.items()}

    def train(self, inputs: torch.Tensor, member_rows: Sequence[np.ndarray],
              order_seeds: Sequence[Sequence[int]], start: Params | None = None,
              snapshots: dict[int, Params | None] | None = None,
              on_step: Callable[[int, torch.Tensor], None] | None = None) -> Params:
        """Trains one model per entry of `member_rows` (row indices into `inputs`).

        Returns the stacked final parameters, shape (M, ...) per tensor. `snapshots` maps
        step counts (0 = the start, at most `recipe.steps`) to fill in: on return each holds
        the stacked parameters after that many steps of this run (with a constant learning rate,
        exactly what a shorter run would have ended with).
        `on_step(step, losses)` is called after every step (1-based) with the (M,) batch losses
        the step's gradients were taken at (still on the device: reading them synchronises).
        """
        recipe = self.recipe
        m = len(member_rows)
        schedule = np.stack([
            np.asarray(rows)[batch_schedule(len(rows), recipe.steps, recipe.batch_size, seed)]
            for rows, seed in zip(member_rows, order_seeds)
        ])  # (M, steps, batch)
        schedule = torch.as_tensor(schedule, device=inputs.device)
        params = self.stack(m, start)
        moments = {n: torch.zeros_like(p) for n, p in params.items()}
        second = {n: torch.zeros_like(p) for n, p in params.items()}
        beta1, beta2, eps = recipe.adam_beta1, recipe.adam_beta2, recipe.adam_eps
        snapshots = {} if snapshots is None else snapshots
        outside = sorted(s for s in snapshots if not 0 <= s <= recipe.steps)
        if outside:
            raise ValueError(f"snapshot steps {outside} are outside 0..{recipe.steps} (the recipe's steps)")
        if 0 in snapshots:
            snapshots[0] = {n: p.clone() for n, p in params.items()}
        for step in range(recipe.steps):
            lr = recipe.lr * lr_factor(recipe.lr_schedule, step, recipe.steps)
            grads, losses = self._stacked_grad(params, inputs[schedule[:, step]])
            with torch.no_grad():
                for name, g in grads.items():
                    if recipe.optimizer == "sgd":
                        params[name] = params[name] - lr * g
                        continue
                    moments[name].mul_(beta1).add_(g, alpha=1 - beta1)
                    second[name].mul_(beta2).addcmul_(g, g, value=1 - beta2)
                    m_hat = moments[name] / (1 - beta1 ** (step + 1))
                    v_hat = second[name] / (1 - beta2 ** (step + 1))
                    params[name] = params[name] - lr * m_hat / (v_hat.sqrt() + eps)
            if step + 1 in snapshots:
                snapshots[step + 1] = {n: p.clone() for n, p in params.items()}
            if on_step is not None:
                on_step(step + 1, losses)
        return params

    def example_losses(self, params: Params, inputs: torch.Tensor, examples_per_chunk: int = 2048) -> torch.Tensor:
        """Returns (M, n) per-example losses of every stacked model on `inputs`.

        Chunks hold at most `examples_per_chunk` (model, example) pairs, so memory does not
        grow with the number of stacked models.
        """
        m = next(iter(params.values())).shape[0]
        chunk = max(1, examples_per_chunk // m)
        parts = []
        with torch.no_grad(), progress.task("evaluating", total=inputs.shape[0], unit="example") as done:
            for i in range(0, inputs.shape[0], chunk):
                parts.append(self._stacked_losses(params, inputs[i:i + chunk]))
                done.advance(parts[-1].shape[1])
        return torch.cat(parts, dim=1)


class _LossModule(torch.nn.Module):
    """Wraps a model so that its forward returns the workload's per-example losses."""

    def __init__(self, model: torch.nn.Module, workload: Workload):
        super().__init__()
        self.model = model
        self.workload = workload

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.workload.example_losses(self.model, batch)


def _prefixed(params: Params) -> Params:
    return {f"model.{n}": p for n, p in params.items()}


def unstack(params: Params, index: int) -> Params:
    return {n: p[index] for n, p in params.items()}


def task_losses(example_losses: torch.Tensor, task_of_row: np.ndarray, tasks: Sequence[str]) -> np.ndarray:
    """Returns (M, T) mean loss per task from (M, n) per-example losses."""
    losses = example_losses.cpu().double().numpy()
    return np.stack([losses[:, task_of_row == t].mean(axis=1) for t in range(len(tasks))], axis=1)


@dataclass
class SubsetOutcome:
    subset_id: int
    repeat: int
    task_loss: np.ndarray  # (T,)
    seconds: float


def train_reporting(trainer: StackedTrainer, pool_inputs: torch.Tensor, member_rows: Sequence[np.ndarray],
                    orders: Sequence[tuple[int, int]]) -> Params:
    """`trainer.train` with a `<M> models` progress task that advances every step (no silent minutes)."""
    with progress.task(f"{len(member_rows)} models", total=trainer.recipe.steps, unit="step") as steps:
        return trainer.train(pool_inputs, member_rows, orders, on_step=lambda step, _: steps.advance())


@dataclass(frozen=True)
class TrainJob:
    """One retraining: pool rows, data-order seed pair, and the initialisation seed (None = the recipe's)."""

    rows: np.ndarray
    order: tuple[int, int]
    init_seed: int | None = None


def train_jobs(workload: Workload, recipe: Recipe, pool_inputs: torch.Tensor, jobs: Sequence[TrainJob],
               eval_inputs: torch.Tensor, task_of_row: np.ndarray, tasks: Sequence[str], *,
               models_per_batch: int = 4, workers: int = 1, compile: bool = False,
               label: str = "retraining", unit: str = "model") -> tuple[np.ndarray, np.ndarray]:
    """Trains every job and scores it on `eval_inputs`; returns ((J, T) task losses, (J,) seconds).

    Jobs with the same initialisation train in groups of `models_per_batch` as one stack; a
    job's `seconds` is its group's wall time over the group's size. On CPU, `workers` > 1
    processes (0 = one per core) train groups side by side, one thread each: on a few cores
    one model's step does not fill them, and threads contend where processes do not. Every
    group is trained on its own from the same inputs, so the losses do not depend on
    `workers` (nor, within float tolerance, on `models_per_batch`).
    """
    by_init: dict[int, list[int]] = {}
    for j, job in enumerate(jobs):
        by_init.setdefault(recipe.init_seed if job.init_seed is None else job.init_seed, []).append(j)
    groups = [(init, [(j, jobs[j]) for j in members[lo:lo + models_per_batch]])
              for init, members in by_init.items() for lo in range(0, len(members), models_per_batch)]
    losses, seconds = np.zeros((len(jobs), len(tasks))), np.zeros(len(jobs))
    workers = min(workers or available_cores(), len(groups))
    in_process = workers <= 1 or pool_inputs.device.type != "cpu" or not _picklable(workload)

    def keep(indices, group_losses, group_seconds) -> None:
        losses[indices], seconds[indices] = group_losses, group_seconds
        done.advance(len(indices))

    # progress: per group as it finishes (whichever process trained it); per step only in-process
    with progress.task(label, total=len(jobs), unit=unit) as done:
        if in_process:
            trainers = _Trainers(workload, recipe, compile)
            for group in groups:
                keep(*_train_group(trainers, pool_inputs, eval_inputs, task_of_row, tasks, *group))
        else:
            inputs = (workload, recipe, compile, pool_inputs, eval_inputs, task_of_row, list(tasks),
                      max(1, available_cores() // workers))
            with worker_pool(workers, _adopt, inputs, preload=__name__) as executor:
                for trained in executor.map(_train_adopted_group, groups):
                    keep(*trained)
    return losses, seconds


def retrain_subsets(workload: Workload, recipe: Recipe, pool_inputs: torch.Tensor,
                    subsets: Sequence[tuple[int, np.ndarray]], task_inputs: torch.Tensor,
                    task_of_row: np.ndarray, tasks: Sequence[str], *, repeats: int = 1,
                    models_per_batch: int = 16, workers: int = 1, compile: bool = False,
                    label: str = "retraining") -> list[SubsetOutcome]:
    """Trains the recipe on every (subset_id, pool rows) for each repeat; returns task losses.

    Repeat r uses data-order seed (recipe.data_order_seed + r, subset_id); `seconds` is the
    wall time of the group the subset trained in, divided by the group's size (`train_jobs`).
    """
    keys = [(repeat, subset_id) for repeat in range(repeats) for subset_id, _ in subsets]
    jobs = [TrainJob(rows, (recipe.data_order_seed + repeat, subset_id))
            for repeat in range(repeats) for subset_id, rows in subsets]
    losses, seconds = train_jobs(workload, recipe, pool_inputs, jobs, task_inputs, task_of_row, tasks,
                                 models_per_batch=models_per_batch, workers=workers, compile=compile,
                                 label=label, unit="subset")
    return [SubsetOutcome(subset_id, repeat, losses[j], float(seconds[j])) for j, (repeat,
                                                                                   subset_id) in enumerate(keys)]


def _picklable(workload: Workload) -> bool:
    """Whether the workload can travel to a worker process (one holding a loaded model may not)."""
    try:
        pickle.dumps(workload)
    except Exception:  # any failure means: train in this process
        return False
    return True


class _Trainers:
    """One StackedTrainer per initialisation seed, made on first use."""

    def __init__(self, workload: Workload, recipe: Recipe, compile: bool):
        self.workload, self.recipe, self.compile, self.made = workload, recipe, compile, {}

    def __getitem__(self, init_seed: int) -> StackedTrainer:
        if init_seed not in self.made:
            recipe = replace(self.recipe, init_seed=init_seed)
            self.made[init_seed] = StackedTrainer(self.workload, recipe, compile=self.compile)
        return self.made[init_seed]


def _train_group(trainers: _Trainers, pool_inputs: torch.Tensor, eval_inputs: torch.Tensor, task_of_row: np.ndarray,
                 tasks: Sequence[str], init_seed: int, group: list[tuple[int, TrainJob]]):
    """Trains one group of jobs as one stack; returns (job indices, (M, T) task losses, seconds per job)."""
    began = time.perf_counter()
    trainer = trainers[init_seed]
    params = train_reporting(trainer, pool_inputs, [job.rows for _, job in group], [job.order for _, job in group])
    losses = task_losses(trainer.example_losses(params, eval_inputs), task_of_row, tasks)
    return [j for j, _ in group], losses, (time.perf_counter() - began) / len(group)


_ADOPTED: dict = {}


def _adopt(workload, recipe, compile, pool_inputs, eval_inputs, task_of_row, tasks, threads) -> None:
    """Worker initialiser: its share of the cores as torch threads, its trainers for its life."""
    torch.set_num_threads(threads)
    _ADOPTED.update(trainers=_Trainers(workload, recipe, compile), pool_inputs=pool_inputs,
                    eval_inputs=eval_inputs, task_of_row=task_of_row, tasks=tasks)


def _train_adopted_group(group: tuple[int, list]):
    a = _ADOPTED
    return _train_group(a["trainers"], a["pool_inputs"], a["eval_inputs"], a["task_of_row"], a["tasks"], *group)


class _CompiledOrEager:
    """A function through `torch.compile`, or as it is where compiling fails (no C++ compiler,
    an unsupported op): compiling changes speed, never whether a retraining runs."""

    def __init__(self, function):
        self.eager, self.compiled = function, torch.compile(function)

    def __call__(self, *args):
        if self.compiled is not None:
            try:
                return self.compiled(*args)
            except Exception as error:  # any compile failure falls back to eager
                warnings.warn(f"torch.compile failed ({type(error).__name__}: {error}); training eagerly", stacklevel=2)
                self.compiled = None
        return self.eager(*args)
