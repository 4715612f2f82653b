import sys

from study.main import main

sys.exit(main())
