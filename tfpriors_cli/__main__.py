"""``python -m tfpriors_cli``: the ``tfpriors`` console script."""

import sys

from tfpriors_cli import main

sys.exit(main())
