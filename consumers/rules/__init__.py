"""Rules: stream processors that react to events (``@rule``) or run on a timer (``@every``).

The public API is ``devtrail.rules``; the guarantees are in ``devtrail.consumers.rules.engine`` and
docs/rules.md.
"""
