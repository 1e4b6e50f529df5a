"""The devtrail event contract: envelope, event types, codec, topic map.

Every event class and payload of ``devtrail.schemas.events`` is re-exported here.
"""

from devtrail.schemas import events
from devtrail.schemas.codec import decode_message, encode_bundle, encode_event, validate_event
from devtrail.schemas.envelope import SCHEMA_VERSION, Envelope, Family, Payload
from devtrail.schemas.errors import ContractError, DecodeError, DevtrailError, EventValidationError
from devtrail.schemas.events import *  # noqa: F403 - the catalog, listed once in schemas.events.__all__
from devtrail.schemas.ids import uuid7
from devtrail.schemas.topics import TopicMap

__all__ = [
    "SCHEMA_VERSION",
    "ContractError",
    "DecodeError",
    "DevtrailError",
    "Envelope",
    "EventValidationError",
    "Family",
    "Payload",
    "TopicMap",
    "decode_message",
    "encode_bundle",
    "encode_event",
    "uuid7",
    "validate_event",
]
__all__ += events.__all__
