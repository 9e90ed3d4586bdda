"""Container health check: exit 0 only when the service's /readyz answers 200.

Used by the image's HEALTHCHECK (python, because the slim image has no curl). Ready
means every model is loaded and warmed up; a replica that is starting or draining
answers 503 and is reported unhealthy, so compose's ``service_healthy`` and load
balancers hold traffic back from it.
"""

import os
import sys
import urllib.error
import urllib.request

port = os.environ.get("SEQSERVE_PORT", "8000")
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2.5) as r:
        sys.exit(0 if r.status == 200 else 1)
except (urllib.error.URLError, OSError) as e:  # HTTPError (503) is a URLError
    print(f"not ready: {e}", file=sys.stderr)
    sys.exit(1)
