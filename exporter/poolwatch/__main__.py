import sys

from poolwatch.cli import main

sys.exit(main())
