"""Sample-quality metrics: Fréchet distances (``frechet``), the toolkit's own small classifier (``classifier``),
FID with locally stored Inception-v3 weights (``fid``) and the ``eval`` job that ties them together (``eval``)."""
