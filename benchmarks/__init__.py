"""Benchmarks of shampoo_optax; ``python -m benchmarks`` compares optimizers.

benchmarks/README.md lists the commands, the protocol and the outputs. The
modules that Google's optimizer runs with under JAX 0.5.3 (``workloads``,
``transformer``, ``training``, ``report``, ``environments`` and
``google_worker``) must not import ``shampoo_optax``, so this package imports
nothing on its own.
"""
