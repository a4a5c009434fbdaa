"""Shampoo in Flax training loops: nnx.Optimizer and linen's TrainState."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen, nnx
from flax.training import train_state

import shampoo_optax

FAST_REFRESH = dict(block_size=16, start_preconditioning_step=2, preconditioning_compute_steps=2)


def regression_batch(seed, batch=32):
    rng = np.random.default_rng(seed)
    inputs = rng.normal(size=(batch, 12)).astype(np.float32)
    targets = np.tanh(inputs @ np.linspace(-1, 1, 12 * 3).reshape(12, 3)).astype(np.float32)
    return jnp.asarray(inputs), jnp.asarray(targets)


class NnxModel(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(12, 20, rngs=rngs)
        self.norm = nnx.LayerNorm(20, rngs=rngs)
        self.out = nnx.Linear(20, 3, rngs=rngs)

    def __call__(self, x):
        return self.out(nnx.relu(self.norm(self.hidden(x))))


def test_nnx_optimizer_under_nnx_jit():
    model = NnxModel(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, shampoo_optax.shampoo(3e-3, **FAST_REFRESH), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, inputs, targets):
        def loss_fn(model):
            return jnp.mean(jnp.square(model(inputs) - targets))

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    # More than three steps, so updates run on the state that the first
    # update returned, and roots are refreshed twice.
    losses = [float(train_step(model, optimizer, *regression_batch(step))) for step in range(6)]
    assert all(np.isfinite(losses))
    assert losses[-1] < losses[0]
    summary = shampoo_optax.root_diagnostics(optimizer.opt_state)
    assert int(summary.num_roots) > 0
    assert int(summary.root_failures) == 0
    assert 0.0 < float(summary.max_root_error) < 0.5


class LinenModel(linen.Module):
    @linen.compact
    def __call__(self, x):
        return linen.Dense(3)(linen.relu(linen.Dense(20)(x)))


def test_linen_train_state():
    model = LinenModel()
    inputs, _ = regression_batch(0)
    state = train_state.TrainState.create(
        apply_fn=model.apply,
        params=model.init(jax.random.key(0), inputs)["params"],
        tx=shampoo_optax.shampoo(3e-3, **FAST_REFRESH),
    )

    @jax.jit
    def train_step(state, inputs, targets):
        def loss_fn(params):
            return jnp.mean(jnp.square(state.apply_fn({"params": params}, inputs) - targets))

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        return state.apply_gradients(grads=grads), loss

    losses = []
    for step in range(6):
        state, loss = train_step(state, *regression_batch(step))
        losses.append(float(loss))
    assert all(np.isfinite(losses))
    assert losses[-1] < losses[0]
    assert int(state.step) == 6
    assert int(shampoo_optax.root_diagnostics(state.opt_state).root_failures) == 0


def test_nnx_optimizer_with_partition():
    # Shampoo for kernels, AdamW for biases and norm scales, as users split it.
    model = NnxModel(nnx.Rngs(1))
    def labels(params):
        return jax.tree.map(lambda p: "shampoo" if p.ndim == 2 else "adamw", params)

    transform = optax.partition(
        {"shampoo": shampoo_optax.shampoo(3e-3, **FAST_REFRESH), "adamw": optax.adamw(3e-3)}, labels
    )
    optimizer = nnx.Optimizer(model, transform, wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, inputs, targets):
        grads = nnx.grad(lambda m: jnp.mean(jnp.square(m(inputs) - targets)))(model)
        optimizer.update(model, grads)

    for step in range(4):
        train_step(model, optimizer, *regression_batch(step))
    for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)):
        assert np.all(np.isfinite(np.asarray(leaf)))
