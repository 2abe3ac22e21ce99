"""CLIP: an image tower and a text tower trained so that each image's embedding lies nearest
its own caption's (:mod:`m2m_jax.models.clip`).

Each training step draws one of each image's K captions at random and minimises, over the
global batch of B pairs (every device's examples are every other's negatives),

- ``loss='clip'``: the symmetric InfoNCE of :func:`m2m_jax.ops.contrastive.clip_loss`, a
  softmax over the B texts for each image and over the B images for each text, scaled by the
  learned temperature;
- ``loss='siglip'``: SigLIP's sigmoid loss, every pair of the B x B a binary classification,
  with a learned bias that starts at ``config.siglip_bias`` (None: -log(B - 1)).

With ``config.shared_positives``, a drawn caption that is also another image's in the batch
(:func:`described`) counts as that image's positive too, not as its negative.

``config.pretrained`` (an OpenAI CLIP name, ``'ViT-B/32'``) starts from OpenAI's weights
(:func:`m2m_jax.models.clip.load_openai`); with ``num_epochs = 0`` the loop only evaluates
them, as the original notebook did.

The test metrics (``summarize``) are retrieval recalls over the whole test split: an image's
query hits when one of its k nearest captions is one of its own (several images may share a
caption), and a caption's when one of its k nearest images has it: ``i2t_r1`` ... ``t2i_r10``;
and ``p_right_caption``, the original notebook's experiment: the probability the model gives
an image's own caption among five images' (:func:`p_right_caption`). The ``zeroshot``
evaluator classifies the test images by the nearest class embedding, the mean over
``config.prompts`` templates of the class name's text embedding, normalised again:
``zeroshot_accuracy``, and where the dataset holds (shape, colour) pairs never seen in
training, ``zeroshot_heldout`` and ``zeroshot_seen`` apart.
"""

import functools
import math
import os
import textwrap

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from m2m_jax import report
from m2m_jax.algorithms import nets
from m2m_jax.data import transforms
from m2m_jax.errors import ConfigError, DataError
from m2m_jax.models.clip import CLIP, LOGIT_SCALE_MAX, from_openai, load_openai
from m2m_jax.ops import contrastive, keys, optim

SCHEDULED = True
TAKES_TRANSFORMS = True
LOSSES = ("clip", "siglip")
RECALL_AT = (1, 5, 10)
RIGHT_CAPTION_OF = 5  # the original showed an image five captions


def validate(config: ml_collections.ConfigDict) -> None:
  if config.model_name != "clip":
    raise ConfigError(f"the clip algorithm trains the model 'clip'; got model_name "
                      f"{config.model_name!r}.")
  if config.loss not in LOSSES:
    raise ConfigError(f"unknown clip loss {config.loss!r}; choose from {', '.join(LOSSES)}.")
  if not config.prompts or any("{}" not in p for p in config.prompts):
    raise ConfigError(f"clip needs prompts, templates each with one '{{}}' for the class name; "
                      f"got {tuple(config.prompts)}.")


def _model(config: ml_collections.ConfigDict, context_length: int):
  bias = None
  if config.loss == "siglip":
    bias = (-math.log(config.batch_size - 1) if config.siglip_bias is None
            else config.siglip_bias)
  return nets.build_model(config, vocab_size=config.vocab_size, eot_id=config.eot_id,
                          context_length=context_length, logit_bias=bias)


def init(config: ml_collections.ConfigDict, rng: jax.Array, batch: dict) -> nets.State:
  """Initialises both towers from ``batch['x']`` (B, H, W, C) and ``batch['tokens']`` (B, K, T)
  and the optimizer; with ``config.pretrained`` (an OpenAI CLIP name such as ``'ViT-B/32'``),
  from OpenAI's weights instead, the architecture theirs (``config.model`` unused)."""
  if "tokens" not in batch or batch["tokens"].ndim != 3:
    raise DataError(f"clip trains on captioned images, {{'x': (B, H, W, C), 'tokens': (B, K, "
                    f"T)}}; dataset {config.dataset!r} gives "
                    f"{ {k: tuple(v.shape) for k, v in batch.items()} }.")
  if not config.get("vocab_size"):
    raise DataError(f"dataset {config.dataset!r} has no tokenizer; clip needs captions.")
  if config.get("pretrained"):
    model, variables = _pretrained(config, batch)
  else:
    model = _model(config, batch["tokens"].shape[-1])
    variables = nets.init_variables(model, rng, jnp.asarray(batch["x"][:1]),
                                    jnp.asarray(batch["tokens"][:1, 0]), train=False)
  return nets.State.create(apply_fn=model.apply, params=variables["params"],
                           tx=optim.optimizer(config),
                           batch_stats=variables.get("batch_stats", {}))


def _pretrained(config: ml_collections.ConfigDict, batch: dict) -> tuple[CLIP, dict]:
  """OpenAI's CLIP ``config.pretrained``, converted, after checking that the data fits it."""
  model, variables = from_openai(load_openai(config.pretrained), dtype=jnp.dtype(config.dtype))
  size = model.patch_size * round((variables["params"]["image"]["pos_embedding"].shape[1] - 1)
                                  ** 0.5)
  found = (batch["x"].shape[1], batch["tokens"].shape[-1], config.vocab_size)
  if found != (size, model.context_length, model.vocab_size):
    raise ConfigError(
        f"OpenAI's CLIP {config.pretrained!r} reads {size}x{size} images and "
        f"{model.context_length} tokens of its BPE vocabulary ({model.vocab_size} ids); dataset "
        f"{config.dataset!r} gives {found[0]}x{found[0]} images and {found[1]} tokens of "
        f"{found[2]} ids (set config.data.image_size, config.data.context_length and use a "
        "tfds dataset, whose captions get that BPE).")
  return model, variables


def _loss(config, image_emb, text_emb, log_scale, params, positives) -> jax.Array:
  if config.loss == "siglip":
    return contrastive.siglip_loss(image_emb, text_emb, log_scale, params["logit_bias"],
                                   positives)
  return contrastive.clip_loss(image_emb, text_emb, log_scale, positives)


def described(captions: jax.Array, texts: jax.Array) -> jax.Array:
  """(B, B) bool: ``[i, j]`` when text j (``texts`` (B, T) token ids) is one of image i's
  captions (``captions`` (B, K, T)), word for word."""
  return jnp.any(jnp.all(captions[:, :, None, :] == texts[None, None], axis=-1), axis=1)


def train_step(config: ml_collections.ConfigDict, state: nets.State, batch: dict,
               rng: jax.Array) -> tuple[nets.State, dict]:
  """One optimizer step on the contrastive loss of the batch's images against one of their
  captions each, drawn from ``rng``. Metrics: the loss, the temperature's inverse ``scale``
  = exp(s), and the batch's image -> text top-1 accuracy (a hit: the nearest drawn caption is
  one of the image's own)."""
  x, tokens = batch["x"], batch["tokens"]
  b, k, _ = tokens.shape
  pick = jax.random.randint(jax.random.fold_in(rng, keys.STEP_KEY_OFFSET), (b,), 0, k)
  captions, tokens = tokens, jnp.take_along_axis(tokens, pick[:, None, None], axis=1)[:, 0]
  positives = described(captions, tokens) if config.shared_positives else None

  def loss_fn(params):
    (image_emb, text_emb, log_scale), batch_stats = nets.apply(
        state, params, x, train=True, rng=jax.random.fold_in(rng, keys.STEP_KEY_OFFSET + 1),
        tokens=tokens)
    loss = _loss(config, image_emb, text_emb, log_scale, params, positives)
    return loss, (image_emb @ text_emb.T, log_scale, batch_stats)

  (loss, (sims, log_scale, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  right = jnp.eye(b, dtype=bool) if positives is None else positives  # holds the diagonal
  accuracy = jnp.mean(jnp.take_along_axis(right, jnp.argmax(sims, axis=1)[:, None], 1))
  return state, {"loss": loss, "scale": jnp.exp(log_scale), "accuracy": accuracy}


def _encode_images(state: nets.State, x: jax.Array) -> jax.Array:
  return nets.apply(state, state.params, x, train=False, method=CLIP.encode_image)[0]


def _encode_texts(state: nets.State, tokens: jax.Array) -> jax.Array:
  return nets.apply(state, state.params, tokens, train=False, method=CLIP.encode_text)[0]


_encode_images_jit = jax.jit(_encode_images)


def eval_step(config: ml_collections.ConfigDict, state: nets.State, batch: dict) -> dict:
  """Per example: ``image`` (B, E) and ``text`` (B, K, E) embeddings of the image and its K
  captions, the captions' ``tokens`` (B, K, T), the class ``label`` (0 for a dataset without
  classes), the ``heldout`` flag and the model's inverse temperature ``scale`` (the same for
  all)."""
  b, k, t = batch["tokens"].shape
  text = _encode_texts(state, batch["tokens"].reshape(b * k, t)).reshape(b, k, -1)
  log_scale = jnp.minimum(state.params["logit_scale"], LOGIT_SCALE_MAX)
  return {"image": _encode_images(state, batch["x"]), "text": text,
          "scale": jnp.full(b, jnp.exp(log_scale)), "tokens": batch["tokens"],
          "label": batch.get("y", jnp.zeros(b, jnp.int32)),
          "heldout": batch.get("heldout", jnp.zeros(b, bool))}


def recall_at_k(similarity: np.ndarray, relevant: np.ndarray, ks=RECALL_AT) -> dict[int, float]:
  """The fraction of queries (rows of ``similarity`` (Q, N)) with a relevant item (``relevant``
  (Q, N) bool) among their k most similar, for each k."""
  order = np.argsort(-similarity, axis=1, kind="stable")
  hits = np.take_along_axis(relevant, order, axis=1)
  first = np.where(hits.any(axis=1), hits.argmax(axis=1), np.inf)
  return {k: float(np.mean(first < k)) for k in ks}


def summarize(config: ml_collections.ConfigDict, outputs: dict) -> dict:
  """Image -> text and text -> image recall@1/5/10 over the split. The caption gallery holds
  each distinct caption once; an image and a caption match when the caption is one of the
  image's (two images may share captions, and an image has K). And the original notebook's
  experiment, :func:`p_right_caption`."""
  n, k, t = outputs["tokens"].shape
  captions, first, which = np.unique(outputs["tokens"].reshape(n * k, t), axis=0,
                                     return_index=True, return_inverse=True)
  gallery = outputs["text"].reshape(n * k, -1)[first]           # (U, E)
  relevant = np.zeros((n, len(captions)), bool)                 # image i has caption u
  relevant[np.repeat(np.arange(n), k), which.reshape(-1)] = True
  i2t = recall_at_k(outputs["image"] @ gallery.T, relevant)
  t2i = recall_at_k(gallery @ outputs["image"].T, relevant.T)
  return {**{f"i2t_r{n}": v for n, v in i2t.items()}, **{f"t2i_r{n}": v for n, v in t2i.items()},
          "p_right_caption": p_right_caption(outputs["image"], outputs["text"][:, 0],
                                             outputs["scale"][0])}


def p_right_caption(image: np.ndarray, text: np.ndarray, scale: float,
                    group: int = RIGHT_CAPTION_OF) -> float:
  """The original notebook's experiment, over a whole split: the test images in consecutive
  groups of ``group``, each image shown its own first caption and those of the others in its
  group (a split of fewer images makes one group); the mean softmax probability, at the
  model's temperature, of its own.

  Args:
    image: (N, E) image embeddings; text: (N, E) each image's caption's embedding.
    scale: the learned inverse temperature exp(s).
  """
  group = min(group, len(image))
  n = len(image) // group * group
  image = image[:n].reshape(-1, group, image.shape[-1])
  text = text[:n].reshape(-1, group, text.shape[-1])
  logits = scale * np.einsum("gie,gje->gij", image, text)
  probs = np.asarray(jax.nn.softmax(logits, axis=-1))
  return float(np.mean(np.diagonal(probs, axis1=1, axis2=2)))


@functools.partial(jax.jit, static_argnames=("prompts",))
def _class_embeddings(state: nets.State, tokens: jax.Array, prompts: int) -> jax.Array:
  """tokens (C P, T) of C classes x P prompts -> (C, E): each class's mean prompt embedding,
  normalised again."""
  emb = _encode_texts(state, tokens)
  return contrastive.l2_normalize(emb.reshape(-1, prompts, emb.shape[-1]).mean(axis=1))


def class_embeddings(config: ml_collections.ConfigDict, state: nets.State, dataset) -> jax.Array:
  """The zero-shot classifier's weights (C, E): the class names of ``dataset`` in each of
  ``config.prompts``, embedded, averaged over the prompts and normalised."""
  texts = [p.format(name) for name in dataset.class_names for p in config.prompts]
  tokens = dataset.tokenizer.encode(texts, dataset.test[np.arange(1)]["tokens"].shape[-1])
  return _class_embeddings(state, jnp.asarray(tokens), len(config.prompts))


def zeroshot_metrics(config: ml_collections.ConfigDict, state: nets.State, dataset) -> dict:
  """Zero-shot top-1 accuracy of the test images against :func:`class_embeddings`; with
  held-out classes, also on the held-out and the seen examples apart."""
  if not dataset.class_names:
    raise ConfigError(f"the zeroshot evaluator classifies by class names, and dataset "
                      f"{dataset.name!r} has none; drop it from config.evals.")
  weights = class_embeddings(config, state, dataset)
  prepare = transforms.parse(config.eval_transforms, "eval_transforms")
  preds, labels, held = [], [], []
  for start in range(0, len(dataset.test), config.eval_batch_size):
    batch = dataset.test[np.arange(start, min(start + config.eval_batch_size, len(dataset.test)))]
    x = prepare(jax.random.key(0), {"x": batch["x"]})["x"] if prepare else batch["x"]
    preds.append(np.asarray(jnp.argmax(_encode_images_jit(state, jnp.asarray(x)) @ weights.T,
                                       -1)))
    labels.append(batch["y"])
    held.append(batch.get("heldout", np.zeros(len(batch["y"]), bool)))
  hit = np.concatenate(preds) == np.concatenate(labels)
  held = np.concatenate(held)
  metrics = {"zeroshot_accuracy": float(hit.mean())}
  if held.any() and not held.all():
    metrics.update(zeroshot_heldout=float(hit[held].mean()), zeroshot_seen=float(hit[~held].mean()))
  return metrics


def figures(config: ml_collections.ConfigDict, state: nets.State, outputs: dict, dataset,
            outdir: str, n: int = 8) -> None:
  """``similarity.png``: the cosine similarities of the first ``n`` test images and their first
  captions; ``zeroshot.png``: those images with their five most likely classes, or for a
  dataset without classes, ``retrieval.png``: with their five most likely captions among the
  split's images' first captions. (The learned inverse temperature over training is the
  ``scale`` panel of ``curves.png``.)"""
  n = min(n, len(outputs["image"]))
  first = outputs["tokens"][:, 0]
  sims = outputs["image"][:n] @ outputs["text"][:n, 0].T
  fig, ax = report.figure(figsize=(0.9 * n + 3, 0.9 * n + 1))
  ax.imshow(sims, cmap="viridis")
  ax.set_yticks(range(n), [f"image {i}" for i in range(n)])
  ax.set_xticks(range(n), [_caption(dataset, t) for t in first[:n]], rotation=60, ha="right",
                fontsize=7)
  for i in range(n):
    for j in range(n):
      ax.text(j, i, f"{sims[i, j]:.2f}", ha="center", va="center", fontsize=6, color="w")
  ax.set_title("cosine similarity: test images x their first captions")
  fig.savefig(os.path.join(outdir, "similarity.png"), bbox_inches="tight", dpi=110)

  scale = float(outputs["scale"][0])
  if dataset.class_names:
    weights = np.asarray(class_embeddings(config, state, dataset))
    names, truth = dataset.class_names, outputs["label"][:n]
    title, name = "zero-shot: the five most likely classes (green: the true one)", "zeroshot.png"
  else:
    weights = outputs["text"][:, 0]
    names, truth = [_caption(dataset, t) for t in first], np.arange(n)
    title, name = ("retrieval: the five most likely of the split's captions (green: its own)",
                   "retrieval.png")
  probs = np.asarray(jax.nn.softmax(scale * outputs["image"][:n] @ weights.T, -1))
  images = dataset.test[np.arange(n)]["x"]
  fig, axes = report.figure(2, n, figsize=(2.2 * n, 4.4), squeeze=False)
  for i in range(n):
    axes[0, i].imshow(images[i].squeeze(), cmap="gray")
    axes[0, i].axis("off")
    top = np.argsort(-probs[i])[:5][::-1]
    axes[1, i].barh(range(5), probs[i][top], color=["C2" if c == truth[i] else "C0" for c in top])
    axes[1, i].set_yticks(range(5), [names[c] for c in top], fontsize=7)
    axes[1, i].set_xlim(0, 1)
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(os.path.join(outdir, name), dpi=110)


def _caption(dataset, tokens: np.ndarray, width: int = 36) -> str:
  """A caption's text from its token ids, shortened to ``width`` characters for a label."""
  return textwrap.shorten(dataset.tokenizer.decode(tokens), width, placeholder="...")
