"""Every code block in docs/*.md runs here, so the docs cannot drift from the code.

``spec.md`` runs as one script (blocks in order, one namespace) with ``schema``
bound to a fresh schema and the local store ``main`` as ``stores.default``.
``codec-authors.md`` defines codecs and conformance suites: its blocks are
concatenated into a test module and run with pytest in a child process, kit included.
"""

from __future__ import annotations

import re
from pathlib import Path

import datajoint as dj
import pytest
from pytest_runs import run_pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RUN_AS_TEST_MODULE = {"codec-authors.md"}

FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"\]\(([^)#]+)(#[^)]*)?\)")


def code_blocks(doc: Path) -> list[tuple[str, str]]:
    """``(language, code)`` of every fenced block in ``doc``."""
    return FENCE.findall(doc.read_text())


def all_docs() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def test_docs_exist_and_every_block_is_python():
    assert {doc.name for doc in all_docs()} >= {"spec.md", "codec-authors.md"}
    for doc in all_docs():
        languages = [language for language, _ in code_blocks(doc)]
        assert languages, f"{doc.name} has no code block"
        assert set(languages) == {"python"}, f"{doc.name}: only python blocks, which this suite runs"


@pytest.mark.parametrize("doc", [d for d in all_docs() if d.name not in RUN_AS_TEST_MODULE], ids=lambda d: d.name)
def test_doc_blocks_run_as_one_script(doc, dj_schema, dj_local_store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    registered = set(dj.codecs.list_codecs())
    namespace = {"schema": dj_schema, "__name__": f"docs_{doc.stem}"}
    try:
        with dj.config.override(download_path=str(tmp_path / "downloads")):
            for number, (_, code) in enumerate(code_blocks(doc), start=1):
                exec(compile(code, f"{doc.name} block {number}", "exec"), namespace)
    finally:
        for name in set(dj.codecs.list_codecs()) - registered:
            dj.codecs.unregister_codec(name)


@pytest.mark.parametrize("name", sorted(RUN_AS_TEST_MODULE))
def test_doc_blocks_run_as_a_test_module(name, tmp_path):
    module = tmp_path / f"test_doc_{Path(name).stem.replace('-', '_')}.py"
    module.write_text("\n\n".join(code for _, code in code_blocks(DOCS / name)))
    run = run_pytest(module, tmp_path)
    assert run.returncode == 0 and set(run.outcomes.values()) == {"passed"}, run.failures or run.output
    suites = set(re.findall(r"^class (Test\w+)\(", module.read_text(), re.MULTILINE))
    assert {case.split("::")[0] for case in run.outcomes} == suites, "every suite in the doc ran"


@pytest.mark.parametrize("doc", [*all_docs(), ROOT / "README.md"], ids=lambda d: d.name)
def test_relative_links_resolve(doc):
    for target, _ in LINK.findall(doc.read_text()):
        if "://" not in target:
            assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"
