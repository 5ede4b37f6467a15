#!/usr/bin/env python3
"""Adds a service to Bourse the way docs/adding-a-service.md says, and lists what it touched.

    tools/scaffold/new-service.py payouts 8086

Creates crates/services/<name> from tools/scaffold/service (a crate with the shape of every
service: config, error, http, store, its migrations, and a test that it is composed, routed,
documented and probed), then tells the platform it exists in the three places a person
decides: the binary's dependency on it, its entry in SERVICES (and its command-line target),
and its public routes in the gateway's route table. Each edit is anchored on text that must
appear exactly once; if a file no longer has it, the script stops and says which, before
writing anything.

Everything else is derived from SERVICES, as for a service added by hand:
`BOURSE_UPDATE_DOCS=1 cargo test -p bourse --test deployment` adds it to compose, Prometheus,
Kubernetes and .env.example from tools/scaffold/deploy/, then
`BOURSE_UPDATE_DOCS=1 cargo test -p bourse --test configuration` regenerates the configuration
reference, and `cargo test -p <name>` proves the composition.
.ci/run runs exactly that on a copy of the repository (tools/scaffold/prove.sh).
"""

import argparse
import pathlib
import re
import shutil
import subprocess
import sys

SCAFFOLD = pathlib.Path(__file__).resolve().parent


class Edits:
    """Every change, checked first and written only when all of them apply."""

    def __init__(self, root: pathlib.Path):
        self.root = root
        self.files: dict[pathlib.Path, str] = {}
        self.problems: list[str] = []

    def text(self, path: str) -> str:
        full = self.root / path
        if full not in self.files:
            if not full.exists():
                self.problems.append(f"{path}: missing")
                self.files[full] = ""
            else:
                self.files[full] = full.read_text()
        return self.files[full]

    def insert(self, path: str, anchor: str, text: str, *, before: bool = False) -> None:
        """Inserts `text` after (or before) the one match of the regex `anchor`."""
        content = self.text(path)
        matches = list(re.finditer(anchor, content, flags=re.M))
        if len(matches) != 1:
            self.problems.append(f"{path}: {len(matches)} matches for {anchor!r}, expected 1")
            return
        at = matches[0].start() if before else matches[0].end()
        self.files[self.root / path] = content[:at] + text + content[at:]

    def replace(self, path: str, pattern: str, replacement) -> None:
        content = self.text(path)
        updated, count = re.subn(pattern, replacement, content, count=1, flags=re.M)
        if count != 1:
            self.problems.append(f"{path}: no match for {pattern!r}")
            return
        self.files[self.root / path] = updated

    def write(self) -> None:
        for path, content in self.files.items():
            path.write_text(content)


def fill(template: str, names: dict[str, str]) -> str:
    for key, value in names.items():
        template = template.replace("{{" + key + "}}", value)
    return template


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name", help="lowercase letters: crate, schema, target and host name")
    parser.add_argument("port", type=int, help="its default port")
    parser.add_argument("--root", default=".", help="the repository (default: here)")
    args = parser.parse_args()
    if not re.fullmatch(r"[a-z]{2,30}", args.name):
        print("the name must be 2-30 lowercase letters (it is also a schema and a host)", file=sys.stderr)
        return 2
    if not 1024 <= args.port <= 65535:
        print("the port must be 1024-65535", file=sys.stderr)
        return 2
    root = pathlib.Path(args.root).resolve()
    name, port = args.name, str(args.port)
    names = {"name": name, "Name": name.capitalize(), "NAME": name.upper(), "port": port}
    crate = root / "crates" / "services" / name
    if crate.exists():
        print(f"{crate} exists already", file=sys.stderr)
        return 2
    lib = (root / "crates/bourse/src/lib.rs").read_text()
    if re.search(rf"\b{names['Name']},\n", lib) or f":{port}" in (root / "docker-compose.yml").read_text():
        print(f"{name} or port {port} is taken", file=sys.stderr)
        return 2

    edits = Edits(root)
    N, Name, NAME = name, names["Name"], names["NAME"]

    # The binary: its dependency, a target and one SERVICES entry, before the gateway.
    edits.insert("crates/bourse/Cargo.toml", r"^\[dependencies\]\n",
                 f'{N} = {{ path = "../services/{N}" }}\n')
    edits.insert("crates/bourse/src/lib.rs", r"(?s)pub enum Target \{.*?(?=\n\})", f"\n    {Name},")
    edits.replace("crates/bourse/src/lib.rs", r"pub const SERVICES: \[ServiceSpec; (\d+)\]",
                  lambda m: f"pub const SERVICES: [ServiceSpec; {int(m.group(1)) + 1}]")
    edits.insert("crates/bourse/src/lib.rs", r"^    ServiceSpec \{\n        target: Target::Gateway,",
                 f"    ServiceSpec {{\n        target: Target::{Name},\n        service: {N}::SPEC,\n    }},\n",
                 before=True)

    # The gateway: the upstream and its public route.
    route_table = "crates/services/gateway/src/route_table.rs"
    edits.insert(route_table, r"(?s)impl Upstream \{\n(    pub const [A-Z_]+: Self = Self::at\([^)]*\);\n)+",
                 f'    pub const {NAME}: Self = Self::at("{N}", "http://127.0.0.1:{port}");\n')
    edits.replace(route_table, r"pub const UPSTREAMS: \[Upstream; (\d+)\] = \[\n((?:    Upstream::[A-Z_]+,\n)+)\];",
                  lambda m: f"pub const UPSTREAMS: [Upstream; {int(m.group(1)) + 1}] = [\n{m.group(2)}    Upstream::{NAME},\n];")
    edits.insert(route_table, r"^pub static ROUTES: &\[RouteSpec\] = &\[\n",
                 f'    route(\n        Method::GET,\n        "/v1/{N}/records",\n        Upstream::{NAME},\n'
                 "        Access::Authenticated,\n    ),\n")

    if edits.problems:
        print("nothing written; these files no longer look as the scaffold expects:", file=sys.stderr)
        for problem in edits.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1

    shutil.copytree(SCAFFOLD / "service", crate)
    for path in crate.rglob("*"):
        if path.is_file():
            path.write_text(fill(path.read_text(), names))
    edits.write()
    # Line breaks in the generated code depend on the name's length: let rustfmt decide them.
    if subprocess.run(["cargo", "fmt", "-p", N], cwd=root).returncode != 0:
        print(f"cargo fmt -p {N} failed; run it once the crate builds", file=sys.stderr)

    print(f"created crates/services/{N}; edited:")
    for path in sorted(edits.files):
        print(f"  {path.relative_to(root)}")
    print("next: the deployment files and the configuration reference, derived from SERVICES:")
    print("  BOURSE_UPDATE_DOCS=1 cargo test -p bourse --test deployment")
    print("  BOURSE_UPDATE_DOCS=1 cargo test -p bourse --test configuration")
    print(f"then: cargo test -p {N}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
