"""Checks of hyperparameters, run when an optimizer is built.

Each check raises ``ValueError`` naming the argument, the value and a valid
choice. Arrays, including the tracers that ``optax.inject_hyperparams`` passes
for every numeric argument, are not checked, because their values are not
known when the optimizer is built. Arguments that set array shapes are the
exception: they must be Python ints.
"""

import numbers
from collections.abc import Sequence

import jax
import jax.numpy as jnp


def _is_concrete_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_int(name: str, value, example: int, *, minimum: int, sets_shapes: bool = False) -> None:
    """Check that ``value`` is an int >= ``minimum`` (0 or 1).

    With ``sets_shapes``, an array is an error too, because the value must be
    known when the update is traced.
    """
    if isinstance(value, jax.Array) and not sets_shapes:
        return
    if isinstance(value, jax.Array):
        raise ValueError(
            f"{name} must be a Python int because it sets array shapes, got an array; "
            f"with optax.inject_hyperparams, list {name!r} in static_args"
        )
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        requirement = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{name} must be {requirement}, got {value!r}; use e.g. {example}")


def check_unit_interval(name: str, value, example: float, *, include_one: bool) -> None:
    """Check 0 <= value < 1, or 0 <= value <= 1 with ``include_one``."""
    if not _is_concrete_number(value):
        return
    upper_ok = value <= 1 if include_one else value < 1
    if not (value >= 0 and upper_ok):
        interval = "[0, 1]" if include_one else "[0, 1)"
        raise ValueError(f"{name} must be in {interval}, got {value!r}; use e.g. {example}")


def check_non_negative(name: str, value, example: float) -> None:
    if _is_concrete_number(value) and not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}; use e.g. {example}")


def check_positive(name: str, value, example: float) -> None:
    if _is_concrete_number(value) and not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}; use e.g. {example}")


def check_choice(name: str, value, choices: Sequence[str]) -> None:
    if value not in choices:
        options = ", ".join(repr(choice) for choice in choices)
        raise ValueError(f"{name} must be one of {options}, got {value!r}")


def check_float_dtype(name: str, value) -> jnp.dtype:
    """Return ``value`` as a floating dtype that JAX can use in this process."""
    try:
        dtype = jnp.dtype(value)
    except TypeError:
        dtype = None
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"{name} must be a floating dtype, got {value!r}; use e.g. jnp.float32")
    if dtype.itemsize > 4 and not jax.config.jax_enable_x64:
        raise ValueError(
            f"{name}={dtype.name} needs 64-bit JAX; call jax.config.update('jax_enable_x64', True) "
            f"before building the optimizer, or leave {name}=None"
        )
    return dtype
