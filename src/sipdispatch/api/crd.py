"""The CustomResourceDefinitions, generated from the models.

``python -m sipdispatch.api.crd crds/`` writes ``crds/dispatcherset.yaml`` and
``crds/dispatcherreport.yaml``; a test fails when the files drift from the models. Without an
argument, both documents go to stdout.

pydantic's JSON Schema is turned into a structural OpenAPI v3 schema (``$ref`` inlined,
``Optional`` unwrapped, numeric ``exclusiveMinimum`` in the OpenAPI 3.0 form, no ``title`` or
``additionalProperties: false`` — unknown fields are refused by kubectl's strict field
validation instead). A spec keeps the models' scalar defaults, so that the API server fills them
in and ``kubectl get`` shows what applies (``spec.proxy``); lists and maps keep none. Fields of
the proxy's own models carry no descriptions, so ``FIELD_DOCS`` supplies them: generation fails
when a field has none, so ``kubectl explain`` documents every field. ``RULES`` adds CEL rules
where a JSON Schema cannot say it (algorithm names or numbers, SIP URIs), so that the apiserver
refuses nonsense naming the field; ``OBJECT_RULES`` the models' own cross-field checks (the
operator keeps checking them too, for API servers without CEL and for what a rule cannot see,
such as one URI spelt two ways).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from sipdispatch.api import models, report
from sipdispatch.dispatch import algorithms as _algorithms

__all__ = ["dispatcherreport_crd", "dispatcherset_crd", "main", "openapi_schema", "render_all"]

Schema = dict[str, Any]

FIELD_DOCS: Mapping[tuple[str, str], str] = {
    ("DestinationSpec", "uri"): "SIP URI of the destination, e.g. sip:10.0.0.5:5060 or "
    "sip:gw.example.com;transport=tcp.",
    ("DestinationSpec", "priority"): "Priority (higher first; algorithm priority tries "
    "destinations in this order).",
    ("DestinationSpec", "weight"): "Weight for the algorithms weight and relative-weight. "
    "Default: 1.",
    ("DestinationSpec", "rweight"): "Relative weight for algorithm relative-weight "
    "(Kamailio's rweight). Default: the weight.",
    ("DestinationSpec", "maxLoad"): "Most concurrent calls for algorithm call-load (0: no limit).",
    ("DestinationSpec", "duid"): "Destination unique id for algorithm call-load.",
    ("DestinationSpec", "socket"): "The proxy's listener to send from, as proto:ip:port "
    "(as given to --listen; every proxy replica must have it, else it refuses the table).",
    ("DestinationSpec", "pingFrom"): "From URI of the OPTIONS probes to this destination.",
    ("DestinationSpec", "disabled"): "Administratively disabled (DX): never selected, never "
    "probed.",
    ("DestinationSpec", "draining"): "Draining (DR): no new dialogs, in-dialog requests pass.",
    ("DestinationSpec", "attrs"): "Free attributes, as in a dispatcher.list attrs column.",
    ("ProbingSpec", "mode"): "Which destinations get OPTIONS: failed, all, inactive, flagged, "
    "off, or Kamailio's ds_probing_mode 0-3.",
    ("ProbingSpec", "interval"): "Seconds between probes of a destination.",
    ("ProbingSpec", "timeout"): "Seconds to wait for a probe's answer (at most the interval).",
    ("ProbingSpec", "jitter"): "Random spread of the interval, as a fraction (0.2: +/-20%).",
    ("ProbingSpec", "failureThreshold"): "Consecutive failures that make a destination "
    "inactive (IP).",
    ("ProbingSpec", "successThreshold"): "Consecutive successes that make an inactive "
    "destination active again.",
    ("ProbingSpec", "replyCodes"): "Answers to OPTIONS that count as success: codes (200) or "
    "classes ('2xx').",
    ("ProbingSpec", "from"): "From URI of the probes.",
    ("ProbingSpec", "passiveCodes"): "Replies to calls that count against their destination "
    "like a failed probe: 4xx or 5xx codes or classes. Timeouts and transport errors always "
    "count; 487 and replies to cancelled calls never do. Default: none.",
    ("ProbingSpec", "maxRetryAfter"): "Longest drain, in seconds, that a probe's 503 "
    "Retry-After may ask for (longer ones are cut to it). Default: 300.",
    ("FailoverSpec", "codes"): "Answers that make the proxy try the next destination: 4xx or "
    "5xx codes or classes.",
    ("FailoverSpec", "onTimeout"): "Also fail over when a destination does not answer.",
    ("FailoverSpec", "maxAttempts"): "Most destinations tried for one call.",
}

_SIP_URI_RE = (
    r"^(?i:sips?):([^@;?\s]+@)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)"
    r"(:[0-9]{1,5})?(;[^?\s]*)?(\?\S*)?$"
)


def _sip_uri_rule() -> Schema:
    return {
        "maxLength": 256,
        "x-kubernetes-validations": [
            {
                "rule": f"self.matches(r'{_SIP_URI_RE}')",
                "message": "must be a SIP URI such as sip:10.0.0.5:5060 or "
                "sip:gw.example.com;transport=tcp",
            }
        ],
    }


def _algorithm_rule() -> Schema:
    names = ", ".join(f"'{name}'" for name in _algorithms.ALGORITHMS)
    numbers = ", ".join(f"'{n}'" for n in range(len(_algorithms.ALGORITHMS)))
    top = len(_algorithms.ALGORITHMS) - 1
    return {
        "maxLength": 32,
        "x-kubernetes-validations": [
            {
                "rule": f"type(self) == int ? self >= 0 && self <= {top} : "
                f"string(self).lowerAscii().replace('_', '-') in [{names}, {numbers}]",
                "message": "unknown algorithm; expected a name ("
                + ", ".join(_algorithms.ALGORITHMS)
                + f") or a number 0-{top}",
            }
        ],
    }


def _code_rule(classes: str, low: int, high: int, what: str) -> Schema:
    return {
        "maxLength": 8,
        "x-kubernetes-validations": [
            {
                "rule": f"type(self) == int ? self >= {low} && self <= {high} : "
                f"string(self).lowerAscii().matches('^([{classes}]xx|[{classes}][0-9][0-9])$')",
                "message": f"must be {what}",
            }
        ],
    }


def _is_algorithm(names: str) -> str:
    """CEL: ``self.algorithm`` is one of ``names`` (given by name or Kamailio number)."""
    choices = [name.strip() for name in names.split(",")]
    numbers = [str(list(_algorithms.ALGORITHMS).index(name)) for name in choices]
    listed = ", ".join(f"'{v}'" for v in choices + numbers)
    return (
        f"has(self.algorithm) && "
        f"string(self.algorithm).lowerAscii().replace('_', '-') in [{listed}]"
    )


# The attrs that have their own field (DestinationSpec refuses them too).
_FIELD_ATTRS = ["weight", "rweight", "maxload", "duid", "socket", "ping_from"]

RULES: Mapping[tuple[str, str], Schema] = {
    ("DestinationSpec", "uri"): _sip_uri_rule(),
    ("DestinationSpec", "pingFrom"): _sip_uri_rule(),
    ("ProbingSpec", "from"): _sip_uri_rule(),
    ("DispatcherSetSpec", "algorithm"): _algorithm_rule(),
    ("ProbingSpec", "mode"): {
        "maxLength": 16,
        "x-kubernetes-validations": [
            {
                "rule": "type(self) == int ? self >= 0 && self <= 3 : string(self).lowerAscii() "
                "in ['failed', 'all', 'inactive', 'flagged', 'off', '0', '1', '2', '3']",
                "message": "unknown probing mode; expected failed, all, inactive, flagged, off "
                "or 0-3",
            }
        ],
    },
    ("ProbingSpec", "replyCodes"): {
        "maxItems": 50,
        "items": _code_rule("1-6", 100, 699, "a SIP status code (100-699) or class such as '2xx'"),
    },
    ("ProbingSpec", "passiveCodes"): {
        "maxItems": 50,
        "items": _code_rule("45", 400, 599, "a 4xx or 5xx status code or class such as '5xx'"),
    },
    ("FailoverSpec", "codes"): {
        "maxItems": 50,
        "items": _code_rule("45", 400, 599, "a 4xx or 5xx status code or class such as '5xx'"),
    },
    ("DestinationSpec", "attrs"): {
        "maxProperties": 64,
        "x-kubernetes-validations": [
            {
                # a lookup per name, not a scan of the keys: cheap for the rule cost budget
                "rule": f"!{_FIELD_ATTRS}.exists(k, k in self)",
                "message": "attrs may not hold weight, rweight, maxload, duid, socket or "
                "ping_from: use the destination's own field",
            }
        ],
    },
    # what a match compiles into a set: one entry twice is a mistake
    ("MatchSpec", "source"): {"x-kubernetes-list-type": "set"},
    ("MatchSpec", "methods"): {"x-kubernetes-list-type": "set"},
    ("GatewaySpec", "port"): {
        "maxLength": 63,  # a port name is a DNS label
        "x-kubernetes-validations": [
            {
                "rule": "type(self) == int ? self >= 1 && self <= 65535 : size(self) > 0",
                "message": "must be a port number (1-65535) or a port name",
            }
        ],
    },
    ("DestinationSpec", "socket"): {"maxLength": 128},
    ("DestinationSpec", "duid"): {"maxLength": 128},
}


# Cross-field rules, on the object of the model named: the same checks as the models'
# validators, with the field they are about (fieldPath) and kubectl's wording (reason).
OBJECT_RULES: Mapping[str, list[Schema]] = {
    "DispatcherSetSpec": [
        {
            "rule": f"has(self.hashKey) || !({_is_algorithm('hash-key')})",
            "message": "required by algorithm hash-key (a header such as X-Queue, or "
            "ruri.user, from.user, ...)",
            "fieldPath": ".hashKey",
            "reason": "FieldValueRequired",
        },
        {
            "rule": f"!has(self.hashKey) || ({_is_algorithm('hash-key')})",
            "message": "only used by algorithm hash-key",
            "fieldPath": ".hashKey",
            "reason": "FieldValueForbidden",
        },
    ],
    "ProbingSpec": [
        {
            "rule": "!has(self.timeout) || !has(self.interval) || self.timeout <= self.interval",
            "message": "must not be longer than the interval",
            "fieldPath": ".timeout",
        },
    ],
}


def _inline(node: Any, defs: Mapping[str, Schema]) -> Any:
    """Replace every ``$ref`` by a copy of its definition, recursively."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            target = dict(defs[ref.rsplit("/", 1)[-1]])
            rest = {k: v for k, v in node.items() if k != "$ref"}
            return _inline({**target, **rest}, defs)
        return {k: _inline(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    return node


def _unwrap_optional(node: Schema) -> Schema:
    """``anyOf: [X, {type: null}]`` becomes X, keeping the outer description and default."""
    options = node.get("anyOf")
    if not isinstance(options, list):
        return node
    real = [o for o in options if o != {"type": "null"}]
    if len(real) != 1:
        raise ValueError(f"cannot express anyOf {options} in a structural schema")
    outer = {k: v for k, v in node.items() if k != "anyOf"}
    merged = {**real[0], **outer}
    if "description" in real[0] and "description" in outer:
        merged["description"] = outer["description"]
    return merged


def _structural(node: Schema, owner: str, prop: str, *, defaults: bool) -> Schema:
    """One schema node, made structural and documented; recurses into its children.

    ``owner`` is the model the node is a field of and ``prop`` the field's name (empty for
    list items and map values, documented by their field). With ``defaults``, scalar
    defaults stay in the schema.
    """
    node = _unwrap_optional(dict(node))
    title = node.pop("title", None)
    default = node.pop("default", None)
    if node.get("additionalProperties") is False:
        del node["additionalProperties"]
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        value = node.get(bound)
        if isinstance(value, int | float) and not isinstance(value, bool):
            node[plain] = value
            node[bound] = True
    if prop:
        doc = FIELD_DOCS.get((owner, prop)) or node.get("description")
        if not doc:
            raise ValueError(f"{owner}.{prop} has no description (add it to FIELD_DOCS)")
        if default not in (None, [], {}) and "Default" not in doc:
            doc = f"{doc.rstrip('.')}. Default: {json.dumps(default)}."
        node["description"] = " ".join(doc.split())
        if defaults and isinstance(default, str | int | float | bool):
            node["default"] = default
    elif "description" in node:
        node["description"] = " ".join(str(node["description"]).split())
    properties = node.get("properties")
    if isinstance(properties, dict):
        model = title or owner
        node["properties"] = {
            k: _structural(v, model, k, defaults=defaults) for k, v in properties.items()
        }
        if model in OBJECT_RULES:
            node["x-kubernetes-validations"] = list(OBJECT_RULES[model])
    items = node.get("items")
    if isinstance(items, dict):
        node["items"] = _structural(items, items.get("title") or owner, "", defaults=defaults)
    values = node.get("additionalProperties")
    if isinstance(values, dict):
        node["additionalProperties"] = _structural(values, owner, "", defaults=defaults)
    rules = dict(RULES.get((owner, prop), {})) if prop else {}
    item_rules = rules.pop("items", None)
    node.update(rules)
    if item_rules:
        node["items"] = {**node["items"], **item_rules}
    return node


def openapi_schema(model: type[BaseModel], *, defaults: bool = False) -> Schema:
    """The structural OpenAPI v3 schema of a model (camelCase properties); with
    ``defaults``, the API server fills in the models' scalar defaults."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    inlined = _inline(raw, raw.get("$defs", {}))
    return _structural(inlined, model.__name__, "", defaults=defaults)


def _crd(
    *,
    kind: str,
    plural: str,
    short: str,
    spec: type[BaseModel],
    status: type[BaseModel] | None,
    columns: list[Schema],
    description: str,
) -> Schema:
    properties: Schema = {"spec": openapi_schema(spec, defaults=True)}
    if status is not None:
        properties["status"] = openapi_schema(status)
    version: Schema = {
        "name": models.VERSION,
        "served": True,
        "storage": True,
        "schema": {
            "openAPIV3Schema": {
                "type": "object",
                "description": description,
                "required": ["spec"],
                "properties": properties,
            }
        },
        "additionalPrinterColumns": columns,
    }
    if status is not None:
        version["subresources"] = {"status": {}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{models.GROUP}",
            "labels": {"app.kubernetes.io/part-of": "sipdispatch"},
        },
        "spec": {
            "group": models.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short],
                "categories": ["sipdispatch"],
            },
            "versions": [version],
        },
    }


def dispatcherset_crd() -> Schema:
    return _crd(
        kind="DispatcherSet",
        plural="dispatchersets",
        short="dset",
        spec=models.DispatcherSetSpec,
        status=models.DispatcherSetStatus,
        description="A destination set of a sipdispatch proxy: static SIP destinations and "
        "Services whose EndpointSlices become destinations, with the health the proxy "
        "replicas see in its status.",
        columns=[
            {"name": "Set", "type": "integer", "jsonPath": ".spec.setId"},
            {"name": "Algorithm", "type": "string", "jsonPath": ".status.algorithm"},
            {"name": "Up/Total", "type": "string", "jsonPath": ".status.upTotal"},
            {
                "name": "Ready",
                "type": "string",
                "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
            },
            {
                "name": "Reason",
                "type": "string",
                "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
            },
            {"name": "Takes", "type": "string", "jsonPath": ".status.takes"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
            {"name": "Proxy", "type": "string", "jsonPath": ".spec.proxy", "priority": 1},
            {
                "name": "Message",
                "type": "string",
                "jsonPath": '.status.conditions[?(@.type=="Ready")].message',
                "priority": 1,
            },
        ],
    )


def dispatcherreport_crd() -> Schema:
    return _crd(
        kind=report.KIND,
        plural="dispatcherreports",
        short="dreport",
        spec=report.DispatcherReportSpec,
        status=None,
        description="Destination states as one proxy replica sees them; written by that "
        "replica, read by the operator to build DispatcherSet status.",
        columns=[
            {"name": "Proxy", "type": "string", "jsonPath": ".spec.proxy"},
            {"name": "Replica", "type": "string", "jsonPath": ".spec.replica"},
            {"name": "Reported", "type": "date", "jsonPath": ".spec.reportedAt"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    )


HEADER = "# Generated from sipdispatch.api.models: python -m sipdispatch.api.crd crds/\n"


def render_all() -> dict[str, str]:
    """File name -> YAML text of every CRD."""
    return {
        f"{name}.yaml": HEADER + yaml.safe_dump(crd, sort_keys=False, width=100)
        for name, crd in (
            ("dispatcherset", dispatcherset_crd()),
            ("dispatcherreport", dispatcherreport_crd()),
        )
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    files = render_all()
    if not args:
        sys.stdout.write("---\n".join(files.values()))
        return 0
    target = Path(args[0])
    target.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (target / name).write_text(text)
        print(f"wrote {target / name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
