"""Classic estimators as pure functions: ``fit(X, y=None, **hyper) -> params``, ``predict(params, X)``.

Hyperparameter names follow scikit-learn's where the concept is the same. Inputs are checked at
the door (:mod:`m2m_jax.classic.validation`); the fitted ``params`` are pytrees, so ``predict``
jits and vmaps.
"""
