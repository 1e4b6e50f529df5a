"""Checkpointed consumers: a topic applied to PostgreSQL by a list of writers, with the
consumer's offsets stored in the same transaction.

Split by role: ``batch`` (the rows read since the last commit), ``host`` (the writers, each
in its own savepoint, refused rows isolated per writer), ``database`` (the connection and
its retry policy), ``deadletters`` (publishing what was refused or unreadable), ``consumer``
(reading, offsets, rebalances, metrics of a committed batch).
"""

from devtrail.consumers.checkpoint.consumer import CheckpointedConsumer
from devtrail.consumers.checkpoint.format import RowFormat
from devtrail.consumers.checkpoint.host import Applied, Prepared, PreparingWriter, Refusal, Writer, WriterHost

__all__ = [
    "Applied",
    "CheckpointedConsumer",
    "Prepared",
    "PreparingWriter",
    "Refusal",
    "RowFormat",
    "Writer",
    "WriterHost",
]
