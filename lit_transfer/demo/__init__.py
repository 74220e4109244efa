"""The offline demo: the quick start, its digits source model and the digit canvases (multi-label, regression)."""
