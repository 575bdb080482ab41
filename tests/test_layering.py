"""The package layout is the architecture: imports run one way, internals stay in engine/.

pages → ui → modes → lens / workspace → engine → core. A module imports from its own
package or from one below; lens and workspace are siblings and do not import each other.
Only perplex/ui (and the pages) import Streamlit; only perplex/engine touches a model's
modules or nnsight. Inside ui, views → components → shell, the same one way.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "perplex"
RANK = {"core": 0, "engine": 1, "lens": 2, "workspace": 2, "modes": 3, "ui": 4, "pages": 5}
# Attribute names that reach into a transformers model (its blocks, final norm, head).
INTERNALS = {"layers", "lm_head", "get_output_embeddings", "get_input_embeddings",
             "embed_tokens", "ln_f", "named_modules", "_module", "_model"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def package_of(path: Path) -> str:
    """The layer a file belongs to: pages, or perplex's first-level package."""
    rel = path.relative_to(ROOT)
    if rel.parts[0] == "pages":
        return "pages"
    return rel.parts[1] if len(rel.parts) > 2 else "(top)"


def sources() -> list[Path]:
    return sorted(CORE.rglob("*.py")) + sorted((ROOT / "pages").glob("*.py"))


def test_perplex_has_only_the_layers_as_packages():
    modules = sorted(p.name for p in CORE.glob("*.py"))
    packages = sorted(p.name for p in CORE.iterdir() if (p / "__init__.py").exists())
    assert modules == ["__init__.py"]
    assert packages == sorted(set(RANK) - {"pages"})


def test_imports_run_one_way():
    offenders = []
    for path in sources():
        own = package_of(path)
        for module in imported_modules(path):
            parts = module.split(".")
            if parts[0] != "perplex" or len(parts) < 2:
                continue
            other = parts[1]
            if other == own:
                continue
            if RANK[other] >= RANK[own]:
                offenders.append(f"{path.relative_to(ROOT)} ({own}) imports {module}")
    assert offenders == []


def test_the_check_sees_a_wrong_way_import(tmp_path):
    """The rule above can fail: a core module importing the engine is found."""
    bad = tmp_path / "bad.py"
    bad.write_text("from perplex.engine.local.models import LoadedModel\n")
    parts = next(iter(imported_modules(bad))).split(".")
    assert RANK[parts[1]] > RANK["core"]


def internals_touched(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = {node.attr for node in ast.walk(tree)
             if isinstance(node, ast.Attribute) and node.attr in INTERNALS}
    found |= {node.attr for node in ast.walk(tree)  # `.norm` of a model, not np.linalg.norm
              if isinstance(node, ast.Attribute) and node.attr == "norm"
              and not (isinstance(node.value, ast.Attribute) and node.value.attr == "linalg")}
    found |= {f"import {m}" for m in imported_modules(path) if m.split(".")[0] == "nnsight"}
    return found


def test_only_the_engine_touches_model_internals():
    offenders = {str(p.relative_to(ROOT)): sorted(internals_touched(p)) for p in sources()
                 if package_of(p) != "engine" and internals_touched(p)}
    assert offenders == {}
    assert "get_output_embeddings" in internals_touched(CORE / "engine" / "local" / "models.py")


def test_no_streamlit_outside_perplex_ui():
    offenders = [str(p.relative_to(CORE)) for p in CORE.rglob("*.py")
                 if "ui" not in p.relative_to(CORE).parts
                 and any(m.split(".")[0] == "streamlit" for m in imported_modules(p))]
    assert offenders == []
    assert any("streamlit" in imported_modules(p) for p in (CORE / "ui").rglob("*.py"))


# What takes a `LoadedModel` rather than an engine: the loops behind the local engine.
MODEL_PATH = {"LoadedModel", "load_model", "start_generation", "inject", "score_conversations",
              "model_continuation_probs", "generate_many", "continuation_probs"}
# The composition root: where the sidebar's model is loaded, shown and wrapped in its engine.
LOADS_MODELS = {"perplex/ui/shell/resources.py", "perplex/ui/shell/sidebar.py"}


def names_imported_from_engine(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {alias.name for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("perplex.engine")
            for alias in node.names}


def test_analyses_and_pages_take_engines_not_loaded_models():
    """Only the composition root handles a `LoadedModel`; everything else gets an engine."""
    offenders = {str(p.relative_to(ROOT)): sorted(names_imported_from_engine(p) & MODEL_PATH)
                 for p in sources() if package_of(p) != "engine"
                 and str(p.relative_to(ROOT)) not in LOADS_MODELS
                 and names_imported_from_engine(p) & MODEL_PATH}
    assert offenders == {}
    assert "LoadedModel" in names_imported_from_engine(CORE / "ui" / "shell" / "resources.py")
    reaching = [str(p.relative_to(ROOT)) for p in sources() if package_of(p) != "engine"
                and any(isinstance(node, ast.Attribute) and node.attr == "lm"
                        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))))]
    assert reaching == []  # nothing reaches through an engine to its model (`engine.lm`)


# The engines themselves: only perplex/engine (its registry above all) builds or imports one.
CONCRETE = ("perplex.engine.local", "perplex.engine.openai_compat", "perplex.engine.ndif_engine",
            "perplex.engine.nnsight_adapter")
CONCRETE_NAMES = {"LocalEngine", "EndpointEngine", "NdifEngine"}


def concrete_engine_imports(path: Path) -> set[str]:
    """What `path` imports of a concrete engine: its modules, or its class by name."""
    found = {m for m in imported_modules(path)
             if any(m == c or m.startswith(c + ".") for c in CONCRETE)}
    return found | (names_imported_from_engine(path) & CONCRETE_NAMES)


def test_only_the_registry_builds_engines():
    """Analyses, modes, the ui and pages ask the registry and the `Engine` protocol."""
    offenders = {str(p.relative_to(ROOT)): sorted(concrete_engine_imports(p))
                 for p in sources() + [ROOT / "app.py"]
                 if p.name == "app.py" or package_of(p) != "engine"
                 if concrete_engine_imports(p)}
    assert offenders == {}


def test_the_check_sees_a_concrete_engine_import(tmp_path):
    """The rule above can fail: each way of reaching a concrete engine is found."""
    bad = tmp_path / "bad.py"
    bad.write_text("from perplex.engine.local.anatomy import anatomy_of\n"
                   "import perplex.engine.openai_compat\n"
                   "from perplex.engine import LocalEngine\n")
    assert concrete_engine_imports(bad) == {"perplex.engine.local.anatomy",
                                            "perplex.engine.openai_compat", "LocalEngine"}


def test_the_address_bar_is_read_and_written_in_one_module():
    """One house, point 4: session, share link and generation in the URL, one module."""
    owner = CORE / "ui" / "shell" / "url_state.py"
    others = [str(path.relative_to(ROOT)) for path in sources() + [ROOT / "app.py"]
              if path != owner and "query_params" in path.read_text()]
    assert others == []
    assert "query_params" in owner.read_text()


# Inside ui: a mode's view builds on components, which build on the shell around every page.
UI_RANK = {"shell": 0, "components": 1, "views": 2}


def ui_part(module: str) -> str | None:
    """`shell`, `components` or `views` for a module under perplex.ui (None otherwise)."""
    parts = module.split(".")
    return parts[2] if parts[:2] == ["perplex", "ui"] and len(parts) > 2 else None


def upward_ui_imports(module: str, imported: set[str]) -> list[str]:
    """What `module` (under perplex.ui) imports from a part of ui above its own."""
    own = ui_part(module)
    return sorted(m for m in imported if own is not None
                  and ui_part(m) in UI_RANK and UI_RANK[ui_part(m)] > UI_RANK[own])


def test_ui_has_a_shell_components_and_views_importing_one_way():
    """One house, point 5: a `ui/` that shows its parts, each importing only those below."""
    ui = CORE / "ui"
    assert sorted(p.name for p in ui.glob("*.py")) == ["__init__.py"]
    assert sorted(p.name for p in ui.iterdir() if (p / "__init__.py").exists()) == \
        sorted(UI_RANK)
    found = {".".join(p.relative_to(ROOT).with_suffix("").parts): imported_modules(p)
             for p in ui.rglob("*.py")}
    offenders = {m: upward_ui_imports(m, imported) for m, imported in found.items()
                 if upward_ui_imports(m, imported)}
    assert offenders == {}


def test_the_ui_check_sees_an_upward_import():
    """The rule above can fail: the shell importing a component or a view is found."""
    imported = {"perplex.ui.components", "perplex.ui.views.chat", "perplex.ui.shell.text",
                "perplex.core.records"}
    assert upward_ui_imports("perplex.ui.shell.sidebar", imported) == [
        "perplex.ui.components", "perplex.ui.views.chat"]
    assert upward_ui_imports("perplex.ui.views.chat", imported) == []
