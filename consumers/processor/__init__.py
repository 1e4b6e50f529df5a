"""The Faust processor: validate, deduplicate, scrub, correlate, publish the clean topic."""
