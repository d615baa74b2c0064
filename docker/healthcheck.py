"""The image's HEALTHCHECK: GET $CTLOOP_HEALTHCHECK_URL answers 2xx within 3 s.

Each image sets the URL of the server it runs by default (serve's /health, MLflow's /health);
a container that runs a batch step instead sets it empty (or passes --no-healthcheck), as
there is nothing to probe.
"""

import os
import sys
import urllib.request

url = os.environ.get("CTLOOP_HEALTHCHECK_URL", "")
if not url:
    sys.exit(0)
try:
    with urllib.request.urlopen(url, timeout=3) as response:
        sys.exit(0 if 200 <= response.status < 300 else 1)
except OSError as exc:
    print(f"{url}: {exc}", file=sys.stderr)
    sys.exit(1)
