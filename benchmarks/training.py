"""Training and timing loops, shared by both environments.

Every optimizer is built once per workload with the schedule's peak learning
rate set to 1, and the training step multiplies its updates by the swept
rate, passed as a traced scalar. All optimizers compared here end with
``-learning_rate(t) * direction``, where the direction does not depend on the
rate (Google's optimizer with its default ``decoupled_learning_rate=True``),
so this equals building each one with that rate, and one compilation serves
the whole sweep. ``tests/test_benchmarks.py`` checks this for the optimizers
of this environment.

Like ``workloads``, this module must import under JAX 0.5.3 and must not
import ``shampoo_optax``.
"""

import math
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.report import best_learning_rate
from benchmarks.workloads import Workload


def schedule(steps: int) -> optax.Schedule:
    """Return the schedule: linear warmup to 1 over the first 5% of ``steps``, then cosine decay to 0."""
    return optax.warmup_cosine_decay_schedule(0.0, 1.0, warmup_steps=max(steps // 20, 1), decay_steps=steps)


def adamw(schedule, workload: Workload) -> optax.GradientTransformation:
    """Build AdamW, the baseline, without weight decay; it is here because both environments build it."""
    return optax.adamw(schedule, weight_decay=0.0)


def make_train_step(workload: Workload, tx: optax.GradientTransformation):
    """Return a new training step: (params, state, inputs, targets, learning rate) -> (params, state, loss)."""

    def train_step(params, opt_state, inputs, targets, learning_rate):
        loss, grads = jax.value_and_grad(workload.loss)(params, inputs, targets)
        updates, opt_state = tx.update(grads, opt_state, params)
        updates = jax.tree.map(lambda update: learning_rate * update, updates)
        return optax.apply_updates(params, updates), opt_state, loss

    return train_step


def make_evaluate(workload: Workload):
    """Return a jitted function from params to (validation loss, accuracy or NaN)."""
    inputs, targets = workload.validation_set()

    def evaluate(params):
        loss = workload.loss(params, inputs, targets)
        accuracy = workload.accuracy(params, inputs, targets) if workload.has_accuracy else jnp.nan
        return loss, accuracy

    return jax.jit(evaluate)


def state_bytes(opt_state) -> int:
    """Bytes of all array leaves of an optimizer state."""
    return int(sum(leaf.nbytes for leaf in jax.tree.leaves(opt_state)))


def initial_state(workload: Workload, tx: optax.GradientTransformation, seed: int):
    params = {name: jnp.asarray(value) for name, value in workload.init_params(seed).items()}
    return params, tx.init(params)


def finite_or_none(value: float) -> float | None:
    """Round to 6 significant digits for JSON, with None for NaN and infinity, which JSON lacks."""
    value = float(value)
    return float(f"{value:.6g}") if math.isfinite(value) else None


def compile_step(workload: Workload, tx: optax.GradientTransformation):
    """Compile the training step ahead of time; return it and the seconds that took.

    ``make_train_step`` returns a new function object, so no earlier
    compilation is reused and the time is that of a fresh lowering and
    compilation.
    """
    params, opt_state = initial_state(workload, tx, seed=0)
    inputs, targets = workload.sample_batch(np.random.default_rng(0))
    start = time.perf_counter()
    compiled = (
        jax.jit(make_train_step(workload, tx)).lower(params, opt_state, inputs, targets, jnp.float32(1)).compile()
    )
    return compiled, time.perf_counter() - start


def train(
    workload: Workload, tx, compiled, evaluate, learning_rate: float, seed: int, steps: int, eval_every: int
) -> dict:
    """Train for ``steps`` steps; return the loss curve and validation metrics.

    ``compiled`` is the step from ``compile_step(workload, tx)``. A run whose
    training loss becomes NaN or infinite stops at the next evaluation and is
    marked ``diverged``; its curve ends there.
    """
    run = {"learning_rate": learning_rate, "seed": seed, "eval_steps": [], "validation_loss": []}
    run["validation_accuracy"] = [] if workload.has_accuracy else None
    params, opt_state = initial_state(workload, tx, seed)
    rng = np.random.default_rng(seed)
    learning_rate = jnp.float32(learning_rate)
    pending, losses = [], []
    diverged = False

    start = time.perf_counter()
    for step in range(1, steps + 1):
        inputs, targets = workload.sample_batch(rng)
        params, opt_state, loss = compiled(params, opt_state, inputs, targets, learning_rate)
        # Losses stay on the device until an evaluation, so the host does not
        # wait for every step.
        pending.append(loss)
        if step % eval_every != 0 and step != steps:
            continue

        chunk = np.asarray(jax.device_get(pending), dtype=np.float64)
        losses.extend(chunk.tolist())
        pending = []
        validation_loss, accuracy = jax.device_get(evaluate(params))
        run["eval_steps"].append(step)
        run["validation_loss"].append(finite_or_none(validation_loss))
        if workload.has_accuracy:
            run["validation_accuracy"].append(finite_or_none(accuracy))
        if not np.all(np.isfinite(chunk)):
            diverged = True
            break

    run["seconds"] = round(time.perf_counter() - start, 3)
    run["diverged"] = diverged
    run["train_loss"] = [finite_or_none(value) for value in losses]
    return run


def time_steps(
    workload: Workload, tx, compiled, learning_rate: float, warmup_steps: int, block_steps: int, blocks: int
) -> dict:
    """Step time and optimizer state size of one optimizer on one workload.

    After ``warmup_steps`` untimed steps (past the start of preconditioning),
    ``blocks`` blocks of ``block_steps`` consecutive steps are timed, with one
    synchronization at the end of each block, so asynchronous dispatch
    overlaps as in training. The step time is the median over blocks of the
    block's mean. A block spans at least one period of root refreshes, so the
    median counts their cost in, which a median over single steps would leave
    out. Batches are sampled before each block, outside the timed span.
    """
    params, opt_state = initial_state(workload, tx, seed=0)
    rng = np.random.default_rng(0)
    learning_rate = jnp.float32(learning_rate)

    for _ in range(warmup_steps):
        inputs, targets = workload.sample_batch(rng)
        params, opt_state, _ = compiled(params, opt_state, inputs, targets, learning_rate)
    jax.block_until_ready(params)

    block_seconds = []
    for _ in range(blocks):
        batches = [workload.sample_batch(rng) for _ in range(block_steps)]
        start = time.perf_counter()
        for inputs, targets in batches:
            params, opt_state, _ = compiled(params, opt_state, inputs, targets, learning_rate)
        jax.block_until_ready(params)
        block_seconds.append((time.perf_counter() - start) / block_steps)

    return {
        "step_seconds": statistics.median(block_seconds),
        "block_step_seconds": block_seconds,
        "block_steps": block_steps,
        "state_bytes": state_bytes(opt_state),
    }


def describe_run(workload: str, optimizer: str, run: dict) -> str:
    """Format one progress line for a finished run."""
    if run["diverged"]:
        status = "diverged"
    else:
        status = f"validation loss {run['validation_loss'][-1]:.4g}"
    setting = f"{workload:14s} {optimizer:24s} lr {run['learning_rate']:<7g} seed {run['seed']}"
    return f"{setting}: {status} ({run['seconds']:.1f} s)"


def sweep_and_time(
    workload: Workload, name: str, tx, learning_rates, seeds, steps: int, eval_every: int, timing: dict
) -> tuple[list[dict], dict]:
    """Train at every rate and seed, then time the step at the best rate.

    One compiled step serves the sweep and the timing pass; its compilation
    is timed. Returns the runs and the timing (``time_steps``'s fields plus
    ``compile_seconds`` and ``learning_rate``).
    """
    compiled, compile_seconds = compile_step(workload, tx)
    evaluate = make_evaluate(workload)
    runs = []
    for rate in learning_rates:
        for seed in seeds:
            run = train(workload, tx, compiled, evaluate, rate, seed, steps, eval_every)
            runs.append(run)
            print(describe_run(workload.name, name, run), flush=True)

    best = best_learning_rate(runs)
    result = time_steps(workload, tx, compiled, best, **timing)
    return runs, {"learning_rate": best, "compile_seconds": round(compile_seconds, 4), **result}
