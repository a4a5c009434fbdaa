"""Tests of matrix_inverse_pth_root against float64 eigendecompositions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from numpy_reference import inverse_pth_root
from shampoo_optax import matrix_inverse_pth_root
from shampoo_optax.matrix_roots import matrix_power


def random_spd(rng, size, condition_number):
    rotation, _ = np.linalg.qr(rng.normal(size=(size, size)))
    eigenvalues = np.logspace(0, -np.log10(condition_number), size)
    return (rotation * eigenvalues) @ rotation.T


def relative_error(got, want):
    return np.linalg.norm(np.asarray(got, np.float64) - want) / np.linalg.norm(want)


@pytest.mark.parametrize("method", ["newton", "eigh"])
@pytest.mark.parametrize("p", range(1, 9))
def test_every_p_matches_eigendecomposition(p, method):
    rng = np.random.default_rng(p)
    matrix = np.asarray(random_spd(rng, 32, 1e3), np.float32)
    result = matrix_inverse_pth_root(jnp.asarray(matrix), p, epsilon=1e-6, method=method)
    error = relative_error(result.root, inverse_pth_root(matrix, p, 1e-6))
    assert error < 1e-4, f"p={p}: relative error {error:.2e}"
    assert float(result.error) < 1e-3


# An eigendecomposition in float32 is accurate to about condition number x
# 6e-8 (here 256 x 6e-8); Newton does better.
@pytest.mark.parametrize("method, tolerance", [("newton", 1e-5), ("eigh", 5e-5)])
@pytest.mark.parametrize("p", range(1, 9))
def test_rotated_diagonal_has_known_root(p, method, tolerance):
    rng = np.random.default_rng(0)
    eigenvalues = np.array([16.0, 4.0, 1.0, 0.25, 0.0625] * 4)
    rotation, _ = np.linalg.qr(rng.normal(size=(20, 20)))
    for basis in (np.eye(20), rotation):
        matrix = (basis * eigenvalues) @ basis.T
        expected = (basis * eigenvalues ** (-1.0 / p)) @ basis.T
        # epsilon = 1e-9 perturbs the root by about 1e-8 relative, below float32 rounding.
        result = matrix_inverse_pth_root(jnp.asarray(matrix, jnp.float32), p, epsilon=1e-9, method=method)
        assert relative_error(result.root, expected) < tolerance


@pytest.mark.parametrize("method", ["newton", "eigh"])
def test_zero_matrix_gives_scaled_identity(method):
    for p in (1, 2, 4, 6):
        result = matrix_inverse_pth_root(jnp.zeros((6, 6)), p, epsilon=1e-4, method=method)
        np.testing.assert_allclose(result.root, (1e-4) ** (-1.0 / p) * np.eye(6), rtol=1e-6, atol=1e-6)


def test_pseudo_inverse_leaves_null_space_out():
    rng = np.random.default_rng(4)
    g = rng.normal(size=(12, 2))
    matrix = g @ g.T  # rank 2
    result = matrix_inverse_pth_root(
        jnp.asarray(matrix, jnp.float32), 4, epsilon=1e-9, method="eigh", pseudo_inverse_rtol=1e-6
    )
    eigenvalues, eigenvectors = np.linalg.eigh(matrix)
    top = eigenvectors[:, -2:]
    expected = (top * eigenvalues[-2:] ** -0.25) @ top.T
    assert relative_error(result.root, expected) < 1e-5
    null_direction = eigenvectors[:, 0]
    assert np.abs(np.asarray(result.root, np.float64) @ null_direction).max() < 1e-5
    # The residual is measured against the projector onto the kept directions.
    assert float(result.error) < 1e-4


def test_pseudo_inverse_of_zero_matrix_is_zero():
    result = matrix_inverse_pth_root(jnp.zeros((4, 4)), 2, method="eigh", pseudo_inverse_rtol=1e-6)
    np.testing.assert_array_equal(result.root, np.zeros((4, 4)))
    assert float(result.error) == 0.0


# The damped matrix has condition number 1e6: Newton keeps about three
# correct digits in float32, an eigendecomposition about two.
@pytest.mark.parametrize("method, tolerance", [("newton", 1e-2), ("eigh", 5e-2)])
def test_rank_one_matrix_gives_finite_root(method, tolerance):
    g = np.arange(1.0, 17.0, dtype=np.float32)
    result = matrix_inverse_pth_root(jnp.asarray(np.outer(g, g)), 4, epsilon=1e-6, method=method)
    assert np.all(np.isfinite(np.asarray(result.root)))
    expected = inverse_pth_root(np.outer(g, g), 4, 1e-6)
    assert relative_error(result.root, expected) < tolerance


def test_batched_stack_matches_one_by_one():
    # Under vmap the while loop runs until every matrix is done. A matrix that
    # is done early must stop changing, so its root matches a lone solve.
    rng = np.random.default_rng(3)
    # Different condition numbers need different iteration counts.
    stack = np.stack([random_spd(rng, 16, c) for c in (1e1, 1e3, 1e5)]).astype(np.float32)
    batched = matrix_inverse_pth_root(jnp.asarray(stack), 4)
    iterations = np.asarray(batched.iterations)
    assert len(set(iterations.tolist())) > 1, "each matrix should stop on its own"
    for i, matrix in enumerate(stack):
        single = matrix_inverse_pth_root(jnp.asarray(matrix), 4)
        np.testing.assert_allclose(batched.root[i], single.root, rtol=1e-5, atol=1e-6)
        assert int(single.iterations) == iterations[i]


def test_leading_batch_axes_are_kept():
    stack = jnp.broadcast_to(jnp.eye(5) * 4.0, (2, 3, 5, 5))
    result = matrix_inverse_pth_root(stack, 2, epsilon=1e-9)
    assert result.root.shape == (2, 3, 5, 5)
    assert result.error.shape == (2, 3)
    np.testing.assert_allclose(result.root, np.broadcast_to(np.eye(5) * 0.5, (2, 3, 5, 5)), rtol=1e-5)


def test_works_under_jit():
    matrix = jnp.asarray(random_spd(np.random.default_rng(1), 8, 10.0), jnp.float32)
    eager = matrix_inverse_pth_root(matrix, 3)
    jitted = jax.jit(lambda m: matrix_inverse_pth_root(m, 3))(matrix)
    np.testing.assert_allclose(eager.root, jitted.root, rtol=1e-5)


def test_matrix_power_by_squaring():
    matrix = jnp.asarray(np.random.default_rng(2).normal(size=(4, 4)) / 2, jnp.float32)
    for exponent in range(1, 10):
        expected = np.linalg.matrix_power(np.asarray(matrix, np.float64), exponent)
        np.testing.assert_allclose(matrix_power(matrix, exponent), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(p=0), "p must be an int >= 1, got 0"),
        (dict(p=2.5), "p must be an int >= 1, got 2.5"),
        (dict(p=2, method="qr"), "method must be one of 'newton', 'eigh', got 'qr'"),
        (dict(p=2, pseudo_inverse_rtol=1e-6), "needs eigenvalues, .* use method='eigh'"),
        (dict(p=2, method="eigh", pseudo_inverse_rtol=1.5), r"pseudo_inverse_rtol must be in \[0, 1\), got 1.5"),
    ],
)
def test_invalid_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        matrix_inverse_pth_root(jnp.eye(3), **kwargs)


def test_non_square_matrix_raises():
    with pytest.raises(ValueError, match=r"square in its last two axes, got shape \(3, 4\)"):
        matrix_inverse_pth_root(jnp.ones((3, 4)), 2)
