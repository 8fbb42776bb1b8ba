"""oci-systemd-hook: prepare an OCI container so that systemd can boot as its PID 1.

This module is imported on the hook's hot path, so it imports nothing.
"""

__version__ = "1.0.0"
