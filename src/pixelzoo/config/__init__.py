"""``python -m pixelzoo.config check [params.yaml]``: the command's name; the schema is
:mod:`pixelzoo.pipeline.settings`."""
