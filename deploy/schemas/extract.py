#!/usr/bin/env python3
"""Turn a CustomResourceDefinition (YAML) into the JSON Schema of one of its versions.

    extract.py CRD.yaml VERSION OUT.json

The schema is the version's `openAPIV3Schema`, made strict: every object that lists
`properties` and neither sets `additionalProperties` nor
`x-kubernetes-preserve-unknown-fields` gets `additionalProperties: false`, so an unknown
(misspelt) field is refused as the API server's strict field validation would refuse it.
`apiVersion`, `kind` and `metadata` stay as the CRD has them (metadata is an open object).
`x-kubernetes-int-or-string` fields accept both an integer and a string, as the API server does.
"""

import json
import sys

import yaml


def strict(node, top=False):
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "properties" and isinstance(value, dict):
            out[key] = {
                name: (sub if top and name in ("apiVersion", "kind", "metadata") else strict(sub))
                for name, sub in value.items()
            }
        else:
            out[key] = strict(value)
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = out.get("anyOf") or [{"type": "integer"}, {"type": "string"}]
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    path, version, target = sys.argv[1:]
    with open(path) as f:
        crd = yaml.safe_load(f)
    spec = crd["spec"]
    for v in spec["versions"]:
        if v["name"] == version:
            schema = strict(v["schema"]["openAPIV3Schema"], top=True)
            break
    else:
        sys.exit(f"{path}: no version {version}")
    schema["$schema"] = "http://json-schema.org/draft-04/schema#"
    schema["x-infergate-kind"] = {"apiVersion": f"{spec['group']}/{version}", "kind": spec["names"]["kind"]}
    with open(target, "w") as f:
        json.dump(schema, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
