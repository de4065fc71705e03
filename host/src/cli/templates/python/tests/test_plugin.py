from atoll_sdk import Database, testing

from plugin import ThePlugin


def test_renders_a_service_per_partition():
    out = testing.render(ThePlugin, Database("demo", 2))
    assert out.names("Service") == ["demo-hs", "demo-p1", "demo-p2"]
    assert out.names("StatefulSet") == ["demo"]


def test_zero_replicas_is_refused_by_name():
    db = Database("demo", 1).with_config({"replicas": 0})
    assert testing.violations(ThePlugin, db)[0].field == "spec.storage.config.replicas"
