"""Principal component analysis in one loop step.

The step runs :func:`m2m_jax.classic.pca.solve` on the whole training set with
``config.model`` as its hyperparameters (``n_components``: an int here, ``whiten``,
``svd_solver``, ``n_oversamples``, ``iterated_power``). Test metrics: the fraction of the test
set's variance (about the training mean) that the k components keep,
  explained_variance = 1 - sum_i ||x_i - x_hat_i||^2 / sum_i ||x_i - mean||^2,
with x_hat = inverse_transform(transform(x)), and the mean squared reconstruction error per
feature. The training step logs explained_variance_ratio_.sum(), its training-set twin.
"""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from m2m_jax import report
from m2m_jax.algorithms import fitted
from m2m_jax.classic import pca
from m2m_jax.errors import ConfigError

validate = fitted.validate


def init(config: ml_collections.ConfigDict, rng: jax.Array, batch: dict) -> fitted.Fitted:
  """Checks the data {'x': (N, ...)} and hyperparameters; k: an int in 1..min(N, D) or None (all)."""
  h = fitted.hyper(config)
  if isinstance(h["n_components"], float):
    raise ConfigError(f"n_components={h.get('n_components')!r}: in the loop PCA keeps a fixed "
                      "number of components; give an int (the fraction form needs classic.pca.fit).")
  x, k = pca.check(fitted.flat(np.asarray(batch["x"])), n_components=h.pop("n_components"),
                   svd_solver=h["svd_solver"], n_oversamples=h["n_oversamples"],
                   iterated_power=h["iterated_power"])
  options = dict(h, k=k)
  return fitted.Fitted(fitted.unfitted(pca.solve, x, rng, **options),
                       tuple(sorted(options.items())))


def _reconstruction(params: pca.PCAParams, x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """x (B, D) -> its projection z (B, k) and squared reconstruction errors (B,)."""
  z = pca.transform(params, x)
  return z, jnp.sum((x - pca.inverse_transform(params, z)) ** 2, 1)


def train_step(config: ml_collections.ConfigDict, state: fitted.Fitted,
               batch: dict, rng: jax.Array) -> tuple[fitted.Fitted, dict]:
  """Fits on the batch; metrics: the variance ratio kept, the mean squared reconstruction error."""
  x = fitted.flat(batch["x"])
  params = pca.solve(x, rng, **state.kwargs)
  _, sq_error = _reconstruction(params, x)
  return state.replace(params=params), {
      "explained_variance": jnp.sum(params.explained_variance_ratio_),
      "reconstruction_mse": jnp.mean(sq_error) / x.shape[1]}


def eval_step(config: ml_collections.ConfigDict, state: fitted.Fitted, batch: dict) -> dict:
  """Per example: the squared reconstruction error ``mse`` and squared distance to the training
  mean ``spread``, both per feature (B,); the first two coordinates ``z`` (B, min(k, 2)); the
  ``label``."""
  x = fitted.flat(batch["x"])
  z, sq_error = _reconstruction(state.params, x)
  return {"mse": sq_error / x.shape[1], "spread": jnp.mean((x - state.params.mean_) ** 2, 1),
          "z": z[:, :2], "label": batch["y"]}


def summarize(config: ml_collections.ConfigDict, outputs: dict) -> dict:
  spread = outputs["spread"].sum()
  return {"explained_variance": float(1.0 - outputs["mse"].sum() / spread) if spread > 0 else 1.0,
          "reconstruction_mse": float(outputs["mse"].mean())}


def figures(config: ml_collections.ConfigDict, state: fitted.Fitted,
            outputs: dict, dataset, outdir: str) -> None:
  """Scree plot (variance ratio per component and cumulative), the test set projected on the
  first two components, and for images a few test images next to their reconstructions."""
  params = state.params
  ratio = np.asarray(params.explained_variance_ratio_)
  fig, axes = report.figure(1, 2, figsize=(10, 4))
  k = np.arange(1, len(ratio) + 1)
  axes[0].bar(k, ratio, label="per component")
  axes[0].plot(k, np.cumsum(ratio), "o-", color="C1", ms=3, label="cumulative")
  axes[0].set(xlabel="component", ylabel="explained variance ratio (train)",
              title=f"scree: {len(ratio)} components keep {ratio.sum():.1%}")
  axes[0].legend()
  z = outputs["z"]
  if z.shape[1] == 2:
    labels = outputs["label"]
    by_label = labels.ndim == 1  # class labels or targets colour the points; masks do not
    colour = {"c": labels, "cmap": "tab10"} if by_label else {}
    sc = axes[1].scatter(z[:, 0], z[:, 1], s=10, **colour)
    if by_label:
      fig.colorbar(sc, ax=axes[1], label="label")
    axes[1].set(xlabel="component 1", ylabel="component 2",
                title=f"{dataset.name}: test set on the first two components")
  else:
    axes[1].axis("off")
  fig.tight_layout()
  fig.savefig(os.path.join(outdir, "pca.png"), dpi=110)
  n = len(dataset.test)
  images = dataset.test[np.linspace(0, n - 1, min(8, n)).astype(int)]["x"]
  if images.ndim == 4:
    flat = jnp.asarray(images.reshape(len(images), -1))
    rebuilt = np.asarray(pca.inverse_transform(params, pca.transform(params, flat)))
    report.plot_images(np.concatenate([images, rebuilt.reshape(images.shape)]),
                       ["test"] * len(images) + [f"k = {len(ratio)}"] * len(images),
                       os.path.join(outdir, "reconstructions.png"))
