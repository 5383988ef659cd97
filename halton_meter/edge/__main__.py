"""`python -m halton_meter.edge`: run the edge (the supervisor starts it with the listening socket)."""

import os
import sys

from halton_meter.edge.main import main

os.environ.setdefault("PYTHONUNBUFFERED", "1")
sys.exit(main())
