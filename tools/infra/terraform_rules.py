#!/usr/bin/env python3
"""House rules for terraform/, checked offline (.ci/infra) where `terraform validate` cannot
run (it needs the provider registry):

- every .tf and .tfvars file parses;
- the root module pins the CLI (`required_version`) and every provider (a source and a
  version with an upper bound: `~>`, `=` or `<`); registry modules carry a version;
- every variable of every module has a type and a description;
- every call of a local module passes each variable it requires and nothing it does not declare;
- every envs/*.tfvars sets only declared variables and every variable without a default;
- every checkov skip (`#checkov:skip=CHECK:reason`) gives its reason.

Usage: terraform_rules.py TERRAFORM_DIR; exits 1 listing every problem.
"""
import glob
import os
import re
import sys

import hcl2

META_ARGUMENTS = {"source", "version", "count", "for_each", "providers", "depends_on"}
PINNED = ("~>", "=", "<")


def first(value):
    """python-hcl2 wraps attribute values in lists."""
    return value[0] if isinstance(value, list) and value else value


def load(path, problems):
    try:
        with open(path) as f:
            return hcl2.load(f)
    except Exception as error:  # python-hcl2 raises lark errors of several kinds
        problems.append(f"{path}: does not parse: {error}")
        return {}


def module_blocks(directory, problems):
    """All blocks of the .tf files of one module directory, by block type."""
    blocks = {}
    for path in sorted(glob.glob(os.path.join(directory, "*.tf"))):
        for kind, entries in load(path, problems).items():
            blocks.setdefault(kind, []).extend((path, entry) for entry in entries)
    return blocks


def variables_of(blocks):
    """{name: (path, body)} of a module's variables."""
    return {
        name: (path, body)
        for path, entry in blocks.get("variable", [])
        for name, body in entry.items()
    }


def check(root):
    problems = []
    modules = {os.path.normpath(root): module_blocks(root, problems)}
    for directory in sorted(glob.glob(os.path.join(root, "modules", "*"))):
        modules[os.path.normpath(directory)] = module_blocks(directory, problems)

    for directory, blocks in modules.items():
        for name, (path, body) in variables_of(blocks).items():
            if "type" not in body:
                problems.append(f"{path}: variable {name} has no type")
            if not str(first(body.get("description", ""))).strip():
                problems.append(f"{path}: variable {name} has no description")
        for path, entry in blocks.get("module", []):
            for call, body in entry.items():
                source = str(first(body.get("source", "")))
                if not source.startswith("./") and not source.startswith("../"):
                    if "version" not in body:
                        problems.append(f"{path}: module {call} ({source}) has no pinned version")
                    continue
                target = os.path.normpath(os.path.join(directory, source))
                if target not in modules:
                    problems.append(f"{path}: module {call}: no module at {source}")
                    continue
                declared = variables_of(modules[target])
                arguments = {k for k in body if not k.startswith("__")} - META_ARGUMENTS
                for unknown in sorted(arguments - set(declared)):
                    problems.append(f"{path}: module {call} passes {unknown}, which {source} does not declare")
                for missing in sorted(n for n, (_, b) in declared.items() if "default" not in b and n not in arguments):
                    problems.append(f"{path}: module {call} does not pass {missing}")

    for path in sorted(glob.glob(os.path.join(root, "**", "*.tf"), recursive=True)):
        with open(path) as f:
            for number, line in enumerate(f, 1):
                if "checkov:skip" in line and not re.search(r"checkov:skip=CKV2?_[A-Z0-9_]+:\S.{9,}", line):
                    problems.append(f"{path}:{number}: a checkov skip without its reason")

    root_blocks = modules[os.path.normpath(root)]
    settings = [entry for _, entry in root_blocks.get("terraform", [])]
    if not any("required_version" in s for s in settings):
        problems.append(f"{root}: no required_version")
    providers = {}
    for setting in settings:
        for required in setting.get("required_providers", []):
            providers.update(required)
    if not providers:
        problems.append(f"{root}: no required_providers")
    for name, spec in providers.items():
        spec = first(spec)
        if "source" not in spec:
            problems.append(f"{root}: provider {name} has no source")
        version = str(spec.get("version", ""))
        if not version.strip().startswith(PINNED) and "<" not in version:
            problems.append(f"{root}: provider {name} version {version!r} has no upper bound")

    declared = variables_of(root_blocks)
    required = {name for name, (_, body) in declared.items() if "default" not in body}
    tfvars = sorted(glob.glob(os.path.join(root, "envs", "*.tfvars")))
    if not tfvars:
        problems.append(f"{root}: no envs/*.tfvars")
    for path in tfvars:
        values = load(path, problems)
        for unknown in sorted(set(values) - set(declared)):
            problems.append(f"{path}: sets {unknown}, which is not a variable")
        for missing in sorted(required - set(values)):
            problems.append(f"{path}: does not set {missing}")
    return problems


def main(args):
    problems = check(args[0])
    for line in problems:
        print(line)
    if problems:
        return 1
    print(f"terraform: {args[0]} follows the house rules")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
