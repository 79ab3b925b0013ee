import sys

from jaxprune.study.cli import main

sys.exit(main())
