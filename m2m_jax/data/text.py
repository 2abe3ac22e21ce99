"""Text tokenizers for CLIP: captions -> (B, context_length) int32 ids, in OpenAI's layout.

Two vocabularies share one layout: each row is ``[sot] + tokens + [eot]`` followed by zeros,
as OpenAI's ``clip.tokenize`` lays it out; a text encoder reads the features at the eot.

- :class:`WordTokenizer`: a word-level vocabulary built from the training captions themselves
  (lower case; words and single punctuation marks). It needs nothing installed and suits a
  small closed world such as the synthetic shapes captions, where a few dozen words say all
  there is: a small embedding table, every token a whole word, ``<unk>`` for the rest.
- :class:`BPETokenizer`: OpenAI CLIP's byte-level byte-pair encoding (49,408 tokens), read
  from the merges file that OpenAI's ``clip`` package ships. Any text has an encoding (bytes
  are the fallback), and its ids are the ones OpenAI's pretrained text encoder was trained on,
  so it is the tokenizer to use with imported weights. It needs ``pip install "m2m_jax[clip]"``.

Both are frozen dataclasses (hashable, equal when built from the same data), so a
:class:`~m2m_jax.data.core.Dataset` can carry one in its metadata. Both have the same
``encode`` / ``decode`` and the fields ``vocabulary``, ``vocab_size``, ``pad_id`` (0),
``sot_id`` and ``eot_id``.
"""

import abc
import collections
import dataclasses
import functools
import gzip
import html
import importlib
import importlib.util
import os
import re
from typing import Sequence

import numpy as np

from m2m_jax.errors import ConfigError, DataError


class _Tokenizer(abc.ABC):
  """The part both tokenizers share: ``encode`` and ``decode`` over ``vocabulary``, with the
  start and end tokens ``SOT`` and ``EOT``; a subclass turns one text into ids (``_ids``) and
  ids back into text (``_text``)."""

  SOT: str
  EOT: str
  vocabulary: tuple[str, ...]

  @functools.cached_property
  def _index(self) -> dict[str, int]:
    """token -> id."""
    return {token: i for i, token in enumerate(self.vocabulary)}

  @property
  def vocab_size(self) -> int:
    """The number of tokens, specials included: the ids are 0 .. vocab_size - 1."""
    return len(self.vocabulary)

  @property
  def pad_id(self) -> int:
    """The id that fills a row after its eot: 0."""
    return 0

  @property
  def sot_id(self) -> int:
    """The id each row starts with."""
    return self._index[self.SOT]

  @property
  def eot_id(self) -> int:
    """The id that ends each text (the text encoder reads its features there)."""
    return self._index[self.EOT]

  @abc.abstractmethod
  def _ids(self, text: str) -> list[int]:
    """One text's token ids, without the start and end tokens."""

  @abc.abstractmethod
  def _text(self, ids: list[int]) -> str:
    """The text of token ids (specials and padding already dropped)."""

  def encode(self, texts: Sequence[str], context_length: int = 77,
             truncate: bool = False) -> np.ndarray:
    """Token ids of ``texts``, as OpenAI's ``clip.tokenize`` lays them out.

    Args:
      texts: B captions (a single string counts as one caption).
      context_length: the length of each row (77 for OpenAI's models).
      truncate: cut a text longer than the context to its first ``context_length - 1`` ids and
        end it with the eot; without it such a text raises :class:`DataError`.

    Returns:
      int32 (B, context_length): ``[sot_id] + ids + [eot_id]`` then ``pad_id`` (0) to the end.

    Raises:
      DataError: a caption that is not a string, holds no tokens (empty or only whitespace), or
        is longer than the context without ``truncate``.
    """
    if isinstance(texts, str):
      texts = [texts]
    if context_length < 2:
      raise ConfigError(f"context_length {context_length} leaves no room for the start and "
                        "end tokens; use at least 2 (OpenAI's CLIP uses 77).")
    rows = np.full((len(texts), context_length), self.pad_id, np.int32)
    for i, text in enumerate(texts):
      if not isinstance(text, str):
        raise DataError(f"caption {i} is a {type(text).__name__}, not a string.")
      ids = self._ids(text)
      if not ids:
        raise DataError(f"caption {i} ({text!r}) is empty or only whitespace; every example "
                        "needs a caption with at least one word.")
      ids = [self.sot_id, *ids, self.eot_id]
      if len(ids) > context_length:
        if not truncate:
          raise DataError(f"caption {i} ({_shorten(text)!r}) is {len(ids)} tokens long with "
                          f"its start and end tokens, more than the context length "
                          f"{context_length}; shorten it or pass truncate=True.")
        ids = [*ids[:context_length - 1], self.eot_id]
      rows[i, :len(ids)] = ids
    return rows

  def decode(self, ids: Sequence[int]) -> str:
    """The text of one row of :meth:`encode`'s output (for figures and logs).

    Args:
      ids: 1-D token ids; a leading sot is dropped, and the first eot ends the text (the
        padding after it is ignored).

    Returns:
      The text, lower case as encoded; the word tokenizer puts one space between tokens.
    """
    ids = np.asarray(ids)
    if ids.ndim != 1:
      raise DataError(f"decode takes one row of ids (1-D), not an array of shape {ids.shape}.")
    ids = ids.tolist()
    if self.eot_id in ids:
      ids = ids[:ids.index(self.eot_id)]
    return self._text([i for i in ids if i != self.sot_id])

  def __getstate__(self) -> dict:
    # Pickle and copy the fields only, not the tables and caches derived from them.
    return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}


def _shorten(text: str, width: int = 40) -> str:
  """``text`` on one line, cut to about ``width`` characters."""
  text = " ".join(text.split())
  return text if len(text) <= width else text[:width - 3] + "..."


# ----------------------------------------------------------------------------------------------
# Word level

PAD, SOT, EOT, UNK = "<pad>", "<sot>", "<eot>", "<unk>"
_WORD_SPECIALS = (PAD, SOT, EOT, UNK)
_WORDS = re.compile(r"\w+|[^\w\s]")  # a run of letters/digits, or one punctuation mark


def _words(text: str) -> list[str]:
  """The word tokens of ``text``: lower case, ``"Red circle!"`` -> ``['red', 'circle', '!']``."""
  return _WORDS.findall(text.lower())


@dataclasses.dataclass(frozen=True)
class WordTokenizer(_Tokenizer):
  """A word-level vocabulary built from captions (see :meth:`build`).

  Attributes:
    vocabulary: id -> token; ids 0..3 are ``<pad>``, ``<sot>``, ``<eot>``, ``<unk>``, then the
      words, the most frequent first (ties in alphabetical order). A word that is not in it
      encodes as ``<unk>``.
  """

  vocabulary: tuple[str, ...]
  SOT, EOT = SOT, EOT

  def __post_init__(self):
    object.__setattr__(self, "vocabulary", tuple(self.vocabulary))
    if self.vocabulary[:4] != _WORD_SPECIALS or len(set(self.vocabulary)) != self.vocab_size:
      raise ConfigError(f"a word vocabulary starts with {', '.join(_WORD_SPECIALS)} and holds "
                        "each token once; build one with WordTokenizer.build(captions).")

  @classmethod
  def build(cls, captions: Sequence[str], min_count: int = 1) -> "WordTokenizer":
    """The vocabulary of ``captions``: every word seen at least ``min_count`` times.

    Words are lower case runs of letters and digits, and each punctuation mark is a token of its
    own. The order is deterministic: by count, descending, then alphabetical.
    """
    if isinstance(captions, str):
      raise DataError("captions is one string; pass a sequence of captions.")
    if min_count < 1:
      raise ConfigError(f"min_count {min_count} is not a positive count; use 1 to keep every "
                        "word.")
    counts = collections.Counter(word for caption in captions for word in _words(caption))
    words = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
    return cls((*_WORD_SPECIALS, *words))

  @property
  def unk_id(self) -> int:
    """The id of words outside the vocabulary: 3."""
    return self._index[UNK]

  def _ids(self, text: str) -> list[int]:
    return [self._index.get(word, self.unk_id) for word in _words(text)]

  def _text(self, ids: list[int]) -> str:
    return " ".join(self.vocabulary[i] for i in ids if i != self.pad_id)


# ----------------------------------------------------------------------------------------------
# OpenAI CLIP's byte-level BPE

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
# OpenAI's count: 49,152 tokens, less the 256 single bytes and the 2 specials; the file holds more.
_MERGES = 49152 - 256 - 2
_INSTALL = "pip install \"m2m_jax[clip]\""


def openai_bpe_path() -> str:
  """The path of OpenAI's merges file inside its ``clip`` package, found without importing it
  (importing ``clip`` imports torch and torchvision)."""
  spec = importlib.util.find_spec("clip")
  for folder in (spec and spec.submodule_search_locations) or ():
    path = os.path.join(folder, BPE_FILE)
    if os.path.isfile(path):
      return path
  raise ConfigError(f"the CLIP BPE tokenizer reads {BPE_FILE} from OpenAI's clip package, "
                    f"which is not installed; install it with {_INSTALL}.")


def _require(module: str):
  """``import module``, or a ConfigError saying how to install it."""
  try:
    return importlib.import_module(module)
  except ImportError as e:
    raise ConfigError(f"the CLIP BPE tokenizer needs the {module} package, which is not "
                      f"installed; install it with {_INSTALL}.") from e


def _byte_chars() -> tuple[str, ...]:
  """byte -> the character standing for it: printable Latin-1 bytes stand for themselves, the
  other 68 (control characters, space, ...) for chr(256), chr(257), ... in byte order, so a BPE
  token is always a string of visible characters (OpenAI's ``bytes_to_unicode``)."""
  printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
               *range(ord("®"), ord("ÿ") + 1)}
  others = iter(range(256, 512))
  return tuple(chr(b) if b in printable else chr(next(others)) for b in range(256))


_BYTE_CHARS = _byte_chars()
_CHAR_BYTES = {c: b for b, c in enumerate(_BYTE_CHARS)}
_END = "</w>"  # marks the last symbol of a word
_BPE_SPECIALS = ("<|startoftext|>", "<|endoftext|>")
_PATTERN = (r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]"
            r"|[^\s\p{L}\p{N}]+")


@dataclasses.dataclass(frozen=True)
class BPETokenizer(_Tokenizer):
  """OpenAI CLIP's byte-level BPE: the ids of OpenAI's ``clip.tokenize``, exactly.

  A text is cleaned (``ftfy.fix_text``, HTML entities unescaped twice, runs of whitespace
  made one space, lower case) and split into words, contractions (``'s``, ``'ll``, ...), single
  digits and runs of other symbols. Each piece, as UTF-8 bytes written one visible character a
  byte, with ``</w>`` on its last one, is merged pair by pair, the lowest-ranked pair of the
  merges file first, until no listed pair is left; each resulting symbol is one id.

  The vocabulary (49,408): the 256 byte characters, the same with ``</w>``, one token per merge
  (48,894), then ``<|startoftext|>`` (49406) and ``<|endoftext|>`` (49407). The padding id 0
  is also the token ``!``, as in OpenAI's layout (the eot before it tells them apart).

  Attributes:
    path: OpenAI's ``bpe_simple_vocab_16e6.txt.gz`` (found in the installed ``clip`` package
      by default; :func:`openai_bpe_path`).
  """

  path: str = dataclasses.field(default_factory=openai_bpe_path)
  SOT, EOT = _BPE_SPECIALS

  def __post_init__(self):
    for module in ("ftfy", "regex"):  # optional dependencies: fail at construction, not later
      _require(module)

  @functools.cached_property
  def _merges(self) -> list[tuple[str, str]]:
    with gzip.open(self.path, "rt", encoding="utf-8") as f:
      lines = f.read().split("\n")[1:_MERGES + 1]  # the first line is a version header
    return [tuple(line.split()) for line in lines]

  @functools.cached_property
  def vocabulary(self) -> tuple[str, ...]:
    """id -> token (49,408 of them)."""
    chars = sorted(_BYTE_CHARS)  # OpenAI's order: printable bytes first, then chr(256 + n)
    return (*chars, *(c + _END for c in chars), *("".join(m) for m in self._merges),
            *_BPE_SPECIALS)

  @functools.cached_property
  def _ranks(self) -> dict[tuple[str, str], int]:
    """pair -> its rank: the lower, the earlier it merges."""
    return {pair: rank for rank, pair in enumerate(self._merges)}

  @functools.cached_property
  def _cache(self) -> dict[str, tuple[int, ...]]:
    """byte-character word -> its ids; a special token written in a text stays that token."""
    return {token: (self._index[token],) for token in _BPE_SPECIALS}

  @functools.cached_property
  def _regex(self):
    """(the ``regex`` module, the compiled pattern that splits a cleaned text into words)."""
    regex = _require("regex")
    return regex, regex.compile(_PATTERN, regex.IGNORECASE)

  def _clean(self, text: str) -> str:
    """ftfy's fixes, HTML entities unescaped twice, whitespace runs as one space, lower case."""
    regex, _ = self._regex
    text = html.unescape(html.unescape(_require("ftfy").fix_text(text))).strip()
    return regex.sub(r"\s+", " ", text).strip().lower()

  def _bpe(self, word: str) -> tuple[int, ...]:
    """The ids of one word (a string of byte characters), merged by rank."""
    if word in self._cache:
      return self._cache[word]
    ranks, symbols = self._ranks, [*word[:-1], word[-1] + _END]
    while len(symbols) > 1:
      pair = min(zip(symbols, symbols[1:]), key=lambda p: ranks.get(p, float("inf")))
      if pair not in ranks:
        break
      merged, i = [], 0
      while i < len(symbols):  # every occurrence of the pair, left to right
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
          merged.append(symbols[i] + symbols[i + 1])
          i += 2
        else:
          merged.append(symbols[i])
          i += 1
      symbols = merged
    ids = self._cache[word] = tuple(self._index[s] for s in symbols)
    return ids

  def _ids(self, text: str) -> list[int]:
    _, pattern = self._regex
    ids = []
    for word in pattern.findall(self._clean(text)):
      ids.extend(self._bpe("".join(_BYTE_CHARS[b] for b in word.encode("utf-8"))))
    return ids

  def _text(self, ids: list[int]) -> str:
    text = "".join(self.vocabulary[i] for i in ids if i not in (self.sot_id, self.eot_id))
    data = bytes(_CHAR_BYTES[c] for c in text)  # '</w>' is ASCII: it maps to its own bytes
    return data.decode("utf-8", errors="replace").replace(_END, " ").strip()
