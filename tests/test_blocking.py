"""Tests of merging, splitting into stacks and exact reassembly."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from shampoo_optax import blocking


@pytest.mark.parametrize(
    "shape, block_size, expected",
    [
        ((3, 3, 64, 128), 1024, (576, 128)),
        ((3, 3, 64, 128), 128, (9, 64, 128)),
        ((1, 6), 8, (6,)),
        ((6, 1), 8, (6,)),
        ((2, 3, 4), 100, (24,)),
        ((300, 200), 128, (300, 200)),
        ((1, 1, 1), 8, ()),
    ],
)
def test_merge_small_dims(shape, block_size, expected):
    assert blocking.merge_small_dims(shape, block_size) == expected


AWKWARD_SHAPES = [
    (20, 12),
    (16, 16),
    (17, 33),
    (3, 3, 2, 5),
    (7, 9, 4),
    (1, 6),
    (40, 3),
    (9, 1, 10),
    (5,),
    (),
    (0, 4),
    (100, 2),
]


@pytest.mark.parametrize("block_size", [1, 4, 8, 16, 64])
def test_split_and_merge_round_trip_exactly(block_size):
    rng = np.random.default_rng(block_size)
    leaves = [jnp.asarray(rng.normal(size=shape), jnp.float32) for shape in AWKWARD_SHAPES]
    layout = blocking.block_layout(tuple(AWKWARD_SHAPES), block_size, skip_dim_size_gt=50)

    packed = blocking.pack(leaves, layout)
    rebuilt = blocking.unpack(packed, leaves, layout)

    for shape, original, result in zip(AWKWARD_SHAPES, leaves, rebuilt):
        assert result.shape == shape
        np.testing.assert_array_equal(result, original)


def test_unblocked_leaves_pack_into_one_vector():
    shapes = ((5,), (), (2, 3), (1, 1))
    leaves = [jnp.arange(math.prod(shape), dtype=jnp.float32).reshape(shape) for shape in shapes]
    layout = blocking.block_layout(shapes, 8, skip_dim_size_gt=4096)
    packed = blocking.pack(leaves, layout)
    # (2, 3) is preconditioned; the rest (5 + 1 + 1 entries) share one vector.
    assert [x.shape for x in packed] == [(1, 6), (7,)]
    np.testing.assert_array_equal(packed[-1], [0, 1, 2, 3, 4, 0, 0])


def test_stacks_have_block_shapes_and_counts():
    layout = blocking.block_layout(((20, 12), (7, 9, 4)), 8, skip_dim_size_gt=4096)
    leaves = [jnp.zeros((20, 12)), jnp.zeros((7, 9, 4))]
    stacks = blocking.pack(leaves, layout)[:-1]
    # (20, 12): rows 8 + 8 + 4, columns 8 + 4. (7, 9, 4): merged to (7, 9, 4),
    # blocks (7, 8, 4) and (7, 1, 4).
    assert dict(layout.stacks) == {(8, 8): 2, (8, 4): 2, (4, 8): 1, (4, 4): 1, (7, 8, 4): 1, (7, 1, 4): 1}
    for stack, (block_shape, count) in zip(stacks, layout.stacks):
        assert stack.shape == (count,) + block_shape


def test_blocks_hold_the_right_entries():
    matrix = jnp.arange(20 * 12, dtype=jnp.float32).reshape(20, 12)
    layout = blocking.block_layout(((20, 12),), 8, skip_dim_size_gt=4096)
    stacks = dict(zip(layout.stack_keys, blocking.pack([matrix], layout)))
    # Full blocks are numbered row-major over the block grid.
    np.testing.assert_array_equal(stacks[(8, 8)][0], matrix[0:8, 0:8])
    np.testing.assert_array_equal(stacks[(8, 8)][1], matrix[8:16, 0:8])
    np.testing.assert_array_equal(stacks[(8, 4)][1], matrix[8:16, 8:12])
    np.testing.assert_array_equal(stacks[(4, 4)][0], matrix[16:20, 8:12])


def test_identical_layers_share_one_stack():
    shapes = tuple([(16, 16)] * 10)
    layout = blocking.block_layout(shapes, 16, skip_dim_size_gt=4096)
    assert layout.stacks == (((16, 16), 10),)
    statistics = blocking.statistic_layout(layout, None)
    assert statistics.groups == ((16, 4, 20),)


@pytest.mark.parametrize(
    "shape, reason",
    [((), "scalar"), ((5,), "vector"), ((0, 4), "empty"), ((5000, 3), "dimension above the skip size"), ((1, 1), "all ones")],
)
def test_unpreconditioned_leaves(shape, reason):
    layout = blocking.block_layout((shape,), 8, skip_dim_size_gt=4096)
    assert not layout.parameters[0].preconditioned, reason
    assert layout.stacks == ()


def test_statistic_groups_by_size_and_exponent():
    layout = blocking.block_layout(((8, 8), (8, 8, 8)), 8, skip_dim_size_gt=4096)
    # With block_size 8 nothing merges: (8, 8, 8) is one rank-3 block with p = 6.
    statistics = blocking.statistic_layout(layout, None)
    assert statistics.groups == ((8, 4, 2), (8, 6, 3))
    assert statistics.exponents == (4, 6)
    overridden = blocking.statistic_layout(layout, 2)
    assert overridden.groups == ((8, 2, 5),)


def test_split_traces_with_few_operations():
    # The split is a handful of reshapes per region, not one slice per block:
    # 1,000 blocks of one parameter must not produce 1,000 operations.
    layout = blocking.block_layout(((320, 400),), 10, skip_dim_size_gt=4096)
    jaxpr = jax.make_jaxpr(lambda x: blocking.pack([x], layout))(jnp.zeros((320, 400)))
    assert len(jaxpr.jaxpr.eqns) < 10
