"""The shared vectors (guest-sdk/vectors/cache), run natively: every case's
validate, render (byte for byte) and status answers must be the Rust
plugin's. `atoll plugin test` runs the same cases through the sandbox."""

import json
import pathlib

import pytest

from atoll_sdk import Database, Nowhere, Workload, canonical, dispatch
from atoll_sdk.types import Failed, Invalid

from cache import Cache

VECTORS = pathlib.Path(__file__).resolve().parents[4] / "vectors" / "cache"
CASES = sorted(VECTORS.glob("*.json"))


def database(d):
    db = Database(
        name=d["name"],
        partitions=d["partitions"],
        namespace=d.get("namespace", "default"),
        uid=d.get("uid", ""),
        generation=d.get("generation", 1),
        labels=dict(sorted(d.get("labels", {}).items())),
        cluster_domain=d.get("clusterDomain", "cluster.local"),
    )
    if "configText" in d:
        db.config = d["configText"]
    else:
        db.with_config(d.get("config", {}))
    return db


def violations(vs):
    return [{"field": v.field, "message": v.message} for v in vs]


def placement(p):
    if isinstance(p, Nowhere):
        return "nowhere"
    assert isinstance(p, Workload)
    return {"kind": p.kind, "name": p.name}


def observed(status, objects):
    out = []
    for entry in status.get("observed", []):
        if "object" in entry:
            out.append(json.dumps(entry["object"]))
            continue
        kind, name = entry["rendered"].split("/", 1)
        obj = next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)
        obj = dict(obj)
        if "status" in entry:
            obj["status"] = entry["status"]
        out.append(json.dumps(obj))
    return out


def test_there_are_cases():
    assert len(CASES) >= 10, VECTORS


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_vector(path):
    case = json.loads(path.read_text())
    db = database(case["database"])
    assert violations(dispatch.validate(Cache, db)) == case["validate"]

    result = dispatch.render(Cache, db)
    expected = case["render"]
    if isinstance(result, Invalid):
        assert {"invalid": violations(result.violations)} == expected
    elif isinstance(result, Failed):
        assert {"failed": result.message} == expected
    else:
        want = [canonical.compact(o) for o in expected["objects"]]
        assert len(result.objects) == len(want)
        for got, w in zip(result.objects, want):
            assert json.loads(got) == json.loads(w)  # readable diff first
            assert got == w  # then the bytes
        bindings = [
            {"partition": b.partition, "service": b.service, "port": b.port, "placement": placement(b.placement)}
            for b in result.partitions
        ]
        assert bindings == expected["partitions"]

    objects = expected.get("objects", [])
    for status in case["status"]:
        r = dispatch.status(Cache, db, observed(status, objects))
        got = {"readyPartitions": r.ready_partitions, "availablePartitions": r.available_partitions, "message": r.message}
        assert got == status["expect"], status.get("description")
