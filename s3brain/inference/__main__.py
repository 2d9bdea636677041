"""``python -m s3brain.inference``: export finished runs (``s3brain.deployment.export``)."""

import sys

from s3brain.deployment.export import main

sys.exit(main())
