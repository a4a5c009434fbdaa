"""Inverse p-th roots of symmetric positive semi-definite matrices.

Shampoo preconditions a gradient block G with L^(-1/p) G R^(-1/p), so every
refresh needs the inverse p-th root of each statistic. Two methods are offered:

* ``"newton"``: the coupled Newton iteration of Guo and Higham, "A Schur-Newton
  method for the matrix p-th root and its inverse" (SIAM J. Matrix Anal. Appl.
  28(3), 2006). It uses matrix products only, so it suits accelerators.
* ``"eigh"``: a symmetric eigendecomposition, exact up to rounding; the reference
  for the Newton path and often cheaper on a CPU.

Both first add damping: ``epsilon * max(lambda_max, 1)``, where ``lambda_max`` is
the largest eigenvalue of the statistic. The damping is thus relative to the
statistic's scale, and never below ``epsilon``, so an all-zero statistic gets
``epsilon^(-1/p) * I``.

The functions take one matrix or a stack ``[..., d, d]``. A stack is solved as
one batched computation, and each matrix stops its iterations on its own.
"""

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp

RootMethod = Literal["newton", "eigh"]
ROOT_METHODS = ("newton", "eigh")

_HIGHEST = jax.lax.Precision.HIGHEST

# Power iterations that estimate lambda_max for the damping. The Rayleigh
# quotient converges fast in value, and the damping needs no more than a
# few percent of accuracy.
_POWER_ITERATIONS = 16

# The Newton loop stops once its error grows past this factor of the best
# error seen: rounding has then taken over from convergence.
_DIVERGENCE_FACTOR = 1.2


class RootResult(NamedTuple):
    """Inverse p-th roots with their accuracy.

    Attributes:
      root: the inverse p-th roots, shape ``[..., d, d]``.
      error: the residual ``max |X^p (A + damping I) - I|`` of each root X,
        shape ``[...]``. It is computed from the returned root itself, so a
        wrong root cannot hide behind a small iteration error.
      iterations: Newton iterations used for each matrix, shape ``[...]``
        (zero for the ``"eigh"`` method).
    """

    root: jax.Array
    error: jax.Array
    iterations: jax.Array


def _matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.matmul(a, b, precision=_HIGHEST)


def matrix_power(matrix: jax.Array, exponent: int) -> jax.Array:
    """Raise a square matrix to a positive integer power by repeated squaring."""
    result = None
    power = matrix
    while exponent > 0:
        if exponent % 2 == 1:
            result = power if result is None else _matmul(result, power)
        exponent //= 2
        if exponent > 0:
            power = _matmul(power, power)
    return result


def _largest_eigenvalue(matrix: jax.Array) -> jax.Array:
    """Estimate the largest eigenvalue of one PSD matrix by power iteration."""
    size = matrix.shape[-1]
    # A fixed vector with distinct entries: unlike the all-ones vector, it is
    # not orthogonal to the top eigenvector of common structured matrices.
    vector = 1.0 + jnp.arange(size, dtype=matrix.dtype) / size

    def step(_, v):
        v = jnp.matmul(matrix, v, precision=_HIGHEST)
        return v / jnp.maximum(jnp.linalg.norm(v), jnp.finfo(matrix.dtype).tiny)

    vector = jax.lax.fori_loop(0, _POWER_ITERATIONS, step, vector / jnp.linalg.norm(vector))
    return jnp.maximum(vector @ jnp.matmul(matrix, vector, precision=_HIGHEST), 0.0)


def _residual(root: jax.Array, damped: jax.Array, p: int) -> jax.Array:
    identity = jnp.eye(damped.shape[-1], dtype=damped.dtype)
    return jnp.max(jnp.abs(_matmul(matrix_power(root, p), damped) - identity))


def _newton_root(
    damped: jax.Array, p: int, max_iterations: int, tolerance: float
) -> tuple[jax.Array, jax.Array]:
    """Return (X, iterations) with X close to damped^(-1/p), for one matrix.

    The coupled iteration keeps M_k = X_k^p A and steps
    T = ((p + 1) I - M_k) / p, X_{k+1} = X_k T, M_{k+1} = T^p M_k. Scaling A by
    z = (p + 1) / (2 ||A||_F) puts the eigenvalues of M_0 in (0, (p + 1) / 2],
    inside the region where the iteration converges for every integer p >= 1.
    """
    dtype = damped.dtype
    identity = jnp.eye(damped.shape[-1], dtype=dtype)
    scale = (p + 1) / (2.0 * jnp.linalg.norm(damped))
    m0 = scale * damped
    x0 = jnp.power(scale, 1.0 / p) * identity
    error0 = jnp.max(jnp.abs(m0 - identity))

    def keep_going(state):
        i, _, _, error, _, best_error = state
        still_improving = error <= _DIVERGENCE_FACTOR * best_error
        return (i < max_iterations) & (best_error > tolerance) & still_improving

    def step(state):
        i, m, x, _, best_x, best_error = state
        t = ((p + 1) * identity - m) / p
        m = _matmul(matrix_power(t, p), m)
        x = _matmul(x, t)
        error = jnp.max(jnp.abs(m - identity))
        improved = error < best_error
        best_x = jnp.where(improved, x, best_x)
        best_error = jnp.where(improved, error, best_error)
        return i + 1, m, x, error, best_x, best_error

    state = (jnp.zeros((), jnp.int32), m0, x0, error0, x0, error0)
    iterations, _, _, _, best_x, _ = jax.lax.while_loop(keep_going, step, state)
    return best_x, iterations


def _eigh_root(matrix: jax.Array, p: int, epsilon: float) -> tuple[jax.Array, jax.Array]:
    """Return (root, damping) for one matrix by eigendecomposition."""
    eigenvalues, eigenvectors = jnp.linalg.eigh(matrix)
    # Rounding can leave tiny negative eigenvalues on a PSD matrix.
    eigenvalues = jnp.maximum(eigenvalues, 0.0)
    damping = epsilon * jnp.maximum(eigenvalues[-1], 1.0)
    inverse_root = jnp.power(eigenvalues + damping, -1.0 / p)
    return _matmul(eigenvectors * inverse_root, eigenvectors.T), damping


def _single_root(
    matrix: jax.Array,
    p: int,
    epsilon: float,
    method: RootMethod,
    max_iterations: int,
    tolerance: float,
) -> RootResult:
    # Rounding in G G^T can break exact symmetry, which both methods assume.
    matrix = (matrix + matrix.T) / 2
    identity = jnp.eye(matrix.shape[-1], dtype=matrix.dtype)

    if method == "eigh":
        root, damping = _eigh_root(matrix, p, epsilon)
        iterations = jnp.zeros((), jnp.int32)
    else:
        damping = epsilon * jnp.maximum(_largest_eigenvalue(matrix), 1.0)
        root, iterations = _newton_root(matrix + damping * identity, p, max_iterations, tolerance)

    error = _residual(root, matrix + damping * identity, p)
    return RootResult(root, error, iterations)


def matrix_inverse_pth_root(
    matrix: jax.Array,
    p: int,
    *,
    epsilon: float = 1e-6,
    method: RootMethod = "newton",
    max_iterations: int = 100,
    tolerance: float = 1e-6,
) -> RootResult:
    """Compute ``(A + damping I)^(-1/p)`` for a PSD matrix or a stack of them.

    Args:
      matrix: a symmetric positive semi-definite matrix ``[d, d]``, or a stack
        ``[..., d, d]`` whose roots are computed in one batched call.
      p: the root's order, an int >= 1.
      epsilon: damping relative to the largest eigenvalue, with ``epsilon`` as
        the floor: ``damping = epsilon * max(lambda_max, 1)``.
      method: ``"newton"`` (coupled Newton iterations, matmuls only) or
        ``"eigh"`` (eigendecomposition).
      max_iterations: cap on Newton iterations per matrix.
      tolerance: Newton stops once ``max |M - I|`` is at most this value.

    Returns:
      A ``RootResult`` with the roots, their residuals and the iterations used.
      The result is not checked for failure here: callers decide what residual
      they accept.
    """
    if not isinstance(p, int) or isinstance(p, bool) or p < 1:
        raise ValueError(f"p must be an int >= 1, got {p!r}; use e.g. 4 for a rank-2 Shampoo factor")
    if method not in ROOT_METHODS:
        raise ValueError(f"method must be one of {ROOT_METHODS}, got {method!r}")
    if matrix.ndim < 2 or matrix.shape[-1] != matrix.shape[-2]:
        raise ValueError(f"matrix must be square in its last two axes, got shape {matrix.shape}")

    def solve(m):
        return _single_root(m, p, epsilon, method, max_iterations, tolerance)

    batch_shape = matrix.shape[:-2]
    flat = matrix.reshape((-1,) + matrix.shape[-2:])
    result = jax.vmap(solve)(flat)
    return RootResult(
        root=result.root.reshape(matrix.shape),
        error=result.error.reshape(batch_shape),
        iterations=result.iterations.reshape(batch_shape),
    )
