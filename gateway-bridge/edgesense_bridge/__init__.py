"""The MQTT gateway bridge: gateway topics (ours and Sparkplug B) in, typed events out to delivery.

Run it with `edgesense bridge` (`edgesense_bridge.server.run_bridge`). The
modules, each with one job:

    settings      the bridge's own environment variables (BridgeSettings), read with
                  edgesense.common.config's parsers
    topics        what a gateway topic names; the topics we subscribe and publish to
    payloads      JSON, envelope and protobuf payloads -> the kind's message
    parsing       one MQTT message -> Event, or the reason it is rejected or ignored
    inbound       the paho-free interface between the MQTT adapter and the rest
    mqtt_adapter  paho-mqtt 2 on asyncio: session, manual acks, reconnects, publish
    paho_properties  paho's MQTT 5 properties of a PUBLISH, read without rebuilding tables
    batching      the outbox window: queued, sent in batches, held until confirmed
    forwarder     the pipelined Delivery.Publish stream, resending after failures
    intake        parse, reject and ack, or forward and ack after confirmation;
                  Sparkplug B topics go to the sparkplug package's SparkplugHost
    sparkplug/    Sparkplug B as a host application: topics, values, sessions (pure)
    config_push   the DeviceConfig gRPC service (PushConfig -> …/config/set)
    metrics       Prometheus metrics
    server        the process wiring, graceful shutdown
    errors        the bridge's exceptions (drawn there)

It depends only on `edgesense.common` (settings parsing, retry backoff, the
gRPC runtime) and the generated `edgesense.v1`, never on another service's
package: the import contracts in pyproject.toml hold this.
"""
