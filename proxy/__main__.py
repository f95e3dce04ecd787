import sys

from spamgate.proxy.cli import main

sys.exit(main())
