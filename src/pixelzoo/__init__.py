"""pixelzoo: reproducible PixelRNN / PixelCNN family models, pipeline and lineage."""

__version__ = "0.1.0"
