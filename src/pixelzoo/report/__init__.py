"""The comparison report: paper tables vs our runs, samples, learning curves, receptive fields, lineage."""

from pixelzoo.report.build import Written, build_report

__all__ = ["Written", "build_report"]
