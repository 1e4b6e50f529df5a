"""devtrail's shell: CLI, settings, embedded stack. Nothing imports it."""

__version__ = "0.1.0"
