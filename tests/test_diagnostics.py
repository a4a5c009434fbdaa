"""Tests of root_diagnostics on plain, chained and wrapped optimizer states."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import shampoo_optax

PARAMS = {"w": jnp.zeros((12, 8)), "conv": jnp.zeros((3, 3, 4, 8)), "b": jnp.zeros((8,))}


# TODO: inject_hyperparams turns numbers into arrays, and these arguments
# accept Python ints only, so they must be static.
INTEGER_ARGUMENTS = (
    "block_size",
    "start_preconditioning_step",
    "preconditioning_compute_steps",
    "statistics_compute_steps",
    "skip_preconditioning_dim_size_gt",
    "max_root_iterations",
)


def _run(transform, steps):
    state = transform.init(PARAMS)
    update = jax.jit(transform.update)
    for step in range(steps):
        grads = jax.tree.map(lambda p: jax.random.normal(jax.random.key(step), p.shape), PARAMS)
        _, state = update(grads, state, PARAMS)
    return state


@pytest.mark.parametrize("root_method", ["newton", "eigh"])
def test_reports_the_last_refresh(root_method):
    transform = shampoo_optax.shampoo(
        1e-3, block_size=8, start_preconditioning_step=2, preconditioning_compute_steps=2, root_method=root_method
    )
    before = shampoo_optax.root_diagnostics(_run(transform, 1))
    assert float(before.max_root_error) == 0.0
    assert int(before.max_root_iterations) == 0

    state = _run(transform, 3)
    summary = jax.jit(shampoo_optax.root_diagnostics)(state)
    (shampoo_state,) = [s for s in state if isinstance(s, shampoo_optax.ShampooState)]
    assert int(summary.num_roots) == sum(e.shape[0] for e in shampoo_state.root_errors)
    assert 0.0 < float(summary.max_root_error) < 1e-2
    assert int(summary.root_failures) == 0
    if root_method == "newton":
        assert 0 < int(summary.max_root_iterations) <= 100
    else:
        assert int(summary.max_root_iterations) == 0


def test_counts_rejected_roots():
    # A threshold no root can meet: every block keeps the identity.
    transform = shampoo_optax.scale_by_shampoo(
        block_size=8, start_preconditioning_step=1, preconditioning_compute_steps=1, root_error_threshold=1e-30
    )
    state = _run(transform, 2)
    summary = shampoo_optax.root_diagnostics(state)
    assert int(summary.root_failures) == 2 * int(summary.num_roots)
    for roots in state.preconditioners:
        np.testing.assert_array_equal(roots, np.broadcast_to(np.eye(roots.shape[-1]), roots.shape))


def test_finds_state_inside_wrappers():
    transform = optax.MultiSteps(
        optax.inject_hyperparams(shampoo_optax.shampoo, static_args=INTEGER_ARGUMENTS)(learning_rate=1e-3, block_size=8),
        every_k_schedule=1,
    )
    summary = shampoo_optax.root_diagnostics(_run(transform, 1))
    assert int(summary.num_roots) > 0


def test_without_shampoo_state_raises():
    with pytest.raises(ValueError, match="found no ShampooState in an optimizer state of type tuple"):
        shampoo_optax.root_diagnostics(optax.adam(1e-3).init(PARAMS))


def test_without_preconditioned_leaves_reports_zero():
    transform = shampoo_optax.scale_by_shampoo(block_size=8)
    summary = shampoo_optax.root_diagnostics(transform.init({"b": jnp.zeros(())}))
    assert int(summary.num_roots) == 0
