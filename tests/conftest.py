import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import mlxspec  # noqa: E402,F401  (OpenBLAS before mlx.core)

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
