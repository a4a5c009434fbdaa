"""Shampoo for JAX as an Optax gradient transformation."""

from shampoo_optax.diagnostics import RootDiagnostics, root_diagnostics
from shampoo_optax.grafting import GRAFT_TYPES, GraftType
from shampoo_optax.matrix_roots import ROOT_METHODS, RootMethod, RootResult, matrix_inverse_pth_root
from shampoo_optax.transform import ShampooState, scale_by_shampoo, shampoo

__version__ = "0.1.0"

__all__ = [
    "GRAFT_TYPES",
    "GraftType",
    "ROOT_METHODS",
    "RootDiagnostics",
    "RootMethod",
    "RootResult",
    "ShampooState",
    "matrix_inverse_pth_root",
    "root_diagnostics",
    "scale_by_shampoo",
    "shampoo",
]
