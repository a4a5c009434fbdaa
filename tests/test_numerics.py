"""Numerical faults and endurance: zero, huge, non-finite and low-precision input."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import shampoo_optax

PARAMS = {"w": jnp.zeros((12, 10)), "conv": jnp.zeros((3, 3, 2, 4)), "b": jnp.zeros((10,))}
# Roots every other step from step 2, so a few steps include refreshes.
FAST_REFRESH = dict(block_size=8, start_preconditioning_step=2, preconditioning_compute_steps=2)


def gradient_sequence(seed, steps, params=PARAMS, scale=1.0):
    rng = np.random.default_rng(seed)
    return [
        jax.tree.map(lambda p: jnp.asarray(scale * rng.normal(size=p.shape), p.dtype), params) for _ in range(steps)
    ]


def run(transform, gradients, params=PARAMS, step=None):
    """Apply ``transform`` to a gradient sequence; return the updates and the final state."""
    state = transform.init(params)
    step = step or jax.jit(transform.update)
    all_updates = []
    for grads in gradients:
        updates, state = step(grads, state, params)
        all_updates.append(updates)
    return all_updates, state


def assert_all_finite(tree):
    for leaf in jax.tree.leaves(tree):
        assert np.all(np.isfinite(np.asarray(leaf, np.float32))), leaf


@pytest.mark.parametrize("graft_type", ["adam", "rmsprop", "adagrad"])
def test_zero_gradients_without_epsilon(graft_type):
    # diagonal_epsilon = 0 makes the grafting step 0/0 for zero gradients.
    transform = shampoo_optax.scale_by_shampoo(**FAST_REFRESH, graft_type=graft_type, diagonal_epsilon=0.0)
    zeros = [jax.tree.map(jnp.zeros_like, PARAMS)] * 3
    updates, _ = run(transform, zeros + gradient_sequence(0, 4))
    for step_updates in updates[:3]:
        for leaf in jax.tree.leaves(step_updates):
            np.testing.assert_array_equal(leaf, np.zeros(leaf.shape))
    assert_all_finite(updates)


@pytest.mark.parametrize("root_method", ["newton", "eigh"])
def test_rank_deficient_statistics_give_finite_roots(root_method):
    # Gradients of a batch of one or two examples have rank one or two.
    rng = np.random.default_rng(1)
    gradients = []
    for batch in (1, 2, 1, 2, 1, 2):
        inputs, errors = rng.normal(size=(batch, 12)), rng.normal(size=(batch, 10))
        gradients.append({**jax.tree.map(jnp.zeros_like, PARAMS), "w": jnp.asarray(inputs.T @ errors, jnp.float32)})
    transform = shampoo_optax.scale_by_shampoo(**FAST_REFRESH, root_method=root_method)
    updates, state = run(transform, gradients)
    assert_all_finite(updates)
    assert_all_finite(state.preconditioners)
    assert int(shampoo_optax.root_diagnostics(state).root_failures) == 0


def test_apply_if_finite_skips_bad_step_exactly():
    transform = optax.apply_if_finite(shampoo_optax.shampoo(1e-2, **FAST_REFRESH), max_consecutive_errors=3)
    gradients = gradient_sequence(2, 6)
    bad = jax.tree.map(lambda g: g.at[(0,) * g.ndim].set(jnp.nan), gradients[2])
    step = jax.jit(transform.update)

    clean_updates, clean_state = run(transform, gradients, step=step)
    updates, state = run(transform, gradients[:3] + [bad] + gradients[3:], step=step)

    for leaf in jax.tree.leaves(updates[3]):
        np.testing.assert_array_equal(leaf, np.zeros(leaf.shape))
    for got, want in zip(updates[:3] + updates[4:], clean_updates):
        jax.tree.map(np.testing.assert_array_equal, got, want)
    jax.tree.map(np.testing.assert_array_equal, state.inner_state, clean_state.inner_state)
    assert int(state.total_notfinite) == 1


def test_huge_gradients_do_not_overflow():
    transform = shampoo_optax.scale_by_shampoo(**FAST_REFRESH)
    updates, state = run(transform, gradient_sequence(3, 5, scale=1e15))
    assert_all_finite(state.statistics)
    assert_all_finite(updates)
    summary = shampoo_optax.root_diagnostics(state)
    assert int(summary.root_failures) == 0
    assert float(summary.max_root_error) < 1e-2


def test_bfloat16_close_to_float32():
    params16 = jax.tree.map(lambda p: p.astype(jnp.bfloat16), PARAMS)
    gradients = gradient_sequence(4, 6)
    gradients16 = [jax.tree.map(lambda g: g.astype(jnp.bfloat16), grads) for grads in gradients]
    transform = shampoo_optax.scale_by_shampoo(**FAST_REFRESH)

    updates32, _ = run(transform, gradients)
    updates16, state16 = run(transform, gradients16, params=params16)

    assert all(s.dtype == jnp.float32 for s in state16.statistics + state16.preconditioners)
    for got, want in zip(jax.tree.leaves(updates16[-1]), jax.tree.leaves(updates32[-1])):
        assert got.dtype == jnp.bfloat16
        # bf16 keeps 8 significant bits: each gradient is off by up to 0.4%.
        error = np.linalg.norm(np.asarray(got, np.float32) - want) / np.linalg.norm(want)
        assert error < 0.03


def test_integer_hyperparameters_match_floats():
    gradients = gradient_sequence(5, 5)
    integers = dict(beta1=0, beta2=1, matrix_epsilon=1, diagonal_epsilon=0, weight_decay=0)
    floats = {name: float(value) for name, value in integers.items()}
    int_updates, _ = run(shampoo_optax.shampoo(1, **FAST_REFRESH, **integers), gradients)
    float_updates, _ = run(shampoo_optax.shampoo(1.0, **FAST_REFRESH, **floats), gradients)
    for got, want in zip(int_updates, float_updates):
        jax.tree.map(np.testing.assert_array_equal, got, want)


def test_jit_and_eager_agree_on_full_rank_statistics():
    # Statistics of three or more random gradients are full rank and well
    # conditioned, so float32 rounding differences between fused (jit) and
    # op-by-op (eager) execution stay near float32 precision. Rank-deficient
    # statistics, damped to condition number 1e6, amplify them to about 1e-4.
    params = {"w": jnp.zeros((6, 5)), "b": jnp.zeros((5,))}
    transform = shampoo_optax.scale_by_shampoo(block_size=8, start_preconditioning_step=4, preconditioning_compute_steps=2)
    gradients = gradient_sequence(6, 8, params=params)
    jit_updates, _ = run(transform, gradients, params=params)
    eager_updates, _ = run(transform, gradients, params=params, step=transform.update)
    for got, want in zip(jit_updates, eager_updates):
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_same_seed_same_result():
    transform = shampoo_optax.shampoo(1e-2, **FAST_REFRESH)
    first, _ = run(transform, gradient_sequence(7, 6))
    second, _ = run(transform, gradient_sequence(7, 6))
    for got, want in zip(first, second):
        jax.tree.map(np.testing.assert_array_equal, got, want)


def test_soak_run_stays_finite_with_flat_memory():
    # 3,000 steps of a small regression MLP with a warmup-cosine schedule.
    rng = np.random.default_rng(8)
    inputs = jnp.asarray(rng.normal(size=(256, 16)), jnp.float32)
    targets = jnp.asarray(np.sin(np.asarray(inputs) @ rng.normal(size=(16, 4))), jnp.float32)
    params = {
        "w1": jnp.asarray(rng.normal(size=(16, 32)) / 4, jnp.float32),
        "b1": jnp.zeros((32,)),
        "w2": jnp.asarray(rng.normal(size=(32, 4)) / 6, jnp.float32),
    }
    steps = 3000
    schedule = optax.warmup_cosine_decay_schedule(0.0, 3e-3, warmup_steps=200, decay_steps=steps)
    optimizer = shampoo_optax.shampoo(schedule, block_size=32, weight_decay=1e-4)

    def loss_fn(params, batch_inputs, batch_targets):
        hidden = jnp.tanh(batch_inputs @ params["w1"] + params["b1"])
        return jnp.mean(jnp.square(hidden @ params["w2"] - batch_targets))

    @jax.jit
    def train_step(params, opt_state, index):
        batch = jax.lax.dynamic_slice_in_dim(jnp.arange(256), (index * 32) % 224, 32)
        loss, grads = jax.value_and_grad(loss_fn)(params, inputs[batch], targets[batch])
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state = optimizer.init(params)
    live_arrays = None
    losses = []
    for index in range(steps):
        params, opt_state, loss = train_step(params, opt_state, index)
        if index == 100:
            live_arrays = len(jax.live_arrays())
        if index % 100 == 0:
            losses.append(float(loss))
    assert_all_finite(params)
    assert_all_finite(opt_state)
    assert len(jax.live_arrays()) == live_arrays
    assert losses[-1] < 0.5 * losses[0]
