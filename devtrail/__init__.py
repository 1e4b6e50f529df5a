"""devtrail: an event pipeline for software development done by people and AI agents.

One namespace: ``devtrail.producers`` and ``devtrail.schemas`` (the SDK a service installs,
``pip install devtrail``), ``devtrail.consumers`` and ``devtrail.migrations`` (the pipeline,
``pip install 'devtrail[pipeline]'``), ``devtrail.bench``, and the CLI. Importing this
package imports nothing else.
"""

__version__ = "0.1.0"
