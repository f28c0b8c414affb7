"""A repeated Event is one object on a real API server: the operator's create-then-merge-patch
of an Event series (operator/eventseries.py decides; operator/k8s.py writes) is accepted, and
`kubectl get events` shows one Event with the count, not one per flap."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sipdispatch.kube import EVENT, Kube, locate, objects
from sipdispatch.operator.k8s import Api

pytestmark = pytest.mark.k8s


def a_set(namespace: str) -> dict[str, object]:
    # Events may name an object that does not exist; the API server does not look it up.
    return {"metadata": {"name": "asterisk", "namespace": namespace, "uid": "u-1"}}


async def test_a_repeated_event_is_one_event_with_its_count(
    kube_namespace: str, admin_kubeconfig: Path
) -> None:
    api = Api(Kube(locate(admin_kubeconfig)))
    try:
        start = time.time()
        name = await api.post_event(
            a_set(kube_namespace), "Warning", "DestinationDown", "sip:10.0.0.7 is down", start
        )
        for count in (2, 3):
            message = f"sip:10.0.0.7 is down ({count} times since the first)"
            await api.repeat_event(kube_namespace, name, message, count, start + count)
        stored = await objects.get(api.kube, EVENT, kube_namespace, name)
        every, _ = await objects.list_objects(api.kube, EVENT, kube_namespace)
    finally:
        await api.close()
    assert stored["count"] == 3
    assert stored["message"] == "sip:10.0.0.7 is down (3 times since the first)"
    assert stored["lastTimestamp"] > stored["firstTimestamp"]
    assert [e["metadata"]["name"] for e in every if e.get("reason") == "DestinationDown"] == [name]
