"""``python -m s3brain.compare``: see ``s3brain.compare.cli``."""

import sys

from s3brain.compare.cli import main

sys.exit(main())
