"""One file per algorithm: ``init``, ``train_step``, ``eval_step`` and figures.

The contract the shared loop relies on is documented in :mod:`m2m_jax.registry`.
"""
