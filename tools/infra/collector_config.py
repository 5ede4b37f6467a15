#!/usr/bin/env python3
"""Checks OpenTelemetry collector configurations (.ci/infra): every receiver, processor,
exporter and connector a pipeline names is declared, every declared one is used by some
pipeline, and every extension declared is enabled (and the other way round). The collector
refuses to start on the first kind of mistake and silently ignores the second.

Usage: collector_config.py CONFIG.yaml [...]; exits 1 listing every problem.
"""
import sys

import yaml

SECTIONS = ("receivers", "processors", "exporters", "connectors")


def check(path):
    with open(path) as f:
        config = yaml.safe_load(f)
    problems = []
    service = config.get("service") or {}
    pipelines = service.get("pipelines") or {}
    if not pipelines:
        problems.append(f"{path}: no pipelines")
    used = {section: set() for section in SECTIONS}
    for name, pipeline in pipelines.items():
        for section in ("receivers", "processors", "exporters"):
            for component in pipeline.get(section) or []:
                # A connector is an exporter of one pipeline and a receiver of another.
                if component in (config.get("connectors") or {}):
                    used["connectors"].add(component)
                else:
                    used[section].add(component)
        if not pipeline.get("receivers") or not pipeline.get("exporters"):
            problems.append(f"{path}: pipeline {name} needs receivers and exporters")
    for section in SECTIONS:
        declared = set(config.get(section) or {})
        for missing in sorted(used[section] - declared):
            problems.append(f"{path}: {section[:-1]} {missing} is used by a pipeline but not declared")
        for unused in sorted(declared - used[section]):
            problems.append(f"{path}: {section[:-1]} {unused} is declared but no pipeline uses it")
    declared = set(config.get("extensions") or {})
    enabled = set(service.get("extensions") or [])
    for missing in sorted(enabled - declared):
        problems.append(f"{path}: extension {missing} is enabled but not declared")
    for unused in sorted(declared - enabled):
        problems.append(f"{path}: extension {unused} is declared but not enabled")
    return problems


def main(paths):
    problems = [p for path in paths for p in check(path)]
    for line in problems:
        print(line)
    if problems:
        return 1
    print(f"collector: {len(paths)} configuration(s) consistent")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
