"""The ``tfds:<name>`` path on tensorflow-datasets' mock data; nothing here touches the network.
Every tfds preset trains on mock data in the contract suite (test_contract.py)."""

import time

import numpy as np
import pytest

import m2m_jax.data
from m2m_jax.errors import ConfigError, DataError

MOCK_TFDS_EXAMPLES = 128  # a split


@pytest.mark.parametrize("name, shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_load(mock_tfds, tmp_path, name: str, shape: tuple[int, ...]):
  ds = m2m_jax.data.load(f"tfds:{name}", data_dir=str(tmp_path))
  assert (ds.name, ds.num_classes) == (f"tfds:{name}", 10)
  assert len(ds.train) == len(ds.test) == MOCK_TFDS_EXAMPLES
  batch = ds.test[np.arange(5, 13)]
  assert batch["x"].dtype == np.float32 and batch["x"].shape == (8, *shape)
  assert 0.0 <= batch["x"].min() and batch["x"].max() <= 1.0 and batch["x"].max() > 0.5
  assert batch["y"].dtype == np.int32 and batch["y"].shape == (8,)
  assert np.all((0 <= batch["y"]) & (batch["y"] < 10))


def test_unknown_name():
  with pytest.raises(DataError, match="no dataset 'no_such_dataset'"):
    m2m_jax.data.load("tfds:no_such_dataset")


def test_not_prepared_fails_fast_without_download(tmp_path):
  start = time.monotonic()
  with pytest.raises(DataError, match="'mnist' is not prepared"):
    m2m_jax.data.load("tfds:mnist", data_dir=str(tmp_path))
  assert time.monotonic() - start < 10
  assert not any(tmp_path.iterdir())  # nothing was downloaded or written


class _FakeSource(list):
  def __getitems__(self, keys):
    return [self[k] for k in keys]


def test_split_reads_tabular_features_and_real_targets():
  from m2m_jax.data.tfds_source import TfdsSplit
  records = [{"features": {"b": 2.0 * i, "a": float(i)}, "quality": i + 3} for i in range(4)]
  split = TfdsSplit(_FakeSource(records), keys={"x": "features", "y": "quality"})
  batch = split[np.array([3, 1])]
  np.testing.assert_array_equal(batch["x"], [[3.0, 6.0], [1.0, 2.0]])  # sorted keys: a, b
  assert batch["x"].dtype == np.float32 and batch["y"].dtype == np.int32
  real = TfdsSplit(_FakeSource([{"image": np.full((2, 2), 255, np.uint8), "label": 0.5}]))[[0]]
  assert real["x"].max() == 1.0 and real["y"].dtype == np.float32


def test_unknown_feature_is_refused(mock_tfds, tmp_path):
  with pytest.raises(DataError, match="'mnist' has no feature 'features'; its features are: image, label"):
    m2m_jax.data.load("tfds:mnist", data_dir=str(tmp_path), x_key="features")




def test_any_feature_keys_with_variable_lengths_padded(mock_tfds, tmp_path):
  """voc's objects: boxes and labels of variable number, read as padded fields with masks."""
  keys = {"x": "image", "boxes": "objects/bbox", "labels": "objects/label"}
  ds = m2m_jax.data.load("tfds:voc/2012", data_dir=str(tmp_path), keys=keys, image_size=16,
                         max_lengths={"boxes": 12, "labels": 12})
  assert ds.max_lengths == {"boxes": 12, "labels": 12} and ds.image_size == (16, 16)
  assert ds.num_classes == 20 and ds.class_names[:3] == ("aeroplane", "bicycle", "bird")
  batch = ds.train[np.arange(4)]
  assert set(batch) == {"x", "boxes", "boxes_mask", "labels", "labels_mask"}
  assert batch["x"].shape == (4, 16, 16, 3) and batch["x"].dtype == np.float32
  assert batch["boxes"].shape == (4, 12, 4) and batch["boxes"].dtype == np.float32
  assert batch["labels"].shape == batch["labels_mask"].shape == (4, 12)
  assert batch["boxes_mask"].dtype == bool
  source = ds.train.source.__getitems__(list(range(4)))
  for i, record in enumerate(source):  # every real box, in order, then zeros
    n = min(len(record["objects"]["bbox"]), 12)
    assert batch["boxes_mask"][i].sum() == n
    np.testing.assert_array_equal(batch["boxes"][i, :n], record["objects"]["bbox"][:n])
    assert not batch["boxes"][i, n:].any()


def test_unknown_nested_feature_and_unread_max_length_are_refused(mock_tfds, tmp_path):
  with pytest.raises(DataError, match="no feature 'objects/box'; its features are: image, "
                                      "image/filename, labels, labels_no_difficult, objects/bbox"):
    m2m_jax.data.load("tfds:voc/2012", data_dir=str(tmp_path), keys={"boxes": "objects/box"})
  with pytest.raises(ConfigError, match="max_lengths names 'boxes', which is not one of the "
                                        "keys read: x, y"):
    m2m_jax.data.load("tfds:mnist", data_dir=str(tmp_path), max_lengths={"boxes": 4})


def test_captions_become_bpe_tokens(mock_tfds, tmp_path):
  """coco_captions' sequence of captions an image: texts_per_example of them (cycled where an
  image has fewer) as OpenAI's BPE ids, (N, K, T), with the tokenizer on the dataset."""
  ds = m2m_jax.data.load("tfds:coco_captions", data_dir=str(tmp_path), train_split="train",
                         test_split="val", keys={"x": "image", "tokens": "captions/text"},
                         image_size=24, texts_per_example=3, context_length=12)
  batch = ds.test[np.arange(4)]
  assert batch["x"].shape == (4, 24, 24, 3) and batch["tokens"].shape == (4, 3, 12)
  assert batch["tokens"].dtype == np.int32
  tok = ds.tokenizer
  assert (tok.vocab_size, tok.eot_id) == (49408, 49407)
  record = ds.test.source.__getitems__([0])[0]
  texts = [str(t) for t in record["captions"]["text"]]
  expected = [texts[i % len(texts)] for i in range(3)]
  np.testing.assert_array_equal(batch["tokens"][0], tok.encode(expected, 12, truncate=True))
  assert np.all((batch["tokens"] == tok.eot_id).sum(-1) == 1)
