"""Inverse p-th roots of symmetric positive semi-definite matrices.

Shampoo preconditions a gradient block G with L^(-1/p) G R^(-1/p), so every
refresh needs the inverse p-th root of each statistic. Two methods are offered:

* ``"newton"``: the coupled Newton iteration of Guo and Higham, "A Schur-Newton
  method for the matrix p-th root and its inverse" (SIAM J. Matrix Anal. Appl.
  28(3), 2006). It uses matrix products only, so it suits accelerators.
* ``"eigh"``: a symmetric eigendecomposition, the reference for the Newton
  path. On two CPU cores it took a fifth to two fifths of the time of a
  Newton solve at condition number 1e6, for blocks of 128 to 1024. But in
  float32 its backward error is about 6e-8 times the largest eigenvalue, so
  at condition number 1e6 its roots were off by up to 5e-2, where Newton's
  were off by up to 5e-3 (``benchmarks/roots.py``, ``docs/benchmarks.md``).
  Newton is therefore the default on every platform.

NOTE: on GPU and TPU, which run matrix products far faster than
eigensolvers, Newton should also be the faster method; no accelerator was
available to measure it.

Both first add damping: ``epsilon * max(lambda_max, 1)``, where ``lambda_max`` is
the largest eigenvalue of the statistic: exact from the decomposition, or
estimated by 16 power iterations for Newton, which can fall a few percent
short when the top eigenvalues are close. The damping is thus relative to the
statistic's scale, with ``epsilon`` as an absolute floor, so an all-zero
statistic gets ``epsilon^(-1/p) * I``.

With ``pseudo_inverse_rtol`` set, eigenvalues at most ``pseudo_inverse_rtol *
lambda_max`` count as zero and get a zero inverse root instead of
``damping^(-1/p)``: the root of a rank-deficient statistic then leaves its null
space alone rather than amplifying it. This needs the eigendecomposition.

The functions take one matrix or a stack ``[..., d, d]``. A stack is solved as
one batched computation, and each matrix stops its iterations on its own.
"""

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp

from shampoo_optax import validation

RootMethod = Literal["newton", "eigh"]
ROOT_METHODS = ("newton", "eigh")

_HIGHEST = jax.lax.Precision.HIGHEST

# Power iterations that estimate lambda_max for the damping. The Rayleigh
# quotient converges fast in value, and the damping needs no more than a
# few percent of accuracy.
_POWER_ITERATIONS = 16

# Once the Newton error ||M - I||_F is below this value, every eigenvalue of
# M lies in (0.5, 1.5), where the iteration converges quadratically. A step
# that does not improve the error then means rounding has taken over, and the
# loop stops. Before that, the error can rise for a step while the small
# eigenvalues of a wide spectrum still grow.
_CONVERGENCE_REGION = 0.5


class RootResult(NamedTuple):
    """Inverse p-th roots with their accuracy.

    Attributes:
      root: the inverse p-th roots, shape ``[..., d, d]``.
      error: the residual ``max |X^a (A + damping I) X^b - I|`` of each
        root X, with a = floor(p / 2) and b = p - a, shape ``[...]``. It is computed from the returned root itself, so a
        wrong root cannot hide behind a small iteration error. For a
        pseudo-inverse, ``I`` is replaced by the projector onto the kept
        eigenvectors.
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
    rayleigh_quotient = jnp.dot(vector, jnp.matmul(matrix, vector, precision=_HIGHEST), precision=_HIGHEST)
    return jnp.maximum(rayleigh_quotient, 0.0)


def _residual(root: jax.Array, damped: jax.Array, p: int, target: jax.Array) -> jax.Array:
    """Return max |X^a A X^b - target| with a = floor(p / 2), b = p - a.

    For a root X, which commutes with A, this equals X^p A - target. The
    balanced form is far less sensitive to rounding: for float32 roots of
    rank-deficient 256 x 256 statistics damped to condition number 1e6, good
    roots gave max |X^p A - I| of 0.25 to 0.65, close to the value of 1 that a
    wrong root such as a scaled identity gives, while the balanced form gave
    0.01 to 0.09 (with 0.96 to 1.0 for the scaled identity).
    """
    left = p // 2
    product = _matmul(damped, matrix_power(root, p - left))
    if left > 0:
        product = _matmul(matrix_power(root, left), product)
    return jnp.max(jnp.abs(product - target))


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
    error0 = jnp.linalg.norm(m0 - identity)

    def keep_going(state):
        i, _, _, _, best_error, improved = state
        stalled = (best_error < _CONVERGENCE_REGION) & ~improved
        return (i < max_iterations) & (best_error > tolerance) & ~stalled

    def step(state):
        i, m, x, best_x, best_error, _ = state
        t = ((p + 1) * identity - m) / p
        m = _matmul(matrix_power(t, p), m)
        x = _matmul(x, t)
        error = jnp.linalg.norm(m - identity)
        # The best iterate is kept, but the scaled identity X_0 never is: its
        # error can be the smallest before the small eigenvalues have grown.
        improved = (error < best_error) | (i == 0)
        best_x = jnp.where(improved, x, best_x)
        best_error = jnp.where(improved, error, best_error)
        return i + 1, m, x, best_x, best_error, improved

    # NOTE: a solve that reaches max_iterations returns its best iterate with
    # no flag. In float32 at condition number 1e8, beyond the default damping,
    # such a root was off by 44% yet had a residual of 0.49, under the default
    # threshold of 0.5.
    state = (jnp.zeros((), jnp.int32), m0, x0, x0, error0, jnp.ones((), bool))
    iterations, _, _, best_x, _, _ = jax.lax.while_loop(keep_going, step, state)
    # X_k T_k drifts from symmetry by rounding; the true root is symmetric.
    # Symmetrizing halved the residual on rank-deficient statistics.
    return (best_x + best_x.T) / 2, iterations


def _eigh_root(
    matrix: jax.Array, p: int, epsilon: float, damping_floor: jax.Array, pseudo_inverse_rtol: float | None
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Return (root, damping, target) for one matrix by eigendecomposition.

    ``target`` is what ``root^p (matrix + damping I)`` should equal: the
    identity, or for a pseudo-inverse the projector onto the kept eigenvectors.
    """
    eigenvalues, eigenvectors = jnp.linalg.eigh(matrix)
    # Rounding can leave tiny negative eigenvalues on a PSD matrix.
    eigenvalues = jnp.maximum(eigenvalues, 0.0)
    largest = eigenvalues[-1]
    damping = epsilon * jnp.maximum(largest, damping_floor)
    inverse_root = jnp.power(eigenvalues + damping, -1.0 / p)
    if pseudo_inverse_rtol is None:
        target = jnp.eye(matrix.shape[-1], dtype=matrix.dtype)
    else:
        significant = eigenvalues > pseudo_inverse_rtol * largest
        inverse_root = jnp.where(significant, inverse_root, 0.0)
        target = _matmul(eigenvectors * significant.astype(matrix.dtype), eigenvectors.T)
    return _matmul(eigenvectors * inverse_root, eigenvectors.T), damping, target


def _single_root(
    matrix: jax.Array,
    p: int,
    epsilon: float,
    method: RootMethod,
    max_iterations: int,
    tolerance: float,
    pseudo_inverse_rtol: float | None,
) -> RootResult:
    # Rounding in G G^T can break exact symmetry, which both methods assume.
    matrix = (matrix + matrix.T) / 2
    identity = jnp.eye(matrix.shape[-1], dtype=matrix.dtype)

    # Gradients near 1e15 give statistics near 1e32, whose squares (in the
    # Frobenius norm and the Newton products) overflow float32. The methods
    # therefore work on matrix / scale, with scale the power of two at or
    # below the largest entry, so the division is exact and the scale itself
    # cannot overflow. The damping floor is scaled with it, and
    # (A / scale)^(-1/p) * scale^(-1/p) is the root of A.
    _, exponent = jnp.frexp(jnp.max(jnp.abs(matrix)))
    scale = jnp.ldexp(jnp.ones((), matrix.dtype), exponent - 1)
    matrix = matrix / scale
    damping_floor = 1.0 / scale

    if method == "eigh":
        root, damping, target = _eigh_root(matrix, p, epsilon, damping_floor, pseudo_inverse_rtol)
        iterations = jnp.zeros((), jnp.int32)
    else:
        damping = epsilon * jnp.maximum(_largest_eigenvalue(matrix), damping_floor)
        root, iterations = _newton_root(matrix + damping * identity, p, max_iterations, tolerance)
        target = identity

    # The residual is scale-free: (c X)^a (A / c^p) (c X)^b = X^a A X^b.
    error = _residual(root, matrix + damping * identity, p, target)
    return RootResult(root * jnp.power(scale, -1.0 / p), error, iterations)


def check_options(method_name: str, method: RootMethod, pseudo_inverse_rtol: float | None) -> None:
    """Raise ``ValueError`` for an unknown method or options it cannot serve."""
    validation.check_choice(method_name, method, ROOT_METHODS)
    if pseudo_inverse_rtol is None:
        return
    validation.check_unit_interval("pseudo_inverse_rtol", pseudo_inverse_rtol, 1e-6, include_one=False)
    if method == "newton":
        raise ValueError(
            f"pseudo_inverse_rtol={pseudo_inverse_rtol!r} needs eigenvalues, which the 'newton' root method "
            f"does not compute; use {method_name}='eigh', or pseudo_inverse_rtol=None"
        )


def matrix_inverse_pth_root(
    matrix: jax.Array,
    p: int,
    *,
    epsilon: float = 1e-6,
    method: RootMethod = "newton",
    max_iterations: int = 100,
    tolerance: float = 1e-6,
    pseudo_inverse_rtol: float | None = None,
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
      tolerance: Newton stops once ``||M - I||_F`` is at most this value,
        where M = X^p (A + damping I) is tracked by the iteration.
      pseudo_inverse_rtol: if set, eigenvalues at most this fraction of the
        largest one count as zero and get a zero inverse root. Needs
        ``method="eigh"``.

    Returns:
      A ``RootResult`` with the roots, their residuals and the iterations used.
      The result is not checked for failure here: callers decide what residual
      they accept.
    """
    if not isinstance(p, int) or isinstance(p, bool) or p < 1:
        raise ValueError(f"p must be an int >= 1, got {p!r}; use e.g. 4 for a rank-2 Shampoo factor")
    check_options("method", method, pseudo_inverse_rtol)
    if matrix.ndim < 2 or matrix.shape[-1] != matrix.shape[-2]:
        raise ValueError(f"matrix must be square in its last two axes, got shape {matrix.shape}")

    def solve(m):
        return _single_root(m, p, epsilon, method, max_iterations, tolerance, pseudo_inverse_rtol)

    batch_shape = matrix.shape[:-2]
    flat = matrix.reshape((-1,) + matrix.shape[-2:])
    result = jax.vmap(solve)(flat)
    return RootResult(
        root=result.root.reshape(matrix.shape),
        error=result.error.reshape(batch_shape),
        iterations=result.iterations.reshape(batch_shape),
    )
