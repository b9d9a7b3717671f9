"""The pretraining corpus: procedural object categories for supervised backbone pretraining (docs/pretraining.md)."""

from .dataset import CorpusDataset, read_corpus
from .generate import CorpusConfig, ensure_corpus, generate_corpus, render_image
from .grammar import build_instance, draw_category

__all__ = ["CorpusConfig", "CorpusDataset", "build_instance", "draw_category", "ensure_corpus", "generate_corpus",
           "read_corpus", "render_image"]  # fmt: skip
