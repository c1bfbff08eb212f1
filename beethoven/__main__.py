"""``python -m beethoven`` runs the ``beethoven`` command."""

from beethoven.cli import entry_point

entry_point()
