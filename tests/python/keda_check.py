"""Check a KEDA ScaledObject (YAML) against the fields KEDA documents for
keda.sh/v1alpha1 ScaledObject and its Prometheus trigger
(https://keda.sh/docs/2.17/reference/scaledobject-spec/,
https://keda.sh/docs/2.17/scalers/prometheus/): unknown fields, missing
required ones and wrong types fail. Prints the problems, exits 1 if any.

    keda_check.py FILE
"""

import sys

import yaml

SPEC = {
    "scaleTargetRef": dict,
    "pollingInterval": int,
    "cooldownPeriod": int,
    "initialCooldownPeriod": int,
    "idleReplicaCount": int,
    "minReplicaCount": int,
    "maxReplicaCount": int,
    "fallback": dict,
    "advanced": dict,
    "triggers": list,
}
TARGET = {"apiVersion": str, "kind": str, "name": str, "envSourceContainerName": str}
ADVANCED = {"restoreToOriginalReplicaCount": bool, "horizontalPodAutoscalerConfig": dict, "scalingModifiers": dict}
HPA_CONFIG = {"name": str, "behavior": dict}
TRIGGER = {"type": str, "name": str, "metadata": dict, "authenticationRef": dict, "metricType": str, "useCachedMetrics": bool}
METRIC_TYPES = {"AverageValue", "Value", "Utilization"}
# Every Prometheus trigger value is a string.
PROMETHEUS = {
    "serverAddress", "query", "queryParameters", "threshold", "activationThreshold", "namespace",
    "customHeaders", "ignoreNullValues", "unsafeSsl", "timeout",
}
PROMETHEUS_REQUIRED = {"serverAddress", "query", "threshold"}


def check(obj, allowed, where, problems):
    if not isinstance(obj, dict):
        problems.append(f"{where}: not a map")
        return
    for key, value in obj.items():
        if key not in allowed:
            problems.append(f"{where}.{key}: not a documented field")
        elif not isinstance(value, allowed[key]) or (allowed[key] is int and isinstance(value, bool)):
            problems.append(f"{where}.{key}: expected {allowed[key].__name__}, got {type(value).__name__}")


def main() -> int:
    doc = yaml.safe_load(open(sys.argv[1]))
    problems = []
    if doc.get("apiVersion") != "keda.sh/v1alpha1" or doc.get("kind") != "ScaledObject":
        problems.append("not a keda.sh/v1alpha1 ScaledObject")
    check(doc, {"apiVersion": str, "kind": str, "metadata": dict, "spec": dict}, "", problems)
    spec = doc.get("spec", {})
    check(spec, SPEC, "spec", problems)
    for key in ("scaleTargetRef", "triggers"):
        if key not in spec:
            problems.append(f"spec.{key}: required")
    check(spec.get("scaleTargetRef", {}), TARGET, "spec.scaleTargetRef", problems)
    if "name" not in spec.get("scaleTargetRef", {}):
        problems.append("spec.scaleTargetRef.name: required")
    advanced = spec.get("advanced", {})
    check(advanced, ADVANCED, "spec.advanced", problems)
    check(advanced.get("horizontalPodAutoscalerConfig", {}), HPA_CONFIG, "spec.advanced.horizontalPodAutoscalerConfig", problems)
    lo, hi = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
    if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
        problems.append("minReplicaCount > maxReplicaCount")
    for i, trigger in enumerate(spec.get("triggers", [])):
        where = f"spec.triggers[{i}]"
        check(trigger, TRIGGER, where, problems)
        if trigger.get("metricType", "AverageValue") not in METRIC_TYPES:
            problems.append(f"{where}.metricType: one of {sorted(METRIC_TYPES)}")
        if trigger.get("type") == "prometheus":
            metadata = trigger.get("metadata", {})
            for key, value in metadata.items():
                if key not in PROMETHEUS:
                    problems.append(f"{where}.metadata.{key}: not a documented Prometheus trigger field")
                elif not isinstance(value, str):
                    problems.append(f"{where}.metadata.{key}: trigger metadata values are strings")
            for key in PROMETHEUS_REQUIRED - metadata.keys():
                problems.append(f"{where}.metadata.{key}: required")
            try:
                if float(metadata.get("threshold", "x")) <= 0:
                    problems.append(f"{where}.metadata.threshold: must be positive")
            except ValueError:
                problems.append(f"{where}.metadata.threshold: not a number")
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
