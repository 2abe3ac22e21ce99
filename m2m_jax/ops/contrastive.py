"""Contrastive losses of paired embeddings: CLIP's symmetric InfoNCE and SigLIP's sigmoid loss.

A batch holds B pairs (image i, text i). With both embeddings L2-normalised, the similarity of
image i and text j is the cosine ``image_i . text_j``, and the logits are

    logits_ij = t * image_i . text_j,    t = exp(log_scale),

a (B, B) matrix whose diagonal holds the B matching pairs and whose other B(B - 1) entries are
the negatives. ``t`` is the inverse temperature: the cosines lie in [-1, 1], too flat for a
softmax, and ``t`` (learnt through its logarithm, so it stays positive; CLIP starts it at 1/0.07
and clips it at 100, which is the caller's business) sharpens them.

CLIP (Radford et al. 2021) reads each row as a B-way classification, "which text is this
image's?", and each column as "which image is this text's?", the target being the diagonal:
InfoNCE (van den Oord et al. 2018) in both directions, a symmetric cross-entropy,

    L = 1/2 [ -1/B sum_i log softmax_j(logits_ij)[i]  -  1/B sum_j log softmax_i(logits_ij)[j] ].

SigLIP (Zhai et al. 2023) instead scores every pair on its own, a binary "is (i, j) a match?",
with a learnt bias b and z_ij = +1 on the diagonal, -1 elsewhere:

    L = -1/B sum_i sum_j log sigmoid(z_ij (logits_ij + b)).

Where two images of a batch share a caption ("something red"), that caption describes both,
and with the diagonal as the only target the loss pushes each image away from a true
description of it. Both losses take an optional (B, B) ``positives``: the pairs known to match
besides the diagonal, for CLIP each row's and column's target spread evenly over them (UniCL,
Yang et al. 2022), for SigLIP z = +1 on them.

Why the negatives must come from the GLOBAL batch: both losses improve with the number of
negatives each example is contrasted with. In the shared loop the batch is ONE global array
sharded over the mesh axis ``'data'`` (:func:`m2m_jax.parallel.make_mesh`,
:func:`~m2m_jax.parallel.batch_sharded`, :func:`~m2m_jax.parallel.to_global`); calling these
functions inside ``jax.jit`` on those global arrays computes ``image @ text.T`` over all B
examples, XLA inserting the collectives (an all-gather of one side's embeddings), so every
example meets all B - 1 negatives across every device, and the loss and its gradients are the
numbers one device would compute on the whole batch. A per-device loss (each device's B / n
examples contrasted only with each other, then averaged, as a ``pmap`` or ``shard_map`` body
would compute) sees B / n - 1 negatives and is a different, easier objective.

All functions are pure, jit-safe (their input checks are on static shapes) and compute in
float32 (or wider) whatever the embeddings' dtype, so bfloat16 models get a float32 loss.
"""

import math

import jax
import jax.numpy as jnp
import optax

from m2m_jax.errors import DataError


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
  """``x / max(||x||, eps)`` along ``axis``, shape and dtype of ``x`` kept.

  The norm is computed in float32 (or wider), and a vector shorter than ``eps`` (a zero
  vector) is divided by ``eps`` rather than by zero, so its value and gradient stay finite.
  """
  dtype = jnp.result_type(x, jnp.float32)
  y = x.astype(dtype)
  squared = jnp.sum(y * y, axis=axis, keepdims=True)
  return (y * jax.lax.rsqrt(jnp.maximum(squared, jnp.asarray(eps, dtype) ** 2))).astype(x.dtype)


def _check_pairs(name: str, image_emb: jax.Array, text_emb: jax.Array, **scalars) -> None:
  """Raises DataError unless the embeddings are (B, D) each, B >= 2, and ``scalars`` are."""
  i, t = jnp.shape(image_emb), jnp.shape(text_emb)
  if len(i) != 2 or len(t) != 2:
    raise DataError(f"{name}: image_emb and text_emb must be 2-D (batch, width); got shapes "
                    f"{i} and {t}.")
  if i != t:
    raise DataError(f"{name}: image_emb and text_emb must have the same (batch, width); got "
                    f"{i} and {t}.")
  if i[0] < 2:
    raise DataError(f"{name}: needs a batch of at least 2 pairs (each pair's negatives are the "
                    f"others); got {i[0]}.")
  for arg, value in scalars.items():
    if jnp.size(value) != 1:
      raise DataError(f"{name}: {arg} must be a scalar; got shape {jnp.shape(value)}.")


def _logits(image_emb: jax.Array, text_emb: jax.Array, log_scale) -> jax.Array:
  """(B, D), (B, D), scalar -> (B, B) ``exp(log_scale) * image @ text.T`` in float32 or wider."""
  dtype = jnp.result_type(image_emb, text_emb, jnp.float32)
  cosines = jnp.einsum("id,jd->ij", image_emb.astype(dtype), text_emb.astype(dtype),
                       precision=jax.lax.Precision.HIGHEST)
  return jnp.exp(jnp.reshape(log_scale, ()).astype(dtype)) * cosines


def _positives(name: str, positives, b: int, dtype) -> jax.Array:
  """(B, B) float 0/1 matrix of the matching pairs: the diagonal, and where given, the pairs
  ``positives`` marks too."""
  eye = jnp.eye(b, dtype=bool)
  if positives is None:
    return eye.astype(dtype)
  if jnp.shape(positives) != (b, b):
    raise DataError(f"{name}: positives must be (batch, batch) = {(b, b)}; got shape "
                    f"{jnp.shape(positives)}.")
  return (jnp.asarray(positives, bool) | eye).astype(dtype)


def clip_loss(image_emb: jax.Array, text_emb: jax.Array, log_scale,
              positives: jax.Array | None = None) -> jax.Array:
  """CLIP's symmetric cross-entropy (InfoNCE both ways) of B matching pairs.

  Args:
    image_emb: (B, D) L2-normalised image embeddings, any float dtype; B >= 2.
    text_emb: (B, D) L2-normalised text embeddings, pair i being (image_emb[i], text_emb[i]).
    log_scale: scalar (shape () or (1,)), the log of the inverse temperature t.
    positives: optional (B, B) bool, ``positives[i, j]``: text j describes image i too (a
      caption two images share, such as "something red"). Each row's and each column's target
      is then spread evenly over its positives (the diagonal always among them) instead of
      being the diagonal alone, so a true description is never pushed away as a negative
      (UniCL, Yang et al. 2022). None: the diagonal only.

  Returns:
    A scalar, float32 (float64 for float64 inputs): with logits = t * image @ text.T (B, B),
    1/2 (mean over rows of the cross-entropy of each row against its target + the same over
    columns).
  """
  _check_pairs("clip_loss", image_emb, text_emb, log_scale=log_scale)
  logits = _logits(image_emb, text_emb, log_scale)
  if positives is None:
    diagonal = jnp.arange(logits.shape[0])
    image_to_text = optax.losses.softmax_cross_entropy_with_integer_labels(logits, diagonal)
    text_to_image = optax.losses.softmax_cross_entropy_with_integer_labels(logits.T, diagonal)
  else:
    p = _positives("clip_loss", positives, logits.shape[0], logits.dtype)
    image_to_text = optax.losses.softmax_cross_entropy(logits, p / p.sum(1, keepdims=True))
    text_to_image = optax.losses.softmax_cross_entropy(logits.T, p.T / p.sum(0)[:, None])
  return 0.5 * (image_to_text.mean() + text_to_image.mean())


def siglip_loss(image_emb: jax.Array, text_emb: jax.Array, log_scale, bias,
                positives: jax.Array | None = None) -> jax.Array:
  """SigLIP's pairwise sigmoid loss: ``-1/B sum_i sum_j log sigmoid(z_ij (t image_i . text_j +
  bias))``, z = +1 on the diagonal (the B matches) and -1 elsewhere (the B(B - 1) negatives).

  At initialisation the embeddings are unrelated, every logit is about ``bias``, and the B^2
  terms are dominated by the negatives; starting ``bias`` at the logit of the positive rate 1/B,
  about -log B (:func:`siglip_bias_init`), keeps the first steps from spending themselves on
  pushing every pair apart. The paper starts it at -10 with t = 10, for batches of thousands; for
  the small batches of a laptop, start it near -log B.

  Args:
    image_emb: (B, D) L2-normalised image embeddings, any float dtype; B >= 2.
    text_emb: (B, D) L2-normalised text embeddings, pair i being (image_emb[i], text_emb[i]).
    log_scale: scalar (shape () or (1,)), the log of the inverse temperature t.
    bias: scalar (shape () or (1,)), the learnt bias b added to every logit.
    positives: optional (B, B) bool, ``positives[i, j]``: text j describes image i too; those
      pairs get z = +1 as well (see :func:`clip_loss`). None: the diagonal only.

  Returns:
    A scalar, float32 (float64 for float64 inputs): the sum over the B^2 pairs of the binary
    cross-entropy, divided by B.
  """
  _check_pairs("siglip_loss", image_emb, text_emb, log_scale=log_scale, bias=bias)
  logits = _logits(image_emb, text_emb, log_scale)
  logits = logits + jnp.reshape(bias, ()).astype(logits.dtype)
  z = 2 * _positives("siglip_loss", positives, logits.shape[0], logits.dtype) - 1
  return -jnp.sum(jax.nn.log_sigmoid(z * logits)) / logits.shape[0]


def siglip_bias_init(batch_size: int) -> float:
  """The SigLIP bias whose sigmoid is the positive rate 1/B: ``-log(B - 1)``, about -log B.

  With every logit equal to it (unrelated embeddings), each pair is predicted a match with
  probability sigmoid(-log(B - 1)) = 1/B, the share of matches among the B^2 pairs.
  """
  if batch_size < 2:
    raise DataError(f"siglip_bias_init: needs a batch of at least 2 pairs (each pair's negatives "
                    f"are the others); got {batch_size}.")
  return -math.log(batch_size - 1)
