"""Saving and restoring the optimizer state with Orbax."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import shampoo_optax

PARAMS = {"w1": jnp.zeros((16, 12)), "b1": jnp.zeros((12,)), "w2": jnp.zeros((12, 4))}
OPTIONS = dict(block_size=8, start_preconditioning_step=2, preconditioning_compute_steps=2)


def gradients(step):
    rng = np.random.default_rng(step)
    return jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), PARAMS)


def train(optimizer, params, opt_state, steps):
    @jax.jit
    def step(params, opt_state, grads):
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    for index in steps:
        params, opt_state = step(params, opt_state, gradients(index))
    return params, opt_state


def save(path, tree):
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(path, tree)


def restore(path, target):
    with ocp.StandardCheckpointer() as checkpointer:
        return checkpointer.restore(path, target)


def test_resumed_run_is_bit_identical(tmp_path):
    optimizer = shampoo_optax.shampoo(1e-2, **OPTIONS)
    params, opt_state = train(optimizer, PARAMS, optimizer.init(PARAMS), range(5))
    save(tmp_path / "step5", {"params": params, "opt_state": opt_state})
    uninterrupted = train(optimizer, params, opt_state, range(5, 10))

    target = {"params": jax.eval_shape(lambda: PARAMS), "opt_state": jax.eval_shape(optimizer.init, PARAMS)}
    restored = restore(tmp_path / "step5", target)
    assert isinstance(restored["opt_state"][0], shampoo_optax.ShampooState)
    resumed = train(optimizer, restored["params"], restored["opt_state"], range(5, 10))

    jax.tree.map(np.testing.assert_array_equal, resumed, uninterrupted)


def test_sharded_state_restores_onto_another_mesh(tmp_path):
    assert len(jax.devices()) >= 8, "tests/conftest.py asks XLA for 8 CPU devices"
    optimizer = shampoo_optax.shampoo(1e-2, **OPTIONS)
    _, opt_state = train(optimizer, PARAMS, optimizer.init(PARAMS), range(3))

    def shard_leading_axis(tree, mesh):
        # Stacks of blocks shard along their leading axis where it divides.
        def sharding(leaf):
            if leaf.ndim >= 1 and leaf.shape[0] % mesh.size == 0:
                return NamedSharding(mesh, PartitionSpec("blocks"))
            return NamedSharding(mesh, PartitionSpec())

        return jax.tree.map(sharding, tree)

    mesh4 = Mesh(np.array(jax.devices()[:4]), ("blocks",))
    sharded = jax.device_put(opt_state, shard_leading_axis(opt_state, mesh4))
    assert any(len(leaf.sharding.device_set) == 4 for leaf in jax.tree.leaves(sharded))
    save(tmp_path / "state", sharded)

    mesh2 = Mesh(np.array(jax.devices()[4:6]), ("blocks",))
    abstract = jax.eval_shape(optimizer.init, PARAMS)
    shardings = shard_leading_axis(abstract, mesh2)
    target = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), abstract, shardings)
    restored = restore(tmp_path / "state", target)

    for got, want, sharding in zip(jax.tree.leaves(restored), jax.tree.leaves(opt_state), jax.tree.leaves(shardings)):
        assert got.sharding == sharding
        np.testing.assert_array_equal(got, want)


def test_restoring_other_configuration_names_the_mismatch(tmp_path):
    params = {"w": jnp.zeros((16, 16))}
    save(tmp_path / "state", shampoo_optax.shampoo(1e-2, block_size=8).init(params))
    other = shampoo_optax.shampoo(1e-2, block_size=16)
    with pytest.raises(ValueError, match=r"Requested shape: .* is not compatible with the stored shape"):
        restore(tmp_path / "state", jax.eval_shape(other.init, params))


def test_untargeted_restore_fails_at_update(tmp_path):
    # Restored without a target, Orbax returns lists and dicts. A user who
    # rebuilds them into the state of another configuration gets an error at
    # the first update that names the configuration, not a shape error.
    params = {"w": jnp.zeros((16, 16))}
    save(tmp_path / "state", shampoo_optax.shampoo(1e-2, block_size=8).init(params))
    raw_shampoo_state = restore(tmp_path / "state", None)[0]
    fields = {name: tuple(value) if isinstance(value, list) else value for name, value in raw_shampoo_state.items()}
    other = shampoo_optax.shampoo(1e-2, block_size=16)
    state = (shampoo_optax.ShampooState(**fields),) + other.init(params)[1:]
    with pytest.raises(ValueError, match="state.statistics has shapes .* use the block_size"):
        other.update(params, state, params)
