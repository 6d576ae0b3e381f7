import sys

from cscl.cli import main

sys.exit(main())
