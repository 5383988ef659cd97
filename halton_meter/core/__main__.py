import sys

from halton_meter.core.runner import main

sys.exit(main())
