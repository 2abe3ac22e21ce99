"""m2m_jax: Math2Model's algorithms as pure JAX/Flax functions, one config-driven training loop.

Where things are:
- `m2m_jax.models`: the networks, plain `flax.linen` modules (`models.layers` holds the blocks
  families share);
- `m2m_jax.classic`: the classic estimators as pure functions, `fit(X, y, **hyper) -> params`
  and `predict(params, X)`, with scikit-learn's hyperparameter names;
- `m2m_jax.algorithms`: what the loop trains, each a module of pure hooks (`init`,
  `train_step`, `eval_step`, ...; the contract is in `m2m_jax.registry`);
- `m2m_jax.train`: the loop, `train_and_evaluate(config, workdir)`, jitted over the mesh of
  `m2m_jax.parallel`, checkpointed by `m2m_jax.checkpoint`;
- `m2m_jax.configlib`: `load(name, preset)` returns a config of `configs/` (shipped as
  `m2m_jax.configs`), `tiny(config)` shrinks one for tests;
- `m2m_jax.data`: datasets (bundled, synthetic, or tensorflow-datasets) and per-example
  transforms; `m2m_jax.ops`: shared math (optimizer recipes, metrics, keys, distributions);
- `m2m_jax.main`: the command line, `python -m m2m_jax.main --config=cnn --workdir=runs/cnn`.
"""

__version__ = "0.1.0"
