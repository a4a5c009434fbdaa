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


@pytest.mark.parametrize("p", [1, 2, 3, 5, 7])
def test_rotated_diagonal_has_known_root(p):
    rng = np.random.default_rng(0)
    eigenvalues = np.array([16.0, 4.0, 1.0, 0.25, 0.0625] * 4)
    rotation, _ = np.linalg.qr(rng.normal(size=(20, 20)))
    for basis in (np.eye(20), rotation):
        matrix = (basis * eigenvalues) @ basis.T
        expected = (basis * eigenvalues ** (-1.0 / p)) @ basis.T
        # epsilon = 1e-9 perturbs the root by about 1e-8 relative, below float32 rounding.
        result = matrix_inverse_pth_root(jnp.asarray(matrix, jnp.float32), p, epsilon=1e-9)
        assert relative_error(result.root, expected) < 1e-5


def test_zero_matrix_gives_scaled_identity():
    for p in (1, 2, 4, 6):
        for method in ("newton", "eigh"):
            result = matrix_inverse_pth_root(jnp.zeros((6, 6)), p, epsilon=1e-4, method=method)
            np.testing.assert_allclose(result.root, (1e-4) ** (-1.0 / p) * np.eye(6), rtol=1e-5)


def test_rank_one_matrix_gives_finite_root():
    g = np.arange(1.0, 17.0, dtype=np.float32)
    result = matrix_inverse_pth_root(jnp.asarray(np.outer(g, g)), 4, epsilon=1e-6)
    assert np.all(np.isfinite(np.asarray(result.root)))
    expected = inverse_pth_root(np.outer(g, g), 4, 1e-6)
    # The damped matrix has condition number 1e6, so float32 gives about
    # three correct digits.
    assert relative_error(result.root, expected) < 1e-2


def test_batched_stack_matches_one_by_one():
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
        (dict(p=2, method="qr"), "method must be one of"),
    ],
)
def test_invalid_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        matrix_inverse_pth_root(jnp.eye(3), **kwargs)


def test_non_square_matrix_raises():
    with pytest.raises(ValueError, match=r"square in its last two axes, got shape \(3, 4\)"):
        matrix_inverse_pth_root(jnp.ones((3, 4)), 2)
