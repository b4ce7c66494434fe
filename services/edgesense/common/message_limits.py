"""How large a gRPC request message may be, per API (pure numbers, no transport).

A server reads requests up to its `grpc.max_receive_message_length` and
keeps the memory it took, so each limit is what its API needs rather than
one generous figure for all (it was 16 MiB everywhere):

- the registry's requests are small: the largest valid RegisterWebhook (a
  2,048-character URL and a 1,000-character description of 4-byte
  characters, a 256-byte secret, every event, 1,000 device ids of 128
  characters) is about 143 KB, the largest valid CreateRule or UpdateRule
  (1,000 deviceIds and 1,000 gatewayIds of 128 characters, a name and a
  description of 4-byte characters) about 268 KB; `REGISTRY_MAX_RECEIVE`,
  the limit of both its APIs (one server reads them), leaves room for a few
  more fields;
- delivery's big request is a Publish batch from the bridge, which closes a
  batch before it would pass `PUBLISH_BATCH_MAX_BYTES`, so a batch always fits
  in `DELIVERY_MAX_RECEIVE` (200 events of 256 KiB payloads would be 51 MiB in
  one message, over any limit); a single event larger than a batch may be is
  rejected by the bridge (`too_large`);
- Devices (the devices view) takes small requests but shares delivery's
  server, which has one limit: delivery's;
- the bridge's DeviceConfig takes a configuration that must fit an MQTT
  payload, but as a protobuf Struct it may be five times its JSON: gRPC's
  default of 4 MiB.

`MAX_RECEIVE` maps each service to its limit: the servers listen with it and
the REST process checks a request's encoded size against it before calling,
so a body under REST's 1 MiB that encodes over the limit is a 413 naming the
limit, not gRPC's RESOURCE_EXHAUSTED (which REST answers 429: "retry later").
"""

from __future__ import annotations

GRPC_DEFAULT_MAX_RECEIVE = 4 * 1024 * 1024
REGISTRY_MAX_RECEIVE = 384 * 1024
DELIVERY_MAX_RECEIVE = GRPC_DEFAULT_MAX_RECEIVE
DEVICE_CONFIG_MAX_RECEIVE = GRPC_DEFAULT_MAX_RECEIVE

MAX_RECEIVE = {
    "edgesense.v1.WebhookRegistry": REGISTRY_MAX_RECEIVE,
    "edgesense.v1.AlertRules": REGISTRY_MAX_RECEIVE,
    "edgesense.v1.Delivery": DELIVERY_MAX_RECEIVE,
    "edgesense.v1.Devices": DELIVERY_MAX_RECEIVE,
    "edgesense.v1.DeviceConfig": DEVICE_CONFIG_MAX_RECEIVE,
}


def max_receive(service: str) -> int:
    """The receive limit of a gRPC service by full name (gRPC's default if not ours)."""
    return MAX_RECEIVE.get(service, GRPC_DEFAULT_MAX_RECEIVE)


# A PublishRequest is its batch id (at most 11 bytes) and, per event, a tag
# and a length (at most 6 bytes) before the event's own bytes.
PUBLISH_REQUEST_OVERHEAD = 16
PUBLISH_EVENT_OVERHEAD = 6
PUBLISH_BATCH_MAX_BYTES = DELIVERY_MAX_RECEIVE - PUBLISH_REQUEST_OVERHEAD
MAX_EVENT_BYTES = PUBLISH_BATCH_MAX_BYTES - PUBLISH_EVENT_OVERHEAD
