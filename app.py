"""The seed's entry point: ``python app.py`` serves http://127.0.0.1:5000/.

The same as ``xmlflow serve`` (gunicorn with one gevent worker; ``python app.py --dev``
for werkzeug's threaded server); settings come from ``XMLFLOW_*`` environment variables
and the ``config.py`` beside this file.
"""

import sys
from pathlib import Path

try:
    from xmlflow.cli import main
except ImportError:  # run from a checkout that was not installed
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))
    from xmlflow.cli import main

if __name__ == "__main__":
    main(["serve", *sys.argv[1:]])
