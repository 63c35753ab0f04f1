"""condsim-annot: gold triplets for conditional similarity.

Pipeline (one module per stage, data flowing one way through the store):
ingest -> propose -> vote (tui / argilla / judge) -> calibrate -> export / report.
"""

__version__ = "0.1.0"
