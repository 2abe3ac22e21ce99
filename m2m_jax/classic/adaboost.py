"""AdaBoost for K >= 2 classes: SAMME (Zhu, Zou, Rosset and Hastie 2009) on weighted CART trees.

SAMME is scikit-learn's ``AdaBoostClassifier`` (its only algorithm now that SAMME.R is gone).
With n samples of base weights b_i (1, or ``sample_weight``), round m = 0, 1, ... grows a tree
h_m of depth ``max_depth`` (default 1: a stump) with the weighted gini criterion on the
current weights w (:func:`m2m_jax.classic.decision_tree.grow`; h_m(x) is the class of largest
weighted share in x's leaf) and scores it

  err_m = sum_i w_i [h_m(x_i) != y_i] / sum_i w_i,
  alpha_m = learning_rate * (log((1 - err_m) / err_m) + log(K - 1)),

then raises the weight of the samples it got wrong, w_i <- w_i exp(alpha_m [h_m(x_i) != y_i]).
alpha_m > 0 exactly when err_m < 1 - 1/K (better than guessing among K classes); the log(K - 1)
term is what makes K > 2 work (without it a multiclass learner must beat 1/2, not 1 - 1/K).
Prediction is the alpha-weighted vote. With A = sum_m alpha_m,

  decision_c(x) = sum_m alpha_m ([h_m(x) = c] - [h_m(x) != c] / (K - 1)) / A     (m, K)
  predict(x) = argmax_c decision_c(x)          (ties to the first class, as scikit-learn)
  P(c | x) = softmax_c(decision(x) / (K - 1))  (scikit-learn's SAMME probabilities)

scikit-learn's binary ``decision_function`` is the one column decision_1 - decision_0.

Stopping, as scikit-learn (1.9) does:
  * err_m <= 0 (h_m classifies every weighted sample right): h_m is kept with alpha_m = 1
    (not scaled by the learning rate) and boosting stops. This is the seed notebook's bug made
    visible: full-depth trees fit the training set, so its 50 "rounds" were one tree.
  * err_m >= 1 - 1/K (no better than chance): h_m is dropped (an empty tree with alpha_m = 0)
    and boosting stops; if that happens in round 0 nothing can be fitted and ``fit`` raises.
    Here "chance" starts 1e-5 below 1 - 1/K (``CHANCE_MARGIN``): when every leaf of h_m holds
    the K classes in equal weight, err_m is exactly 1 - 1/K, but its float32 sums can land a
    hair below and keep a useless learner (alpha ~ 1e-7) that stalls every later round.
    scikit-learn's float64 sums have the same knife edge (alpha = 2.2e-16 at times).
  Every round after a stop has alpha = 0 and an empty tree. ``n_rounds_`` counts the rounds
  kept, ``errors_`` holds err_m (1 for rounds not kept, scikit-learn's ``estimator_errors_``),
  ``alpha_`` scikit-learn's ``estimator_weights_``.

The weights as computed here. The weight after rounds 0..t-1 is a closed form of those rounds,

  w_i = max(b_i exp(sum_{m<t} alpha_m [h_m(x_i) != y_i]) / Z, eps)   for b_i > 0, else 0,

with Z the sum over i of the numerators (so the w_i sum to 1 up to the floor) and
eps = 2.2e-16 (float64's machine epsilon, scikit-learn's floor against vanishing weights).
The exponent is summed in log space, so no weight overflows, and :func:`sample_weights`
recomputes exactly the weights that ``fit``'s scan carries. Two deliberate differences from
scikit-learn's float64 loop follow: it floors the running weights each round, so a weight
floored once grows from eps afterwards, while here the floor applies to the closed form and an
earlier floor never raises a later weight (the two differ only for samples whose weight has
fallen below eps of the total, an exponent ~36 below the largest); and it stops with a warning
when its weights overflow, which here they cannot.

Static shapes: the fitted :class:`AdaBoost` holds T = ``n_estimators`` trees stacked as arrays
(T, M) (value (T, M, K)) and alpha (T,); ``fit`` runs the rounds in one ``jax.lax.scan`` under
jit, carrying the log-weights. A training loop that cannot carry per-sample state runs the same
rounds with :func:`init`, :func:`sample_weights` and :func:`boost_round` and gets the same
parameters. Training rows go through the trees by their bins, queries by the thresholds (the
same leaves for the training rows).
"""

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from m2m_jax.classic import decision_tree as dt
from m2m_jax.classic import validation
from m2m_jax.errors import ConfigError, DataError, choose

WEIGHT_FLOOR = float(np.finfo(np.float64).eps)  # scikit-learn's floor on normalised weights
CHANCE_MARGIN = 1e-5  # an error this close below 1 - 1/K counts as chance (float32 sums)


@flax.struct.dataclass
class AdaBoost:
  """A boosted ensemble of capacity T rounds.

  trees: :class:`decision_tree.Tree` with arrays stacked (T, M) (value (T, M, K) class shares);
  alpha_: (T,) float32 vote weight of each round (0 for rounds not kept); errors_: (T,) float32
  weighted training error of each round (1 for rounds not kept); n_rounds_: () int32 rounds
  kept; stopped_: () int32, 1 once a stop rule ended boosting (no later round is grown);
  learning_rate: () float32. classes_: the K labels behind the class indices, sorted (static,
  any kind of label); n_features_in_: d (static); criterion: 'gini' or 'entropy' (static).
  """

  trees: dt.Tree
  alpha_: jax.Array
  errors_: jax.Array
  n_rounds_: jax.Array
  stopped_: jax.Array
  learning_rate: jax.Array
  classes_: tuple = flax.struct.field(pytree_node=False, default=(0, 1))
  n_features_in_: int = flax.struct.field(pytree_node=False, default=1)
  criterion: str = flax.struct.field(pytree_node=False, default="gini")

  @property
  def n_estimators(self) -> int:
    return self.alpha_.shape[0]

  @property
  def n_classes(self) -> int:
    return len(self.classes_)


# ----------------------------------------------------------------------------- hyperparameters


def check_n_estimators(n_estimators) -> int:
  count = validation.as_integer(n_estimators)
  if count is None or count < 1:
    raise ConfigError(f"n_estimators={n_estimators!r} must be an integer >= 1.")
  return count


def check_learning_rate(learning_rate) -> float:
  if (isinstance(learning_rate, (bool, np.bool_))
      or not isinstance(learning_rate, (int, float, np.integer, np.floating))
      or not (np.isfinite(learning_rate) and learning_rate > 0)):
    raise ConfigError(f"learning_rate={learning_rate!r} must be a finite number > 0.")
  return float(learning_rate)


def _check_criterion(criterion: str) -> str:
  choose("criterion", criterion, dt.CLASSIFICATION)
  return criterion


# ----------------------------------------------------------------------------- rounds


def init(bins: dt.Bins, n_samples: int, classes, *, n_estimators: int = 50,
         learning_rate: float = 1.0, max_depth: int = 1,
         criterion: str = "gini") -> AdaBoost:
  """Parameters of capacity ``n_estimators`` rounds with none run yet: every tree empty (one
  leaf), alpha 0, errors 1.

  bins: from :func:`decision_tree.bin_features` on the training X (d = its features);
  n_samples: the training rows n, which fix the trees' node count M (the rows that
  :func:`boost_round` gets must be as many); classes: the K >= 2 labels (a sequence of any kind,
  or an int K for the labels 0..K-1). Hyperparameters are checked as by :func:`fit`.
  """
  classes = _classes_tuple(classes)
  if len(classes) < 2:
    raise ConfigError(f"classes={classes!r}: AdaBoost needs at least two classes.")
  T = check_n_estimators(n_estimators)
  rate = check_learning_rate(learning_rate)
  depth = dt.check_depth(max_depth)
  criterion = _check_criterion(criterion)
  tree = _empty_tree(bins, n_samples, len(classes), depth)
  trees = jax.tree.map(lambda a: jnp.broadcast_to(a, (T,) + a.shape), tree)
  return AdaBoost(trees, jnp.zeros((T,), jnp.float32), jnp.ones((T,), jnp.float32),
                  jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32), jnp.float32(rate), classes,
                  int(bins.edges.shape[0]), criterion)


def _classes_tuple(classes) -> tuple:
  """Labels as ``AdaBoost.classes_`` holds them: a tuple of Python scalars (an int K: 0..K-1)."""
  if validation.as_integer(classes) is not None:
    return tuple(range(validation.as_integer(classes)))
  return tuple(np.asarray(classes).tolist())


def _empty_tree(bins: dt.Bins, n_samples: int, n_classes: int, depth: int) -> dt.Tree:
  """A lone leaf predicting class 0, shaped (and typed) as ``grow`` shapes n_samples' trees."""
  d = bins.edges.shape[0]
  shape = jax.eval_shape(
      lambda Xb, stats: dt.grow(Xb, stats, bins, dt.CLASSIFICATION["gini"], max_depth=depth),
      jax.ShapeDtypeStruct((n_samples, d), jnp.uint8),
      jax.ShapeDtypeStruct((n_samples, n_classes + 1), jnp.float32))
  fill = dict(feature=-1, bin=-1, threshold=jnp.inf)
  return dt.Tree(**{name: jnp.full(getattr(shape, name).shape, fill.get(name, 0),
                                   getattr(shape, name).dtype)
                    for name in ("feature", "bin", "threshold", "left", "value", "gain", "count")},
                 depth=depth)


def _classify_binned(tree: dt.Tree, Xb: jax.Array) -> jax.Array:
  """One tree's class indices (n,) for binned rows Xb (n, d)."""
  return jnp.argmax(tree.value[dt.apply_binned(tree, Xb)], 1)


def _log_base(base_weight: jax.Array) -> jax.Array:
  return jnp.where(base_weight > 0, jnp.log(jnp.where(base_weight > 0, base_weight, 1.0)),
                   -jnp.inf)


def _normalise(log_w: jax.Array) -> jax.Array:
  """Log-weights (n,) (-inf for zero base weight) -> weights summing to 1, floored at eps."""
  positive = log_w > -jnp.inf
  w = jnp.exp(log_w - jax.nn.logsumexp(log_w))
  return jnp.where(positive, jnp.maximum(w, WEIGHT_FLOOR), 0.0)


@jax.jit
def sample_weights(params: AdaBoost, Xb: jax.Array, y: jax.Array,
                   base_weight: jax.Array) -> jax.Array:
  """The boosting weights (n,) that the next round is grown on, from the rounds so far.

  Xb: (n, d) training bins (``apply_bins(bins, X)``); y: (n,) class indices; base_weight: (n,)
  non-negative, not all zero (ones, or the ``sample_weight`` of :func:`fit`). w_i is
  b_i exp(sum_m alpha_m [h_m(x_i) != y_i]) normalised and floored (module docstring), summed in
  round order exactly as ``fit``'s scan does (rounds with alpha 0 add nothing), so the rows may
  come in any order. Pure and jittable.
  """
  y = jnp.asarray(y, jnp.int32)

  def add(log_w, round_):
    tree, alpha = round_
    return log_w + alpha * (_classify_binned(tree, Xb) != y), None

  log_w = jax.lax.scan(add, _log_base(jnp.asarray(base_weight, jnp.float32)),
                       (params.trees, params.alpha_))[0]
  return _normalise(log_w)


def _grow_round(params: AdaBoost, Xb, y, w, bins, live):
  """Round outcome on weights w (n,): (tree, alpha, error, kept, stop, miss (n,) float32).

  ``live`` (() bool) says whether the round runs at all; a round that does not, or is no better
  than chance, gives an empty tree, alpha 0 and error 1. See the module docstring's rules.
  """
  n, K = Xb.shape[0], params.n_classes
  depth = params.trees.depth
  empty = _empty_tree(bins, n, K, depth)
  rule = dt.CLASSIFICATION[params.criterion]

  def grow(_):
    tree = dt.grow(Xb, dt.sample_stats(y, w, "classification", K), bins, rule, max_depth=depth)
    miss = (_classify_binned(tree, Xb) != y).astype(jnp.float32)
    return tree, jnp.sum(w * miss) / jnp.sum(w), miss

  def skip(_):
    return empty, jnp.ones((), jnp.float32), jnp.zeros((n,), jnp.float32)

  tree, err, miss = jax.lax.cond(live, grow, skip, None)
  perfect = err <= 0
  kept = live & (perfect | (err < 1 - 1 / K - CHANCE_MARGIN))
  safe = jnp.clip(err, 1e-30, 1.0)
  alpha = jnp.where(perfect, 1.0,
                    params.learning_rate * (jnp.log((1 - safe) / safe) + np.log(K - 1.0)))
  alpha = jnp.where(kept, alpha, 0.0).astype(jnp.float32)
  tree = jax.tree.map(lambda a, b: jnp.where(kept, a, b), tree, empty)
  stop = live & (perfect | ~kept)
  return tree, alpha, jnp.where(kept, err, 1.0), kept, stop, miss


@jax.jit
def boost_round(params: AdaBoost, Xb: jax.Array, y: jax.Array, w: jax.Array, t,
                bins: dt.Bins) -> AdaBoost:
  """``params`` with round t (a scalar, may be traced) grown on weights w.

  Xb: (n, d) training bins (``apply_bins(bins, X)``, n as given to :func:`init`); y: (n,) class
  indices; w: (n,) ``sample_weights(params, Xb, y, base_weight)``; bins: the training
  :class:`decision_tree.Bins`. The round runs only when t == ``n_rounds_`` and boosting has not
  stopped; otherwise ``params`` come back unchanged (so extra calls after a stop, or a repeated
  t, are harmless). Pure and jittable; hyperparameters come from ``params``.
  """
  y = jnp.asarray(y, jnp.int32)
  t = jnp.asarray(t, jnp.int32)
  live = (params.stopped_ == 0) & (t == params.n_rounds_) & (t < params.n_estimators)
  tree, alpha, error, kept, stop, _ = _grow_round(params, Xb, y, w, bins, live)
  at = jnp.minimum(t, params.n_estimators - 1)
  put = lambda stack, value: stack.at[at].set(jnp.where(live, value, stack[at]))
  return params.replace(trees=jax.tree.map(put, params.trees, tree),
                        alpha_=put(params.alpha_, alpha), errors_=put(params.errors_, error),
                        n_rounds_=params.n_rounds_ + kept.astype(jnp.int32),
                        stopped_=params.stopped_ | stop.astype(jnp.int32))


@jax.jit
def _fit(params: AdaBoost, X, y, base_weight, bins) -> AdaBoost:
  """All T rounds in one scan from empty ``params``, carrying the log-weights."""
  Xb = dt.apply_bins(bins, X)

  def step(carry, _):
    log_w, n_rounds, stopped = carry
    tree, alpha, error, kept, stop, miss = _grow_round(params, Xb, y, _normalise(log_w), bins,
                                                       ~stopped)
    carry = (log_w + alpha * miss, n_rounds + kept.astype(jnp.int32), stopped | stop)
    return carry, (tree, alpha, error)

  start = (_log_base(base_weight), jnp.zeros((), jnp.int32), jnp.zeros((), bool))
  (_, n_rounds, stopped), (trees, alpha, errors) = jax.lax.scan(
      step, start, jnp.arange(params.n_estimators))
  return params.replace(trees=trees, alpha_=alpha, errors_=errors, n_rounds_=n_rounds,
                        stopped_=stopped.astype(jnp.int32))


def fit(X, y, *, n_estimators: int = 50, learning_rate: float = 1.0, max_depth: int = 1,
        criterion: str = "gini", max_bins: int = 256, sample_weight=None) -> AdaBoost:
  """Boosts ``n_estimators`` rounds of depth-``max_depth`` trees on X (n, d) and labels y (n,).

  Labels may be of any kind (numbers, strings, ...); ``classes_`` keeps them sorted and
  :func:`predict` returns them. ``sample_weight`` (n,) gives the base weights b (default ones).
  Features are binned once (:func:`decision_tree.bin_features` with ``max_bins``). Raises
  DataError when the very first tree is no better than chance (see the module docstring).
  """
  T = check_n_estimators(n_estimators)
  rate = check_learning_rate(learning_rate)
  depth = dt.check_depth(max_depth)
  criterion = _check_criterion(criterion)
  classes, y = dt.encode_targets(y, "classification")
  X, y = validation.check_X_y(X, y, classification=True, classes=classes)
  n, d = X.shape
  base = dt.check_sample_weight(sample_weight, n)
  bins = dt.bin_features(X, max_bins)
  dt.check_growth(n, d, bins.max_bins, len(classes) + 1, depth, 1)
  params = init(bins, n, len(classes), n_estimators=T, learning_rate=rate, max_depth=depth,
                criterion=criterion)
  params = _fit(params, X, y, base, bins).replace(classes_=_classes_tuple(classes))
  if int(params.n_rounds_) == 0:
    raise DataError(
        f"the first tree is worse than random guessing (weighted training error >= 1 - 1/K = "
        f"{1 - 1 / len(classes):.3g}); the ensemble cannot be fit: no split of X separates the "
        "classes better than chance.")
  return params


# ----------------------------------------------------------------------------- prediction


def _check_query(params: AdaBoost, X) -> jax.Array:
  return validation.check_query(X, params.n_features_in_, "the AdaBoost model")


def _indexed(params: AdaBoost) -> AdaBoost:
  """params with the labels 0..K-1: one compilation serves every encoding of K labels."""
  return params.replace(classes_=tuple(range(params.n_classes)))


def _round_votes(params: AdaBoost, X: jax.Array):
  """Scan over the rounds in order: (sum_m alpha_m onehot(h_m(x)) (m, K), the predicted class
  index after every round (T, m), the argmax of the running sum; ties to the first class)."""
  K = params.n_classes

  def add(total, round_):
    tree, alpha = round_
    h = jnp.argmax(tree.value[dt.apply(tree, X)], 1)
    total = total + alpha * jax.nn.one_hot(h, K)
    return total, jnp.argmax(total, 1)

  return jax.lax.scan(add, jnp.zeros((X.shape[0], K), jnp.float32),
                      (params.trees, params.alpha_))


@jax.jit
def _votes(params: AdaBoost, X: jax.Array) -> jax.Array:
  return _round_votes(params, X)[0]


@jax.jit
def _staged_index(params: AdaBoost, X: jax.Array) -> jax.Array:
  return _round_votes(params, X)[1]


def decision_function(params: AdaBoost, X) -> jax.Array:
  """X (m, d) -> (m, K) the normalised SAMME vote (module docstring), columns as ``classes_``;
  scikit-learn's ``decision_function`` for K > 2, its binary one is column 1 - column 0."""
  X = _check_query(params, X)
  K, total = params.n_classes, jnp.sum(params.alpha_)
  votes = _votes(_indexed(params), X)
  return (K * votes - total) / ((K - 1) * jnp.where(total > 0, total, 1.0))


def predict_proba(params: AdaBoost, X) -> jax.Array:
  """X (m, d) -> (m, K) softmax(decision / (K - 1)), columns as ``classes_`` (scikit-learn's
  SAMME ``predict_proba``)."""
  return jax.nn.softmax(decision_function(params, X) / (params.n_classes - 1), axis=1)


def _labels(params: AdaBoost, index: jax.Array):
  """Class indices (any shape) -> labels: a jax array for numeric labels (jittable), else a
  NumPy array."""
  classes = np.asarray(params.classes_)
  if classes.dtype.kind in "biuf":
    return jnp.asarray(classes)[index]
  return classes[np.asarray(index)]


def predict(params: AdaBoost, X):
  """X (m, d) -> (m,) labels from ``classes_``: the class of largest alpha-weighted vote (the
  argmax of :func:`decision_function`, ties to the first class). Jittable for numeric labels
  (other labels come back as a NumPy array)."""
  votes = _votes(_indexed(params), _check_query(params, X))
  return _labels(params, jnp.argmax(votes, 1))


def _accuracy(prediction, y) -> jax.Array:
  """Mean over the last axis of prediction (..., m) == y (m,)."""
  if isinstance(prediction, np.ndarray):
    return jnp.asarray(np.mean(prediction == np.asarray(y), -1), jnp.float32)
  return jnp.mean(prediction == jnp.asarray(y), -1)


def score(params: AdaBoost, X, y) -> jax.Array:
  """Accuracy: the fraction of rows whose predicted label equals y (m,)."""
  prediction = predict(params, X)
  validation.check_targets(y, prediction.shape[0])
  return _accuracy(prediction, y)


def staged_score(params: AdaBoost, X, y) -> jax.Array:
  """(T,) accuracy on X (m, d), y (m,) of the ensemble of rounds 0..t, for each t (rounds after
  a stop repeat the last value; the last entry is :func:`score`): the "error against rounds"
  curve (scikit-learn's ``staged_score``). Memory O(T m)."""
  X = _check_query(params, X)
  validation.check_targets(y, X.shape[0])
  return _accuracy(_labels(params, _staged_index(_indexed(params), X)), y)


def feature_importances(params: AdaBoost) -> jax.Array:
  """(d,) alpha-weighted mean of the trees' normalised gain importances (scikit-learn's
  ``feature_importances_``)."""
  each = jax.vmap(lambda tree: dt.importances(tree, params.n_features_in_))(params.trees)
  total = jnp.sum(params.alpha_)
  return params.alpha_ @ each / jnp.where(total > 0, total, 1.0)
