"""Guards of DESIGN.md's packaging rules: one import root and a one-way dependency graph."""

import re

from support import REPO

PACKAGES = ["cluster", "worker", "model", "data"]
BARE = re.compile(r"^\s*(import|from)\s+(cluster|worker|model|data)(\.|\s|$)", re.M)


def _sources(package):
    return sorted((REPO / package).rglob("*.py"))


def test_no_bare_imports_of_the_four_folders():
    offenders = [
        f"{p.relative_to(REPO)}: {m.group(0).strip()}"
        for package in PACKAGES + ["tests", "benchmarks", "examples"]
        for p in _sources(package)
        for m in BARE.finditer(p.read_text())
    ]
    assert offenders == [], "bare imports (use mpinet.<package>): " + "; ".join(offenders)


def test_only_cluster_imports_mpi4py():
    pattern = re.compile(r"^\s*(from|import) mpi4py", re.M)
    offenders = [
        str(p.relative_to(REPO))
        for package in ["worker", "model", "data"]
        for p in _sources(package)
        if pattern.search(p.read_text())
    ]
    assert offenders == []


def test_model_and_data_never_import_cluster_or_worker():
    pattern = re.compile(r"(mpinet\.(cluster|worker)|from \.\.\.?(cluster|worker))")
    offenders = [
        str(p.relative_to(REPO))
        for package in ["model", "data"]
        for p in _sources(package)
        if pattern.search(p.read_text())
    ]
    assert offenders == []


def test_cluster_never_imports_model():
    offenders = [
        str(p.relative_to(REPO))
        for p in _sources("cluster")
        if re.search(r"(mpinet\.model|from \.\.model)", p.read_text())
    ]
    assert offenders == []


def test_model_never_prints():
    offenders = [
        str(p.relative_to(REPO))
        for p in _sources("model")
        if re.search(r"^\s*print\(", p.read_text(), re.M)
    ]
    assert offenders == []


def test_product_functions_and_files_stay_short():
    """One screen per function (<= 50 lines), one concept per file (<= 300 lines)."""
    import ast

    long = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            text = path.read_text()
            if len(text.splitlines()) > 300:
                long.append(f"{path.relative_to(REPO)}: {len(text.splitlines())} lines")
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > 50:
                        long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {lines}")
    assert not long, long


def test_every_logger_is_named_after_its_module():
    hand_named = [
        f"{path.relative_to(REPO)}:{number}"
        for package in PACKAGES
        for path in sorted((REPO / package).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"getLogger\(\"mpinet\.", line)
    ]
    assert not hand_named, hand_named
