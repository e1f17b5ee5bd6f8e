import sys

from _fasttcp_launcher import main

sys.exit(main())
