"""devtrail's stream processors: the Faust processor, the COPY sink, the database writers, the
rules and the dead-letter store. Installed with the ``pipeline`` extra."""
