import sys

from dicefer.cli import main

sys.exit(main())
