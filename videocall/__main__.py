import sys

from videocall.cli import main

sys.exit(main())
