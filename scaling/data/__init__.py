"""Stage 1, prepare: a dataset's text (or token arrays) → train/val token arrays and their tokenizer.

- :mod:`~scaling.data.prepare`: corpora, splits, token arrays;
- :mod:`~scaling.data.tokenizer`: bytes, or a byte-level BPE trained on the training split.
"""
