import sys

from fasttcp.cli import main

sys.exit(main())
