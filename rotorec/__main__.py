import sys

from rotorec.cli import main

sys.exit(main())
