"""The checklist that optax's own optimizers pass, applied to Shampoo."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import shampoo_optax

PARAMS = {"w": jnp.zeros((12, 8)), "embedding": jnp.zeros((30, 8)), "b": jnp.zeros((8,))}
FAST_REFRESH = dict(block_size=8, start_preconditioning_step=1, preconditioning_compute_steps=2)


def random_grads(seed, params=PARAMS):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)


def test_extra_arguments_pass_through_chain():
    transform = optax.chain(optax.clip_by_global_norm(1.0), shampoo_optax.shampoo(1e-2, **FAST_REFRESH))
    state = transform.init(PARAMS)
    updates, _ = transform.update(random_grads(0), state, PARAMS, loss=jnp.float32(1.0))
    assert jax.tree.structure(updates) == jax.tree.structure(PARAMS)


@pytest.mark.parametrize("root_method", ["newton", "eigh"])
def test_converges_on_parabola(root_method):
    target = jnp.asarray(np.random.default_rng(1).normal(size=(6, 5)), jnp.float32)
    transform = shampoo_optax.shampoo(0.1, block_size=8, start_preconditioning_step=1, root_method=root_method)

    def loss_fn(x):
        return jnp.sum(jnp.square(x - target))

    @jax.jit
    def step(x, state):
        updates, state = transform.update(jax.grad(loss_fn)(x), state, x)
        return optax.apply_updates(x, updates), state

    x, state = jnp.zeros((6, 5)), transform.init(jnp.zeros((6, 5)))
    for _ in range(300):
        x, state = step(x, state)
    assert float(loss_fn(x)) < 1e-4


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_state_dtypes_survive_cond(dtype):
    # lax.cond needs both branches to give the same dtypes: an update must
    # not change any dtype of the state.
    params = jax.tree.map(lambda p: p.astype(dtype), PARAMS)
    transform = shampoo_optax.shampoo(1e-2, **FAST_REFRESH)
    state = transform.init(params)
    grads = random_grads(2, params)

    def maybe_update(skip):
        return jax.lax.cond(skip, lambda: state, lambda: transform.update(grads, state, params)[1])

    new_state = jax.jit(maybe_update)(False)
    assert jax.tree.map(lambda x: x.dtype, new_state) == jax.tree.map(lambda x: x.dtype, state)


def test_multi_steps_updates_statistics_on_emitting_steps():
    inner = shampoo_optax.shampoo(1e-2, **FAST_REFRESH)
    transform = optax.MultiSteps(inner, every_k_schedule=3)
    state = transform.init(PARAMS)
    update = jax.jit(transform.update)
    grads = [random_grads(seed) for seed in range(6)]
    for g in grads:
        _, state = update(g, state, PARAMS)

    # Two emitting steps: the inner Shampoo saw two averaged gradients.
    reference_state = inner.init(PARAMS)
    for start in (0, 3):
        mean = jax.tree.map(lambda *xs: sum(xs) / 3, *grads[start : start + 3])
        _, reference_state = jax.jit(inner.update)(mean, reference_state, PARAMS)
    shampoo_state, reference = state.inner_opt_state[0], reference_state[0]
    assert int(shampoo_state.count) == 2
    for got, want in zip(shampoo_state.statistics, reference.statistics):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_masked_leaves_pass_through():
    mask = {"w": True, "embedding": False, "b": False}
    transform = optax.masked(shampoo_optax.scale_by_shampoo(**FAST_REFRESH), mask)
    grads = random_grads(3)
    updates, state = transform.update(grads, transform.init(PARAMS), PARAMS)
    np.testing.assert_array_equal(updates["embedding"], grads["embedding"])
    np.testing.assert_array_equal(updates["b"], grads["b"])
    assert int(shampoo_optax.root_diagnostics(state).num_roots) == 2 * 2


def test_partition_shampoo_for_matrices_adamw_for_the_rest():
    labels = {"w": "shampoo", "embedding": "adamw", "b": "adamw"}
    transform = optax.partition(
        {"shampoo": shampoo_optax.shampoo(1e-2, **FAST_REFRESH), "adamw": optax.adamw(1e-2)}, labels
    )
    grads = random_grads(4)
    updates, _ = jax.jit(transform.update)(grads, transform.init(PARAMS), PARAMS)
    adamw_updates, _ = optax.adamw(1e-2).update(grads, optax.adamw(1e-2).init(PARAMS), PARAMS)
    np.testing.assert_allclose(updates["embedding"], adamw_updates["embedding"], rtol=1e-6)
    np.testing.assert_allclose(updates["b"], adamw_updates["b"], rtol=1e-6)
    assert np.all(np.isfinite(np.asarray(updates["w"])))


def test_clip_by_global_norm_before_shampoo():
    # With SGD grafting and no momentum, the first step is the clipped gradient.
    transform = optax.chain(
        optax.clip_by_global_norm(1.0), shampoo_optax.scale_by_shampoo(block_size=8, graft_type="sgd", beta1=0.0)
    )
    grads = jax.tree.map(lambda g: 100.0 * g, random_grads(5))
    updates, _ = transform.update(grads, transform.init(PARAMS), PARAMS)
    norm = np.sqrt(sum(float(jnp.sum(jnp.square(leaf))) for leaf in jax.tree.leaves(updates)))
    assert norm == pytest.approx(1.0, rel=1e-5)
