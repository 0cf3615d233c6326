"""The example user tools (examples/tools/) as images of the local node.

The dev node agent serves an image from a host directory put first on PATH; the
examples' tool.yaml files name these images, so `make dev` and the tests run them as a
cluster would run the published images.
"""

from __future__ import annotations

import json
from pathlib import Path

EXAMPLE_IMAGES = {
    "sba-examples/word-stats": "examples/tools/word-stats/bin",
    "sba-examples/notify-webhook": "examples/tools/notify-webhook",
}


def example_image_map(root: Path) -> str:
    """SBA_NODE_IMAGE_MAP for the examples, under the repository at `root`."""
    return json.dumps({image: str(root / path) for image, path in EXAMPLE_IMAGES.items()})
