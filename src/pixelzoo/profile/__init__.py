"""``python -m pixelzoo.profile ci|quick|cpu|rehearsal``: the command's name; the code is
:mod:`pixelzoo.pipeline.profiles.profile`."""
