import sys

from malle.cli import main

sys.exit(main())
