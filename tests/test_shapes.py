"""Parameter shapes: edge cases, large layers checked abstractly, random shapes."""

import math

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import shampoo_optax
from shampoo_optax import blocking

# Refresh roots often, so the few steps of each test include refreshes.
FAST_REFRESH = dict(start_preconditioning_step=1, preconditioning_compute_steps=2)


def check_updates_keep_shape_and_dtype(params, block_size, steps=3):
    transform = shampoo_optax.shampoo(1e-2, block_size=block_size, **FAST_REFRESH)
    state = transform.init(params)
    update = jax.jit(transform.update)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
        updates, state = update(grads, state, params)
        assert jax.tree.structure(updates) == jax.tree.structure(params)
        for update_leaf, param in zip(jax.tree.leaves(updates), jax.tree.leaves(params)):
            assert update_leaf.shape == param.shape
            assert update_leaf.dtype == param.dtype
            assert np.all(np.isfinite(np.asarray(update_leaf, np.float32)))


@pytest.mark.parametrize(
    "shape",
    [(), (5,), (1, 7), (7, 1), (0, 5), (0,), (3, 3, 4, 8), (1, 1, 1), (2, 1, 3)],
    ids=str,
)
def test_edge_case_shapes(shape):
    check_updates_keep_shape_and_dtype({"x": jnp.zeros(shape), "w": jnp.zeros((6, 4))}, block_size=8)


@pytest.mark.parametrize("size", [7, 8, 9, 15, 16, 17])
def test_sizes_around_block_size(size):
    check_updates_keep_shape_and_dtype({"w": jnp.zeros((size, 8)), "v": jnp.zeros((3, size))}, block_size=8)


def test_none_leaves_and_empty_trees():
    check_updates_keep_shape_and_dtype({"w": jnp.zeros((6, 4)), "frozen": None}, block_size=8)
    transform = shampoo_optax.shampoo(1e-2)
    updates, _ = transform.update({}, transform.init({}), {})
    assert updates == {}


def test_only_zero_size_leaves():
    check_updates_keep_shape_and_dtype({"a": jnp.zeros((0, 3)), "b": jnp.zeros((4, 0))}, block_size=8)


def test_no_zero_size_arrays_in_state():
    # Orbax rejects zero-size arrays, so the state must have none, even when
    # every leaf is preconditioned or empty.
    for params in ({"w": jnp.zeros((6, 4))}, {"a": jnp.zeros((0, 3))}, {}):
        state = shampoo_optax.shampoo(1e-2, block_size=8).init(params)
        assert all(leaf.size > 0 for leaf in jax.tree.leaves(state))


def state_bytes_bound(shapes, block_size, skip_dim_size_gt):
    """The bound stated in the docs, for float32 parameters and Adam grafting.

    8 bytes per parameter entry (momentum and second moment), plus for each
    block of rank k: 8 k block_size^2 bytes (a statistic and a root per
    dimension) and 12 k bytes (a residual and two counters per statistic).
    """
    layout = blocking.block_layout(tuple(shapes), block_size, skip_dim_size_gt)
    total = 4 + 8 * sum(math.prod(shape) for shape in shapes)
    for block_shape, count in layout.stacks:
        rank = len(block_shape)
        total += count * (8 * rank * block_size**2 + 12 * rank)
    return total


@pytest.mark.parametrize("skip_dim_size_gt", [4096, 60000])
def test_large_layers_checked_abstractly(skip_dim_size_gt):
    # jax.eval_shape builds the state from shapes alone: nothing is allocated.
    shapes = [(16384, 256), (50257, 768), (3, 3, 256, 512), (768,)]
    params = [jax.ShapeDtypeStruct(shape, jnp.float32) for shape in shapes]
    transform = shampoo_optax.shampoo(1e-3, skip_preconditioning_dim_size_gt=skip_dim_size_gt)
    state = jax.eval_shape(transform.init, params)
    updates, _ = jax.eval_shape(transform.update, params, state, params)
    assert [u.shape for u in updates] == shapes

    (shampoo_state,) = [s for s in state if isinstance(s, shampoo_optax.ShampooState)]
    for statistic in shampoo_state.statistics + shampoo_state.preconditioners:
        assert statistic.shape[-1] <= 256
    state_bytes = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(state))
    assert state_bytes <= state_bytes_bound(shapes, 256, skip_dim_size_gt)
    if skip_dim_size_gt == 4096:
        # The two big matrices have a dimension above 4096, so they take the
        # diagonal step. The conv kernel merges to (9, 256, 512): two rank-3
        # blocks, with three statistics each.
        assert sum(s.shape[0] for s in shampoo_state.statistics) == 2 * 3


@st.composite
def random_params(draw):
    block_size = draw(st.integers(2, 12))
    shapes = draw(st.lists(st.lists(st.integers(0, 14), min_size=0, max_size=4).map(tuple), min_size=1, max_size=4))
    dtypes = draw(st.lists(st.sampled_from([jnp.float32, jnp.bfloat16]), min_size=len(shapes), max_size=len(shapes)))
    params = {f"p{i}": jnp.zeros(shape, dtype) for i, (shape, dtype) in enumerate(zip(shapes, dtypes))}
    return params, block_size


@hypothesis.settings(max_examples=15, deadline=None, derandomize=True)
@hypothesis.given(random_params())
def test_random_shapes_and_block_sizes(case):
    params, block_size = case
    check_updates_keep_shape_and_dtype(params, block_size, steps=2)
