"""The CLIP tokenizers (m2m_jax.data.text): OpenAI's BPE against OpenAI's ``clip.tokenize``,
the word vocabulary by hand, and the errors a user sees."""

import importlib.util
import pickle
import sys

import numpy as np
import pytest

from conftest import openai_clip
from m2m_jax.data import text
from m2m_jax.data.text import BPETokenizer, WordTokenizer
from m2m_jax.errors import ConfigError, DataError

LONG = " ".join(f"word{i} and, more" for i in range(200))  # about 800 BPE tokens
TEXTS = [
    "a photo of a dog",
    "A red circle above a Blue Square",
    "Hello, world!!! ... (ok)?",
    "it's, don't, we'll, I'm, they've, you'd, we're",
    "IT'S DON'T",
    "2024 was 365 days; pi is 3.14159",
    "café naïve résumé Zürich",
    "cafÃ© mojibake",  # ftfy repairs it to café
    "東京タワー",
    "🐶🐱 and 👍🏽",
    "Καλημέρα κόσμε",
    "Привет, мир",
    "مرحبا بالعالم",
    "&amp; &lt;b&gt;bold&lt;/b&gt; &amp;amp;",
    "  many   spaces\n\nnew lines\t\ttabs  ",
    "MiXeD CaSe WoRdS",
    "İstanbul Straße it'ſ",
    "<|endoftext|> in a caption",  # becomes the eot id itself, as in OpenAI's code
    "snake_case and under_scores __",
    LONG,
]


@pytest.fixture(scope="module")
def clip():
  return openai_clip()


@pytest.fixture(scope="module")
def bpe():
  return BPETokenizer()


@pytest.mark.parametrize("context_length", [77, 16])
def test_bpe_equals_openai(bpe, clip, context_length):
  expected = clip.tokenize(TEXTS, context_length=context_length, truncate=True).numpy()
  ids = bpe.encode(TEXTS, context_length=context_length, truncate=True)
  assert ids.dtype == np.int32 and ids.shape == (len(TEXTS), context_length)
  np.testing.assert_array_equal(ids, expected)
  assert ids[-1, -1] == bpe.eot_id  # the long text, cut, ends with its eot


def test_bpe_vocabulary(bpe):
  assert (bpe.vocab_size, bpe.sot_id, bpe.eot_id, bpe.pad_id) == (49408, 49406, 49407, 0)
  assert bpe.vocabulary[0] == "!" and bpe.vocabulary[256] == "!</w>"
  assert bpe.vocabulary[-2:] == ("<|startoftext|>", "<|endoftext|>")


def test_bpe_decode(bpe):
  ids = bpe.encode(["Hello, World! café 東京 🐶", "it's  2024"])
  assert bpe.decode(ids[0]) == "hello , world ! café 東京 🐶"
  assert bpe.decode(ids[1]) == "it 's 2 0 2 4"
  assert bpe.decode(bpe.encode("!")[0]) == "!"  # the token "!" is id 0, like the padding


def test_bpe_is_a_value(bpe):
  again = BPETokenizer()
  assert again == bpe and hash(again) == hash(bpe)
  assert pickle.loads(pickle.dumps(bpe)) == bpe
  assert len(pickle.dumps(bpe)) < 1000  # the fields only, not the 49,408-token tables


def test_too_long_is_refused(bpe, clip):
  with pytest.raises(RuntimeError):
    clip.tokenize([LONG])
  with pytest.raises(DataError, match=r"^caption 0 \('word0 and, more word1 .*\.\.\.'\) is "
                     r"\d+ tokens long with its start and end tokens, more than the context "
                     r"length 77; shorten it or pass truncate=True\.$"):
    bpe.encode([LONG])
  with pytest.raises(DataError, match=r"caption 1 .* is 7 tokens long .* context length 6;"):
    bpe.encode(["a dog", "a red circle on grass"], context_length=6)
  assert bpe.encode(["a red circle on"], context_length=6).tolist() == [
      [49406, 320, 736, 7117, 525, 49407]]  # exactly fits


@pytest.mark.parametrize("caption", ["", "   ", "\n\t "])
def test_empty_caption_is_refused(bpe, caption):
  words = WordTokenizer.build(["a dog"])
  for tokenizer in (bpe, words):
    with pytest.raises(DataError, match=r"^caption 1 \(.*\) is empty or only whitespace; every "
                       r"example needs a caption with at least one word\.$"):
      tokenizer.encode(["a dog", caption])


def test_bad_arguments(bpe):
  with pytest.raises(DataError, match="caption 0 is a bytes, not a string"):
    bpe.encode([b"a dog"])
  with pytest.raises(ConfigError, match="context_length 1 leaves no room"):
    bpe.encode(["a dog"], context_length=1)
  with pytest.raises(DataError, match="decode takes one row"):
    bpe.decode(bpe.encode(["a dog"]))
  assert bpe.encode("a dog").shape == (1, 77)  # one string is one caption, as in clip.tokenize


CAPTIONS = ["A red circle.", "a blue square", "Red circle, red square!"]
# red: 3; a, circle, square: 2; then !, ",", ".", blue: 1 (by count, then alphabetical).
VOCABULARY = ("<pad>", "<sot>", "<eot>", "<unk>", "red", "a", "circle", "square", "!", ",", ".",
              "blue")


def test_word_vocabulary_by_hand():
  words = WordTokenizer.build(CAPTIONS)
  assert words.vocabulary == VOCABULARY
  assert (words.vocab_size, words.pad_id, words.sot_id, words.eot_id, words.unk_id) == (
      12, 0, 1, 2, 3)
  ids = words.encode(["a red square", "Green circle!", "Blue, blue."], context_length=6)
  np.testing.assert_array_equal(ids, [[1, 5, 4, 7, 2, 0],
                                      [1, 3, 6, 8, 2, 0],  # green is unknown
                                      [1, 11, 9, 11, 10, 2]])
  assert WordTokenizer.build(CAPTIONS, min_count=2).vocabulary == VOCABULARY[:8]


def test_word_round_trip_and_truncate():
  words = WordTokenizer.build(CAPTIONS)
  assert words.decode(words.encode(["A  red circle, a blue square!"])[0]) == (
      "a red circle , a blue square !")
  assert words.decode(words.encode(["a green circle"])[0]) == "a <unk> circle"
  np.testing.assert_array_equal(words.encode(["red " * 10], context_length=4, truncate=True),
                                [[1, 4, 4, 2]])
  with pytest.raises(DataError, match="is 12 tokens long"):
    words.encode(["red " * 10], context_length=4)


def test_word_tokenizer_is_a_value():
  words = WordTokenizer.build(CAPTIONS)
  again = WordTokenizer.build(list(reversed(CAPTIONS)))
  assert words == again and hash(words) == hash(again)
  assert words != WordTokenizer.build(CAPTIONS, min_count=2)
  assert {words: 1}[again] == 1
  with pytest.raises(AttributeError):
    words.vocabulary = ()
  words.encode(["a red circle"])  # fills its lookup table
  assert pickle.loads(pickle.dumps(words)) == words
  with pytest.raises(ConfigError, match="starts with <pad>, <sot>, <eot>, <unk>"):
    WordTokenizer(("red", "a"))
  with pytest.raises(DataError, match="captions is one string"):
    WordTokenizer.build("a red circle")


def test_missing_clip_package(monkeypatch):
  monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
  with pytest.raises(ConfigError, match=r"^the CLIP BPE tokenizer reads "
                     r"bpe_simple_vocab_16e6\.txt\.gz from OpenAI's clip package, which is not "
                     r"installed; install it with pip install \"m2m_jax\[clip\]\"\.$"):
    BPETokenizer()
  with pytest.raises(ConfigError):
    text.openai_bpe_path()


@pytest.mark.parametrize("module", ["ftfy", "regex"])
def test_missing_optional_dependency(monkeypatch, module):
  monkeypatch.setitem(sys.modules, module, None)  # `import module` raises ImportError
  with pytest.raises(ConfigError, match=rf"^the CLIP BPE tokenizer needs the {module} package, "
                     r"which is not installed; install it with pip install \"m2m_jax\[clip\]\"\.$"):
    BPETokenizer()
