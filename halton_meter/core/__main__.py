import sys

if len(sys.argv) == 3 and sys.argv[1] == "--worker" and sys.argv[2].isdigit() and int(sys.argv[2]) >= 1:
    from halton_meter.core.worker import (
        worker_main,  # a core worker (docs/concepts/proxy.md, "Several cores")
    )

    sys.exit(worker_main(int(sys.argv[2])))

from halton_meter.core.runner import main

sys.exit(main())
