"""m2m_jax: Math2Model's algorithms as pure JAX/Flax functions, one config-driven training loop."""

__version__ = "0.1.0"
