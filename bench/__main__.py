import sys

from devtrail.bench.run import main

sys.exit(main())
