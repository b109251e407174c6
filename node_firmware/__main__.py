"""``python -m node_firmware``: the same as the ``loaxa-node`` command."""

import sys

from node_firmware.main import main

sys.exit(main())
