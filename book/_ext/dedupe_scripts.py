"""Sphinx extension of the book: drop inline <script> blocks that appear twice on a page.

With Sphinx 7.4, extensions that add inline JavaScript while the environment is being
read (sphinx-thebe: ``const THEBE_JS_URL = ...``; sphinx-togglebutton) get their script
emitted twice, once from the extension registry (file name "") and once from the builder
(file name None), so Sphinx's own de-duplication misses it. A repeated ``const``
declaration is a SyntaxError in the browser console on every page, and the browser test
(tests/test_book.py) fails on console errors. This removes the second copy of any script
whose file name and attributes (including the inline body) equal an earlier one's.
"""

from __future__ import annotations


def _dedupe(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set[tuple] = set()
    unique = []
    for js in scripts:
        attrs = tuple(sorted((k, str(v)) for k, v in getattr(js, "attributes", {}).items()))
        # the same inline script arrives once with filename None and once with ""
        key = (getattr(js, "filename", str(js)) or "", attrs)
        if key in seen:
            continue
        seen.add(key)
        unique.append(js)
    scripts[:] = unique  # in place: it is the builder's list, which later handlers extend


def setup(app):
    # html-page-context is emitted with emit_firstresult: a handler that returns a value
    # stops the later ones, so run early (the duplicates exist before any page is written).
    app.connect("html-page-context", _dedupe, priority=100)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
