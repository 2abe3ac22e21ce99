"""The API reference: pdoc renders every public docstring of m2m_jax as HTML, without warnings."""

import warnings

import pdoc
import pdoc.render


def test_the_api_reference_builds_without_warnings(tmp_path):
  pdoc.render.configure(docformat="google")
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    pdoc.pdoc("m2m_jax", output_directory=tmp_path)
  # flax's TrainState annotates opt_state with chex's recursive ArrayTree, which pdoc cannot
  # resolve in any module (the State classes of nets and diffusion inherit it).
  ours = [str(w.message) for w in caught if "Import of ArrayTree failed" not in str(w.message)]
  assert not ours
  pages = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.html")}
  assert {"m2m_jax/train.html", "m2m_jax/models/layers.html", "m2m_jax/classic/knn.html",
          "m2m_jax/algorithms/mlp_scratch.html"} <= pages
  train_page = (tmp_path / "m2m_jax" / "train.html").read_text()
  assert "train_and_evaluate" in train_page and "Returns" in train_page
