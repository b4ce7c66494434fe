"""Sparkplug B: the bridge as a Sparkplug host application.

Edge nodes (Ignition, Kepware, Opto 22, Node-RED's Sparkplug nodes...) publish
protobuf payloads (the schema: protos/edgesense/sparkplug/sparkplug_b.proto) on

    spBv1.0/{group_id}/{NBIRTH|NDATA|NDEATH|DBIRTH|DDATA|DDEATH|NCMD|DCMD}/{edge_node_id}[/{device_id}]

and this package turns them into the same `device.data` and `device.status`
events as our own topics. Pure (no MQTT, no gRPC, no asyncio: the pure-rules
contract in pyproject.toml); the intake feeds it and does the I/O.

    topics   what a Sparkplug topic names; the NCMD and STATE topics
    values   one metric's value -> a JSON value, by its datatype
    host     SparkplugHost: each edge node's session (bdSeq, seq, aliases),
             one message -> the events it makes, and whether to ask for a rebirth
    control  the payloads we publish: the rebirth NCMD and the host's STATE
"""
