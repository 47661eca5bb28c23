"""The pipeline above the model zoo: settings, output layout, checkpoint files, stage set-up, tracking,
lineage and profiles. Nothing below (``nn``, ``models``, ``likelihood``, ``evaluation``, ``sampling``,
``audit``, ``training``) imports from here (tests/test_layers.py)."""
