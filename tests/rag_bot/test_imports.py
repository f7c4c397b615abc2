"""Import hygiene: the packages import fast, the public API is pinned, imports flow one way."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import rag_bot

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ["torch", "chromadb", "sentence_transformers", "gradio", "llama_cpp", "transformers", "mcp"]


def test_importing_the_packages_loads_no_heavy_library():
    code = (
        "import json, sys; import rag_bot, ingest, rag_bot.cli, rag_bot.chain, rag_bot.llm, rag_bot.ui, "
        "rag_bot.prompting, rag_bot.prompts, ingest.discover, rag_bot.train.pairs, rag_bot.train.run, rag_bot.train.embedder, "
        "rag_bot.train.reranker, rag_bot.train.synthetic; "
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert json.loads(out.stdout) == []


def test_public_api_is_pinned():
    assert sorted(rag_bot.__all__) == sorted([
        "Config", "ConfigError", "InputError", "ModelError", "RagBotError", "RagChain", "RagRetriever", "Retrieval",
        "Source", "StoreError", "UsageError", "__version__", "load_chain", "load_config", "load_retriever",
    ])
    for name in rag_bot.__all__:
        assert hasattr(rag_bot, name)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(("." * node.level) + node.module if node.level else node.module)
    return names


def test_runtime_never_imports_ingest_except_the_app_and_the_cli():
    for path in (ROOT / "rag_bot").rglob("*.py"):
        if path.relative_to(ROOT).as_posix() in ("rag_bot/cli.py", "rag_bot/app.py"):
            continue
        assert not any(name == "ingest" or name.startswith("ingest.") for name in _imports(path)), path


def test_ingest_imports_only_the_allowed_runtime_modules():
    allowed = {"rag_bot.bm25", "rag_bot.config", "rag_bot.errors", "rag_bot.models", "rag_bot.names", "rag_bot.store"}
    for path in (ROOT / "ingest").rglob("*.py"):
        used = {name for name in _imports(path) if name.startswith("rag_bot")}
        assert used <= allowed, (path, used - allowed)


def test_the_ui_and_the_cli_are_leaves():
    for path in (ROOT / "rag_bot").rglob("*.py"):
        used = _imports(path)
        if path.name != "cli.py":
            assert not used & {".cli", "rag_bot.cli"}, path
        if path.name not in ("cli.py", "ui.py"):
            assert not used & {".ui", "rag_bot.ui"}, path
        if path.name != "cli.py":  # the edges over the service: only `rag-bot serve` and `rag-bot mcp` load them
            assert not used & {".api", "rag_bot.api", ".mcp_server", "rag_bot.mcp_server"}, path


def test_training_is_given_its_retriever_and_llm_rather_than_building_them():
    allowed = {"..config", "..errors", "..hub", "..models", "..prompting", "..store", "..eval.beir",
               "..questions", "..rows"}  # the question generator and the row reader: text in, rows out
    for path in (ROOT / "rag_bot" / "train").glob("*.py"):
        used = {name for name in _imports(path) if name.startswith(".")}
        assert {name for name in used if name.startswith("..")} <= allowed, (path, used)


def _module_graph() -> dict[str, set[str]]:
    """Each module of rag_bot and ingest -> the modules of the two it imports when it runs (at the top or
    inside a function; not under `if TYPE_CHECKING:`, which never runs)."""
    files = {".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): path
             for package in ("rag_bot", "ingest") for path in (ROOT / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skipped = {id(inner) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(node.test) for inner in ast.walk(node)}
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        graph[name] = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.ImportFrom):
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]) if node.level else ""
                target = ".".join(part for part in (base, node.module or "") if part)
                for alias in node.names:
                    found = f"{target}.{alias.name}" if f"{target}.{alias.name}" in files else target
                    if found in files and found != name:
                        graph[name].add(found)
            elif isinstance(node, ast.Import):
                graph[name].update(alias.name for alias in node.names if alias.name in files)
    return graph


def test_no_import_circles():
    """Finding a model never loads one, and no two modules lean on each other (hub <-> models <-> llm
    was one, closed by imports inside functions)."""
    graph = _module_graph()
    assert "rag_bot.hub" in graph["rag_bot.llm"] and "rag_bot.live" in graph["rag_bot.retriever"]  # it sees imports

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), list(graph[start])
        while todo:
            module = todo.pop()
            if module == goal:
                return True
            if module not in seen:
                seen.add(module)
                todo.extend(graph[module])
        return False

    circles = sorted(f"{a} <-> {b}" for a in graph for b in graph[a] if reaches(b, a))
    assert circles == []
    assert not graph["rag_bot.hub"] & {"rag_bot.models", "rag_bot.llm", "rag_bot.judge"}  # finding never loads


# Internals of libraries that offer no public way to do the same, each with its reason.
LIBRARY_PRIVATES = {
    # chromadb: a local client keeps each folder's system cached for the process; dropping it is
    # the only way to read what another process wrote since (store.reopen_client).
    ("rag_bot/store.py", "SharedSystemClient._identifier_to_system"),
    ("rag_bot/store.py", "SharedSystemClient._identifier_to_refcount"),
    # chromadb: a Collection handle has no public way to re-read its metadata but through its client.
    ("rag_bot/store.py", "collection._client"),
    # LangChain's LlamaCpp keeps its sampling settings only there; the benchmark sends the same to llama.cpp.
    ("bench/llm_latency.py", "chain.llm.model._default_params"),
    # transformers: a model's attention implementation can be read only there; the ONNX export switches
    # it to eager and back (`onnx_backend._export` reads it with getattr), and the test checks it is back.
    ("tests/rag_bot/test_onnx.py", "config._attn_implementation"),
    # llama-cpp-python silences the whole process (fds 1 and 2) while a model loads, from `_internals`
    # among others; `llm.quiet_native_logs` replaces that helper there, as nothing public turns it off.
    ("rag_bot/llm.py", "llama_cpp._internals"),
}


def _private_uses(path: Path) -> set[str]:
    """`from X import _name` and `obj._name` (obj other than self/cls) in a file."""
    uses = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            uses.update(f"from {node.module} import {alias.name}" for alias in node.names
                        if alias.name.startswith("_") and not alias.name.startswith("__"))
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                uses.add(ast.unparse(node))
    return uses


def test_no_module_uses_another_modules_private_names():
    found = set()
    for folder in ("rag_bot", "ingest", "tests", "bench", "examples"):
        for path in (ROOT / folder).rglob("*.py"):
            relative = path.relative_to(ROOT).as_posix()
            found.update((relative, use) for use in _private_uses(path))
    assert found - LIBRARY_PRIVATES == set()
    assert LIBRARY_PRIVATES <= found  # an entry no longer needed is removed from the list


def test_every_error_class_has_its_exit_status():
    from rag_bot import errors
    from rag_bot.cli import EXIT_STATUS

    classes = {value for value in vars(errors).values()
               if isinstance(value, type) and issubclass(value, errors.RagBotError) and value is not errors.RagBotError}
    assert set(EXIT_STATUS) == classes and all(name in errors.__doc__ for name in (c.__name__ for c in classes))
