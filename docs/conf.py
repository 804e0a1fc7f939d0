"""Sphinx configuration of the nbgroups documentation site.

Build (the README's development section, and scripts/test.sh in CI)::

    .venv/bin/python -m sphinx -W --keep-going -n -b html docs docs/_build/html

``-W`` turns every warning into an error and ``-n`` (nitpicky) makes any
cross-reference that does not resolve a warning, so a broken internal link
fails the build. No intersphinx: the build needs no network beyond the package
index; references to names outside nbgroups (``str``, ``typing.Any``,
``pandas.DataFrame``) are left as plain text by :func:`_external_reference`,
references into nbgroups must resolve.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # the checkout's nbgroups, installed or not

import nbgroups  # noqa: E402

project = "nbgroups"
author = "the nbgroups authors"
copyright = "2026, the nbgroups authors"  # noqa: A001 - Sphinx's name
release = version = nbgroups.__version__

extensions = [
    "myst_nb",  # Markdown pages (MyST) and executed notebooks
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",  # the "Parameters / Returns / Raises" sections of docstrings
    "sphinxarg.ext",  # the CLI reference, from nbgroups.cli.build_parser
]

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints", "jupyter_execute"]
html_theme = "furo"
html_title = f"nbgroups {release}"
html_static_path: list[str] = []

# ---------------------------------------------------------------- MyST
myst_enable_extensions = ["colon_fence", "deflist", "dollarmath"]
myst_heading_anchors = 3  # [text](page.md#a-heading) links resolve (and are checked)

# ---------------------------------------------------------------- notebooks (myst-nb)
# The gallery executes the notebooks of notebooks/ on every build (cache off:
# the gallery shows what the code does today). Each runs in a temp directory,
# on a store of its own under the build's temp dir, with 2 loky workers; the
# widget state is saved with the outputs, so the progress views render.
nb_execution_mode = "force"
nb_execution_in_temp = True
nb_execution_timeout = 300
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True

GALLERY = DOCS / "gallery"
for _notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
    # Sphinx reads sources under docs/ only: the committed notebooks are copied
    # in (docs/gallery/*.ipynb is ignored by git), only when they changed so
    # that an unchanged notebook is not re-read.
    _copy = GALLERY / _notebook.name
    if not _copy.exists() or _copy.read_bytes() != _notebook.read_bytes():
        shutil.copyfile(_notebook, _copy)

_STORE = tempfile.mkdtemp(prefix="nbgroups-docs-")
os.environ.setdefault("NBGROUPS_WORKERS", "2")
# The kernels inherit this environment: any store a notebook does not choose
# itself lands here, never in the source tree.
os.environ["NBGROUPS_STORE"] = os.path.join(_STORE, "default")

# ---------------------------------------------------------------- autodoc
autodoc_member_order = "bysource"
autodoc_typehints = "description"  # parameter and return types beside their descriptions
autodoc_typehints_description_target = "documented_params"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

nitpicky = True

# A name documented as nbgroups.<name> may be defined in any submodule (the API
# moves between modules); a reference to nbgroups.<module>.<name> resolves to the
# public name. Anything else under nbgroups must resolve or the build fails.
_INTERNAL = re.compile(r"^~?nbgroups(\.|$)")


def _public_target(app, env, node, contnode):
    """Resolve ``nbgroups.<module>.<Name>`` to where ``Name`` is documented.

    The public names are documented as ``nbgroups.<Name>``; a few values they
    return (``Settings``) under their module. Either way a reference through
    another module path (annotations name the defining module, which moves
    with refactors) finds the one documented object of that name.
    """
    target = node.get("reftarget", "")
    if node.get("refdomain") != "py" or not target.startswith("nbgroups."):
        return None
    name = target.rsplit(".", 1)[-1]
    domain = env.get_domain("py")
    found = [full for full in domain.objects
             if full.startswith("nbgroups.") and full.rsplit(".", 1)[-1] == name
             and full != target]
    if len(found) != 1:
        return None
    node = node.deepcopy()
    node["reftarget"] = found[0]
    return domain.resolve_xref(env, node.get("refdoc", ""), app.builder, node["reftype"],
                               found[0], node, contnode)


def _external_reference(app, env, node, contnode):
    """Leave references to other libraries as text: there is no network to link them.

    Returning a node ends the ``missing-reference`` event, so Sphinx warns for
    what is left: references into nbgroups and to the site's own pages.
    """
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    if _INTERNAL.match(target) and not target.rsplit(".", 1)[-1].startswith("_"):
        return None  # a private class in a return annotation stays text
    if target in {"Task", "TaskList", "GroupCounts", "State"}:  # unqualified in a docstring
        return None
    return contnode


def setup(app):
    app.connect("missing-reference", _public_target, priority=400)
    app.connect("missing-reference", _external_reference, priority=900)
