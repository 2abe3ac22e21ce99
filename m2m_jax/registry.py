"""Algorithm registry: ``config.algorithm`` -> the module that implements it.

An algorithm module provides pure functions, and the shared loop calls nothing else. Every
hook takes the config first: settings are read from it where they are used, never copied into
the state.

- ``init(config, rng, batch) -> state``: ``batch`` is the first training batch (numpy);
  ``state`` is any pytree of what training changes (and of what the data fixes, such as a
  fitted estimator's options, as ``flax.struct`` fields with ``pytree_node=False``).
- ``train_step(config, state, batch, rng) -> (state, metrics)``: jitted by the loop with the
  config bound (:func:`m2m_jax.train.programs`: the config less the loop's cadences, frozen, so
  its values are constants of the compiled program); ``metrics`` is a dict of scalars, averaged
  by the loop between log points (a NaN or inf in any of them stops the run).
- ``eval_step(config, state, batch) -> outputs``: jitted the same way; a dict of per-example
  arrays, leading dim B.
Optional:
- ``summarize(config, outputs) -> dict[str, float]``: metrics of a whole split from the
  concatenated per-example outputs (default: the mean of every floating-point output).
- ``sample_metrics(config, state, dataset) -> dict[str, float]``: the quality of generated
  samples, run by an evaluator of kind ``samples`` in ``config.evals`` (after training by
  default; see :mod:`m2m_jax.evaluators`) and merged into the metrics of its split.
- ``zeroshot_metrics(config, state, dataset) -> dict[str, float]``: zero-shot classification of
  the test split by text embeddings of the class names, run by an evaluator of kind
  ``zeroshot``.
- ``figures(config, state, outputs, dataset, outdir)``: writes figures at the end of training.
- ``validate(config)``: algorithm-specific config checks, raising ``ConfigError``.
- ``SCHEDULED = True``: it learns at ``optim.schedule(config)`` (the loop logs that learning
  rate to TensorBoard).
- ``TAKES_TRANSFORMS = True``: ``config.transforms`` (:mod:`m2m_jax.data.transforms`) may
  transform its training batches. The transforms draw from the step's key, so such a
  ``train_step`` draws its own randomness from ``fold_in(rng, keys.STEP_KEY_OFFSET + j)``.
"""

import importlib
from types import ModuleType

from m2m_jax.errors import choose

ALGORITHMS = {
    "classifier": "m2m_jax.algorithms.classifier",
    "mlp_scratch": "m2m_jax.algorithms.mlp_scratch",
    "kmeans": "m2m_jax.algorithms.kmeans",
    "linear_regression": "m2m_jax.algorithms.linear_regression",
    "logistic_regression": "m2m_jax.algorithms.logistic_regression",
    "knn": "m2m_jax.algorithms.knn",
    "pca": "m2m_jax.algorithms.pca",
    "decision_tree": "m2m_jax.algorithms.decision_tree",
    "random_forest": "m2m_jax.algorithms.random_forest",
    "adaboost": "m2m_jax.algorithms.adaboost",
    "gradient_boosting": "m2m_jax.algorithms.gradient_boosting",
    "colorize": "m2m_jax.algorithms.colorize",
    "denoise": "m2m_jax.algorithms.denoise",
    "segmentation": "m2m_jax.algorithms.segmentation",
    "latent_ode": "m2m_jax.algorithms.latent_ode",
    "vae": "m2m_jax.algorithms.vae",
    "gan": "m2m_jax.algorithms.gan",
    "diffusion": "m2m_jax.algorithms.diffusion",
    "clip": "m2m_jax.algorithms.clip",
    "faster_rcnn": "m2m_jax.algorithms.faster_rcnn",
}


def get(name: str) -> ModuleType:
  """The algorithm module registered as ``name``; a clear error lists the choices."""
  choose("algorithm", name, ALGORITHMS)
  return importlib.import_module(ALGORITHMS[name])
