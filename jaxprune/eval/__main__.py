"""python -m jaxprune.eval"""

import sys

from jaxprune.eval.cli import main

sys.exit(main())
