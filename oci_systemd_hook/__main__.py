"""`python -m oci_systemd_hook` runs the command-line tool."""

import sys

from oci_systemd_hook.cli import main

sys.exit(main())
