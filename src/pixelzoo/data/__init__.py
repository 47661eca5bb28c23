"""Data: raw sources (download + checksum), quantisation and splits, processed-array datasets."""

from pixelzoo.data.datasets import SPLITS, load_meta, load_split, split_digest

__all__ = ["SPLITS", "load_meta", "load_split", "split_digest"]
