def test_the_api_builds_with_every_configured_backend() -> None:
    """Every service the default configuration routes to has its descriptors loaded."""
    from edgesense.api.server import create_app, default_backends
    from edgesense.common.config import Settings

    backends = default_backends(Settings())
    assert "edgesense.v1.DeviceConfig" in backends
    create_app(backends)
