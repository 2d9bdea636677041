"""The model a run deploys, built once (``model.Deployment``): its cost, its int8 versions
(``int8``), the modules an inference folder builds (``modules``) and the export of a run as an
inference folder or a mask bank (``export``, ``python -m s3brain.inference``)."""
