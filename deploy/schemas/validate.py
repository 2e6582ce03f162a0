#!/usr/bin/env python3
"""Check custom resources against the committed CRD schemas.

    validate.py FILE...

Each FILE holds YAML documents. A document whose apiVersion and kind match a schema here
(`x-infergate-kind` in each JSON file, written by extract.py) is validated against it; any
other kind is an error, so that a resource this script was meant to check cannot slip past
unchecked. Prints one line per problem and exits 1 when there is any.
"""

import json
import pathlib
import sys

import jsonschema
import yaml

HERE = pathlib.Path(__file__).resolve().parent


def schemas():
    by_kind = {}
    for path in sorted(HERE.glob("*.json")):
        schema = json.loads(path.read_text())
        key = schema["x-infergate-kind"]
        by_kind[(key["apiVersion"], key["kind"])] = (path.name, schema)
    return by_kind


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    known = schemas()
    problems = 0
    for file in sys.argv[1:]:
        with open(file) as f:
            docs = [d for d in yaml.safe_load_all(f) if d is not None]
        for doc in docs:
            key = (doc.get("apiVersion"), doc.get("kind"))
            name = f"{file}: {key[1]}/{doc.get('metadata', {}).get('name')}"
            if key not in known:
                print(f"{name}: no schema for {key[0]} {key[1]}")
                problems += 1
                continue
            schema_file, schema = known[key]
            validator = jsonschema.Draft4Validator(schema)
            errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
            for error in errors:
                at = ".".join(str(p) for p in error.absolute_path) or "(top level)"
                print(f"{name}: {at}: {error.message} ({schema_file})")
            problems += len(errors)
            if not errors:
                print(f"{name}: valid ({schema_file})")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
