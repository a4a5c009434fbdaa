"""Bad input: hyperparameters at construction and trees at update."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import shampoo_optax

PARAMS = {"layer1": {"w": jnp.zeros((20, 12)), "b": jnp.zeros((12,))}, "layer2": {"w": jnp.zeros((12, 4))}}


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(beta1=-0.1), r"beta1 must be in \[0, 1\), got -0.1; use e.g. 0.9"),
        (dict(beta2=-1), r"beta2 must be in \[0, 1\], got -1"),
        (dict(block_size=-8), "block_size must be a positive int, got -8; use e.g. 256"),
        (dict(block_size=True), "block_size must be a positive int, got True"),
        (dict(matrix_epsilon=-1e-6), "matrix_epsilon must be > 0, got -1e-06"),
        (dict(preconditioning_compute_steps=2.5), "preconditioning_compute_steps must be a positive int, got 2.5"),
        (dict(max_root_iterations=0), "max_root_iterations must be a positive int, got 0"),
        (dict(root_tolerance=0.0), "root_tolerance must be > 0, got 0.0"),
        (dict(root_error_threshold=-1.0), "root_error_threshold must be > 0, got -1.0"),
        (dict(graft_type="Adam"), "graft_type must be one of .*, got 'Adam'"),
        (dict(nesterov=True, beta1=0.0), "nesterov=True needs momentum, but beta1 is 0; use e.g. beta1=0.9"),
        (dict(root_method="eigh", pseudo_inverse_rtol=2.0), r"pseudo_inverse_rtol must be in \[0, 1\), got 2.0"),
        (dict(learning_rate=-1.0), "learning_rate must be >= 0, got -1.0"),
    ],
)
def test_invalid_arguments_raise_at_construction(arguments, message):
    arguments = {"learning_rate": 1e-3, **arguments}
    with pytest.raises(ValueError, match=message):
        shampoo_optax.shampoo(**arguments)


SHAPE_ARGUMENTS = ("block_size", "skip_preconditioning_dim_size_gt", "exponent_override")


@pytest.mark.parametrize("name", SHAPE_ARGUMENTS)
def test_shape_arguments_must_be_static(name):
    static = tuple(other for other in SHAPE_ARGUMENTS if other != name)
    injected = optax.inject_hyperparams(shampoo_optax.shampoo, static_args=static)(learning_rate=1e-3, **{name: 8})
    with pytest.raises(ValueError, match=f"list '{name}' in static_args"):
        injected.init(PARAMS)


def test_inject_hyperparams_with_static_shape_arguments():
    static = ("block_size", "skip_preconditioning_dim_size_gt")
    injected = optax.inject_hyperparams(shampoo_optax.shampoo, static_args=static)(
        learning_rate=1e-3, block_size=8, start_preconditioning_step=1, preconditioning_compute_steps=2
    )
    plain = shampoo_optax.shampoo(1e-3, block_size=8, start_preconditioning_step=1, preconditioning_compute_steps=2)
    grads = jax.tree.map(lambda p: jnp.full(p.shape, 0.5), PARAMS)
    injected_state, plain_state = injected.init(PARAMS), plain.init(PARAMS)
    for _ in range(3):
        injected_updates, injected_state = jax.jit(injected.update)(grads, injected_state, PARAMS)
        plain_updates, plain_state = jax.jit(plain.update)(grads, plain_state, PARAMS)
    for got, want in zip(jax.tree.leaves(injected_updates), jax.tree.leaves(plain_updates)):
        np.testing.assert_array_equal(got, want)


def _replace(tree, path, value):
    """Return a copy of a nested dict with ``tree[path[0]][path[1]] = value`` (None deletes)."""
    copy = {key: dict(sub) for key, sub in tree.items()}
    if value is None:
        del copy[path[0]][path[1]]
    else:
        copy[path[0]][path[1]] = value
    return copy


@pytest.mark.parametrize(
    "updates, message",
    [
        (
            _replace(PARAMS, ("layer1", "w"), jnp.zeros((20, 13))),
            r"leaf \['layer1'\]\['w'\] with shape \(20, 13\) does not fit",
        ),
        (
            _replace(PARAMS, ("layer1", "b"), jnp.zeros((13,))),
            r"leaf \['layer1'\]\['b'\] with shape \(13,\) does not fit: up to it, the leaves that are not "
            r"preconditioned have 13 entries, and the state has 12",
        ),
        (
            {**PARAMS, "layer3": {"w": jnp.zeros((12, 4))}},
            r"leaf \['layer3'\]\['w'\] with shape \(12, 4\) does not fit",
        ),
        (
            _replace(PARAMS, ("layer2", "w"), None),
            r"the state was built for leaves that the updates lack: it has 1 more blocks of shape \(8, 4\)",
        ),
    ],
)
def test_tree_mismatch_names_the_leaf(updates, message):
    transform = shampoo_optax.shampoo(1e-3, block_size=8)
    state = transform.init(PARAMS)
    with pytest.raises(ValueError, match=message):
        jax.jit(transform.update)(updates, state, updates)


def test_state_of_other_configuration_is_rejected():
    state = shampoo_optax.shampoo(1e-3, block_size=16).init(PARAMS)
    transform = shampoo_optax.shampoo(1e-3, block_size=8)
    with pytest.raises(ValueError, match="state.statistics has shapes .* use the block_size"):
        transform.update(PARAMS, state, PARAMS)
