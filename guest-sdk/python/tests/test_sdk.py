"""The SDK's own rules, with oracles taken from the Rust SDK's documented
behaviour (and, for schemas, from what schemars writes for the same types)."""

import json
from dataclasses import dataclass
from typing import Dict, List, Optional

import pytest

from atoll_sdk import Database, Output, Plugin, StatusReport, Violation, canonical, dispatch, option, quantity, testing, u32
from atoll_sdk import k8s
from atoll_sdk.config import config_schema, parse_or_violation
from atoll_sdk.k8s import ContainerBuilder, PodBuilder, StatefulSetBuilder, VolumeClaimConfig


def test_canonical_order_puts_identity_first_and_sorts_the_rest():
    obj = {"spec": {"b": 1, "a": [{"z": "\n", "y": "é/"}]}, "metadata": {"name": "x"}, "kind": "ConfigMap", "apiVersion": "v1"}
    assert canonical.compact(obj) == '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"},"spec":{"a":[{"y":"é/","z":"\\n"}],"b":1}}'
    # Not a Kubernetes object (no metadata): plain sorted, like an ObjectReference.
    assert canonical.compact({"name": "n", "kind": "K", "apiVersion": "v"}) == '{"apiVersion":"v","kind":"K","name":"n"}'
    assert canonical.compact({"c": "\x01\x7f\u2028"}) == '{"c":"\\u0001\x7f\u2028"}'
    with pytest.raises(TypeError):
        canonical.compact({"x": 1.5})


def test_pretty_keeps_struct_order_like_serde_json():
    assert canonical.pretty({"b": [], "a": {}, "c": [1, {"d": None}]}) == (
        '{\n  "b": [],\n  "a": {},\n  "c": [\n    1,\n    {\n      "d": null\n    }\n  ]\n}'
    )
    assert canonical.pretty({"b": 1, "a": 2}, order="sorted") == '{\n  "a": 2,\n  "b": 1\n}'


def test_nested_volume_claim_templates_are_kubernetes_objects():
    pod = PodBuilder({"app": "x"}).container(ContainerBuilder("c", "img").build()).build()
    sts = StatefulSetBuilder("db-1", {"app": "x"}, "db-1-hs", pod).volume_claim(VolumeClaimConfig("1Gi").claim("data")).build()
    text = canonical.compact(sts)
    assert '"volumeClaimTemplates":[{"apiVersion":"v1","kind":"PersistentVolumeClaim","metadata":{"name":"data"}' in text
    assert '"persistentVolumeClaimRetentionPolicy":{"whenDeleted":"Retain","whenScaled":"Retain"}' in text
    assert sts["spec"]["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}


def test_quantities():
    for ok in ["1Gi", "10Gi", "500m", "1.5", "64Mi", "1e3", "2E6", "0", "+1k"]:
        assert quantity.check(ok) is None, ok
    for bad in ["", "Gi", "1GB", "1.2.3Gi", "ten", "1 Gi", "-1Gi", "1e"]:
        assert quantity.check(bad), bad
    assert quantity.value("64Mi") == 67108864.0
    assert quantity.value("500m") == 0.5


@dataclass
class Storage:
    size: str = option("1Gi")


@dataclass
class Cfg:
    """A test config."""

    replicas: u32 = option(3, "How many.")
    storage: Storage = option(Storage())
    tags: List[str] = option([])
    extra: Dict[str, str] = option({})
    claim: Optional[VolumeClaimConfig] = option(None)


def parse(config):
    return parse_or_violation(Cfg, Database("db", 1).with_config(config))


def test_config_errors_name_the_field_in_serde_words():
    assert parse({"storage": {"size": 3}})[1] == [Violation("spec.storage.config.storage.size", "invalid type: integer `3`, expected a string")]
    assert parse({"replica": 3})[1][0].message == (
        "unknown field `replica`, expected one of `replicas`, `storage`, `tags`, `extra`, `claim`"
    )
    assert parse({"tags": ["a", 2]})[1][0].field == "spec.storage.config.tags[1]"
    assert parse({"claim": {}})[1] == [Violation("spec.storage.config.claim", "missing field `size`")]
    assert parse({"replicas": 2**32})[1][0].message == "invalid value: integer `4294967296`, expected u32"
    cfg, v = parse({"claim": {"size": "2Gi"}, "extra": {"b": "1", "a": "2"}})
    assert v == [] and cfg.claim.size == "2Gi" and cfg.claim.storage_class_name is None
    assert list(cfg.extra) == ["a", "b"]
    for text in ("", "null", "{}"):
        db = Database("db", 1)
        db.config = text
        assert parse_or_violation(Cfg, db)[0].replicas == 3


def test_schema_is_what_schemars_writes():
    schema = json.loads(config_schema(Cfg))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "Cfg" and schema["description"] == "A test config."
    assert schema["properties"]["replicas"] == {"default": 3, "description": "How many.", "format": "uint32", "minimum": 0, "type": "integer"}
    assert schema["properties"]["claim"] == {"anyOf": [{"$ref": "#/$defs/VolumeClaimConfig"}, {"type": "null"}], "default": None}
    # raft's schema, as schemars wrote it for the Rust VolumeClaimConfig.
    assert schema["$defs"]["VolumeClaimConfig"] == {
        "additionalProperties": False,
        "description": "`volumeClaimTemplate` as users write it in config.",
        "properties": {
            "size": {"description": "Requested size, a Kubernetes quantity such as `10Gi`.", "type": "string"},
            "storageClassName": {"default": None, "description": "StorageClass name; the cluster default when absent.", "type": ["string", "null"]},
        },
        "required": ["size"],
        "type": "object",
    }
    assert schema["additionalProperties"] is False


class Divider(Plugin):
    """Divides by ``groups``: must never see a config ``check`` refused."""

    NAME, VERSION, DESCRIPTION = "divider", "0.0.0", "test"

    @dataclass
    class Config:
        groups: u32 = option(0)

    @staticmethod
    def check(db, config):
        return [Violation.config("groups", "must be at least 1")] if config.groups == 0 else []

    @staticmethod
    def render(db, config, out: Output):
        out.push(k8s.config_map(db.child("x"), {}, [("n", str(db.partitions // config.groups))]))

    @staticmethod
    def status(db, config, observed):
        return StatusReport([db.partitions // config.groups])


def test_status_and_render_never_see_a_config_check_refuses():
    db = Database("db", 2).with_config({"groups": 0})
    report = testing.status(Divider, db, [])
    assert report.ready_partitions == []
    assert report.message == "invalid config: spec.storage.config.groups: must be at least 1"
    with pytest.raises(testing.RenderRefused):
        testing.render(Divider, db)
    db = Database("db", 2).with_config({"groups": 2})
    assert testing.status(Divider, db, []).ready_partitions == [1]
    assert testing.render(Divider, db).texts == ['{"apiVersion":"v1","kind":"ConfigMap","data":{"n":"1"},"metadata":{"labels":{},"name":"db-x"}}']
    assert dispatch.validate(Divider, Database("db", 0).with_config({"groups": 1})) == [Violation("spec.partitions", "must be at least 1")]
