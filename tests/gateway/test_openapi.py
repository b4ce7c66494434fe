def test_the_gateway_builds_with_every_configured_backend() -> None:
    """Every service the default configuration routes to has its descriptors loaded."""
    from edgesense.config import Settings
    from edgesense.gateway.server import create_app, default_backends

    backends = default_backends(Settings())
    assert "edgesense.v1.DeviceConfig" in backends
    create_app(backends)
