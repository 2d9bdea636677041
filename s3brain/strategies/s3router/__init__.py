"""S3-Router: learned binary masks over the frozen backbone (``masks``), one backbone serving
many tasks' masks (``mask_bank``), what the masks say (``analysis``), and the strategy
(``strategy.Masks``)."""
