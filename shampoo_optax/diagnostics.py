"""Summaries of the inverse-root refreshes, read from an optimizer state.

The summary is a handful of scalar arrays computed from the state, so it adds
no host synchronization to a training step: call it inside or outside ``jit``
and fetch the values only when logging, e.g. every few hundred steps::

    summary = shampoo_optax.root_diagnostics(opt_state)
    logging.info("root error %.2e, failures %d", *jax.device_get(
        (summary.max_root_error, summary.root_failures)))
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from shampoo_optax.transform import ShampooState


class RootDiagnostics(NamedTuple):
    """Health of the inverse p-th roots, over every Shampoo state found.

    Attributes:
      max_root_error: the largest residual ``max |X^a A X^b - I|`` (a + b = p) among the roots
        computed at the last refresh, accepted or not; NaN if one of them was
        not finite, zero before the first refresh.
      max_root_iterations: the most Newton iterations one root took at the
        last refresh (zero with ``root_method="eigh"``). A value at
        ``max_root_iterations`` means some root hit the cap.
      root_failures: the number of roots rejected since ``init``, summed over
        blocks. Each rejection kept a block's previous root.
      num_roots: the number of statistics, hence roots per refresh.
    """

    max_root_error: jax.Array
    max_root_iterations: jax.Array
    root_failures: jax.Array
    num_roots: jax.Array


def _shampoo_states(opt_state: Any) -> list[ShampooState]:
    nodes = jax.tree.leaves(opt_state, is_leaf=lambda node: isinstance(node, ShampooState))
    return [node for node in nodes if isinstance(node, ShampooState)]


def root_diagnostics(opt_state: Any) -> RootDiagnostics:
    """Summarize the roots of every ``ShampooState`` inside ``opt_state``.

    Args:
      opt_state: the state of ``scale_by_shampoo`` or ``shampoo``, or of any
        optax wrapper or chain around them (``optax.chain``,
        ``optax.inject_hyperparams``, ``optax.MultiSteps``, ...).

    Returns:
      A ``RootDiagnostics`` of scalar arrays.

    Raises:
      ValueError: if ``opt_state`` contains no ``ShampooState``.
    """
    states = _shampoo_states(opt_state)
    if not states:
        raise ValueError(
            f"found no ShampooState in an optimizer state of type {type(opt_state).__name__}; "
            "pass the state returned by the init or update of shampoo_optax.shampoo or scale_by_shampoo"
        )
    errors = [error for state in states for error in state.root_errors]
    iterations = [count for state in states for count in state.root_iterations]
    failures = [count for state in states for count in state.root_failures]
    if not errors:
        # No leaf was large enough to precondition: there are no roots.
        zero_int = jnp.zeros((), jnp.int32)
        return RootDiagnostics(jnp.zeros((), jnp.float32), zero_int, zero_int, zero_int)
    return RootDiagnostics(
        max_root_error=jnp.max(jnp.concatenate(errors)),
        max_root_iterations=jnp.max(jnp.concatenate(iterations)),
        root_failures=jnp.sum(jnp.concatenate(failures)),
        num_roots=jnp.asarray(sum(error.shape[0] for error in errors), jnp.int32),
    )
