"""Shared test set-up: float32 matmuls on CPU, deterministic, small thread count."""
import jax

jax.config.update("jax_default_matmul_precision", "highest")
