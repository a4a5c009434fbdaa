"""Grafting: borrow the step size of a first-order method.

Shampoo's preconditioned direction has a scale that depends on the damping and
the root's order, and which changes from block to block. Grafting (Agarwal et
al., "Disentangling Adaptive Gradient Methods from Learning Rates", 2020)
keeps Shampoo's direction but takes each block's norm from a simple diagonal
method, so learning rates carry over from that method. The diagonal step is
also the whole update for parameters that Shampoo does not precondition, and
for every parameter before preconditioning starts.

Graft types, with g the gradient and nu the diagonal second moment:

* ``"none"``: no rescaling; parameters that are not preconditioned take g.
* ``"sgd"``: the step is g.
* ``"adagrad"``: nu <- nu + g^2; the step is g / (sqrt(nu) + eps).
* ``"rmsprop"``: nu <- beta2 nu + (1 - beta2) g^2; the step is
  g / (sqrt(nu) + eps).
* ``"adam"``: as ``"rmsprop"`` with nu bias-corrected by 1 - beta2^t. This is
  Adam without its first moment: momentum is applied once, to the grafted
  update, so learning rates tuned for AdamW carry over.

With ``beta2 = 1`` the moving averages become sums, as in AdaGrad.
"""

import numbers
from collections.abc import Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

GraftType = Literal["none", "sgd", "adagrad", "rmsprop", "adam"]
GRAFT_TYPES = ("none", "sgd", "adagrad", "rmsprop", "adam")

_WITH_SECOND_MOMENT = ("adagrad", "rmsprop", "adam")


def average_coefficients(beta: jax.typing.ArrayLike) -> tuple[Any, Any]:
    """Return (decay, weight) of a moving average; ``beta = 1`` gives a sum.

    A Python float is resolved here, so no operation is traced per leaf. A
    traced ``beta`` (from ``optax.inject_hyperparams``) is resolved in the graph.
    Both compute 1 - beta in float32, the dtype that ``inject_hyperparams``
    gives beta, so the two paths give the same bits: 1 - 0.999 in float64
    differs from its float32 counterpart by about 1e-5 relative.
    """
    if isinstance(beta, numbers.Real):
        beta32 = np.float32(beta)
        return (1.0, 1.0) if beta == 1 else (beta32, np.float32(1) - beta32)
    return jnp.where(beta == 1, 1.0, beta), jnp.where(beta == 1, 1.0, 1.0 - beta)


def moving_average(average: jax.Array, term: jax.Array, coefficients: tuple[Any, Any]) -> jax.Array:
    """Return ``decay * average + weight * term`` in the dtype of ``average``."""
    decay, weight = coefficients
    return (decay * average + weight * term).astype(average.dtype)


def bias_correction(beta: jax.typing.ArrayLike, count: jax.Array) -> jax.Array:
    """Return 1 - beta^count, or 1 for ``beta = 1``, where averages are sums.

    It is computed as -expm1(count * log(beta)): for beta near 1 and small
    counts, 1 - beta^count cancels most digits (to about 1e-4 relative for
    beta = 0.999 in float32), and jit and eager runs then disagree there.
    """
    if isinstance(beta, numbers.Real) and beta == 1:
        return jnp.ones((), jnp.float32)
    # log(0) = -inf gives -expm1(-inf) = 1, the correction for beta = 0.
    correction = -jnp.expm1(count * jnp.log(jnp.asarray(beta, jnp.float32)))
    return jnp.where(beta == 1, 1.0, correction)


def init_second_moments(graft_type: GraftType, leaves: Sequence[jax.Array]) -> tuple[jax.Array, ...]:
    """Zero diagonal second moments in float32 or wider; empty if unused."""
    if graft_type not in _WITH_SECOND_MOMENT:
        return ()
    return tuple(jnp.zeros(leaf.shape, jnp.promote_types(leaf.dtype, jnp.float32)) for leaf in leaves)


def grafting_step(
    graft_type: GraftType,
    gradients: Sequence[jax.Array],
    second_moments: tuple[jax.Array, ...],
    count: jax.Array,
    beta2: jax.typing.ArrayLike,
    epsilon: jax.typing.ArrayLike,
) -> tuple[list[jax.Array], tuple[jax.Array, ...]]:
    """Compute the diagonal step for each gradient leaf.

    Args:
      graft_type: one of ``GRAFT_TYPES``.
      gradients: gradient leaves, in float32 or wider.
      second_moments: the state from ``init_second_moments``.
      count: the number of this update, starting at 1.
      beta2: decay of the second moment (1 accumulates sums).
      epsilon: added to sqrt(nu) in the denominator.

    Returns:
      The diagonal steps and the new second moments.
    """
    if graft_type not in _WITH_SECOND_MOMENT:
        return list(gradients), second_moments

    if graft_type == "adagrad":
        new_moments = tuple(nu + g * g for g, nu in zip(gradients, second_moments))
    else:
        coefficients = average_coefficients(beta2)
        new_moments = tuple(moving_average(nu, g * g, coefficients) for g, nu in zip(gradients, second_moments))

    correction = bias_correction(beta2, count) if graft_type == "adam" else 1.0
    steps = [_safe_divide(g, jnp.sqrt(nu / correction) + epsilon) for g, nu in zip(gradients, new_moments)]
    return steps, new_moments


def _safe_divide(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
    """Divide, giving 0 where the denominator is 0.

    With ``epsilon = 0``, an entry whose gradients have all been zero has a
    zero second moment, and its step must be 0, not 0/0.
    """
    positive = denominator > 0
    return jnp.where(positive, numerator / jnp.where(positive, denominator, 1.0), 0.0)
