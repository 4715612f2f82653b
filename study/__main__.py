import sys

from study.main import main
from tracking.main import leave

sys.exit(leave(main()))
