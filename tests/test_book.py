"""Tests of the book: glued numbers are in their notebooks' outputs, and the built book
works in a browser.

Glue (no build needed): every ``{glue:...}`` role or directive in a chapter's markdown
names a key that a code cell of that notebook (or of the notebook it names with
``path::key``) stored in its committed outputs with MyST-NB's ``glue``, and a
``{glue:text}`` format spec applies to the stored text/plain value. The build would only
warn (an error with ``-W``); this test says which key of which notebook, without a build.

Browser (after `make book`): every page of _build/html opened in headless Chromium.

It runs in `make test` after `make book`, serves _build/html on 127.0.0.1
(http.server in a thread, free port) and opens every page with Selenium and the system
Chromium (Debian: `apt-get install chromium chromium-driver`). For each page it checks that

- the equations are typeset: every Sphinx math element holds MathJax output
  (`mjx-container`), no TeX error (`mjx-merror`) and no raw TeX such as `\\frac` is left in
  the visible text;
- every image has loaded (`naturalWidth > 0`);
- the browser console has no error (no SEVERE log entry: failed scripts, fonts, images...);
- every link to a page of the book resolves to a built file, and its #anchor exists there;

and it saves a screenshot of each chapter under _build/screenshots/ (top of the page, the
first display equation, the first figure) for a human to look at.

If Chromium, chromedriver, Selenium or _build/html is missing, the browser tests are skipped with
the reason, except when the environment variable CI is set: then they fail, because CI
must run them (.ci/run installs chromium and chromium-driver).
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
IN_CI = bool(os.environ.get("CI"))

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
    "--disable-dev-shm-usage",
    "--window-size=1280,1600",
]

# Raw TeX that must not survive typesetting (searched in the visible text, code excluded).
RAW_TEX = re.compile(r"\\(frac|sum|mathbb|mathcal|operatorname|left|right|pi_|theta|log|min)\b")

BOOK = ROOT / "book"
CHAPTERS = sorted(BOOK.glob("*.ipynb"))


# ----------------------------------------------------------------------------- glue -------
# MyST-NB's glue syntax: roles {glue}`key`, {glue:}`key`, {glue:any}`key`, {glue:md}`key`,
# {glue:text}`key:fmt`, and directives ```{glue:figure} key (also :::{glue...} fences).
# A key may name another notebook: `other.ipynb::key`.
GLUE_ROLE = re.compile(r"\{glue(?::(any|text|md|math)?)?\}`([^`]+)`")
GLUE_DIRECTIVE = re.compile(r"^\s*(?:`{3,}|:{3,})\{glue(?::(any|figure|math|md)?)?\}\s+(\S+)",
                            re.MULTILINE)
# Fenced code blocks that are not directives (```python ...): MyST does not parse inside.
PLAIN_FENCE = re.compile(r"^([ \t]*)(`{3,}|~{3,})(?![ \t]*\{).*?^\1\2[ \t]*$",
                         re.MULTILINE | re.DOTALL)


def stored_glue(nb: dict) -> dict[str, dict]:
    """Glue key -> the stored mimebundle (prefix removed), from a notebook's outputs, as
    MyST-NB reads them (``myst_nb.ext.glue.extract_glue_data``). A key stored twice
    maps to the string "duplicate"."""
    found: dict[str, dict] = {}
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            meta = out.get("metadata", {}).get("scrapbook")
            if not meta:
                continue
            prefix = len(meta.get("mime_prefix", ""))
            bundle = {k[prefix:]: v for k, v in out.get("data", {}).items()}
            found[meta["name"]] = "duplicate" if meta["name"] in found else bundle
    return found


def glue_uses(nb: dict) -> list[tuple[str, str | None, str, str | None]]:
    """Every glue reference in the markdown cells: (kind, doc or None, key, fmt or None)."""
    uses = []
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "markdown":
            continue
        text = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        text = PLAIN_FENCE.sub("", text)
        refs = [(m.group(1) or "any", m.group(2)) for m in GLUE_ROLE.finditer(text)]
        refs += [(m.group(1) or "any", m.group(2)) for m in GLUE_DIRECTIVE.finditer(text)]
        for kind, content in refs:
            fmt = None
            if kind == "text":  # as MyST-NB's PasteTextRole parses it
                content, fmt = content.rsplit(":", 1) if ":" in content else (content, "s")
            doc, _, key = content.rpartition("::")
            uses.append((kind, doc or None, key, fmt))
    return uses


def glue_problems(nb_path: Path) -> list[str]:
    """What the build would fail on: glue keys used in the markdown of ``nb_path`` that are
    missing from the stored outputs, stored twice, without text/plain for {glue:text}, or
    whose text/plain does not take the format spec."""
    import json

    from myst_nb.core.variables import format_plain_text

    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    cache = {None: stored_glue(nb)}
    problems = []
    for kind, doc, key, fmt in glue_uses(nb):
        if doc not in cache:
            other = (nb_path.parent / doc).with_suffix(".ipynb")
            cache[doc] = (stored_glue(json.loads(other.read_text(encoding="utf-8")))
                          if other.is_file() else None)
        where = nb_path.name if doc is None else doc
        store = cache[doc]
        if store is None:
            problems.append(f"{key!r}: notebook {doc!r} (from {nb_path.name}) does not exist")
        elif key not in store:
            problems.append(f"{key!r} is used in the markdown but no cell of {where} glued it "
                            f"(stored keys: {sorted(store)})")
        elif store[key] == "duplicate":
            problems.append(f"{key!r} is glued more than once in {where}")
        elif kind == "text":
            plain = store[key].get("text/plain")
            if plain is None:
                problems.append(f"{key!r} in {where} has no text/plain for {{glue:text}}")
                continue
            plain = plain if isinstance(plain, str) else "".join(plain)
            try:
                format_plain_text(plain, fmt)
            except Exception as exc:  # what the build reports as a warning
                problems.append(f"{key!r} in {where}: format spec {fmt!r} fails on the "
                                f"stored value {plain!r}: {exc}")
    return problems


@pytest.mark.parametrize("nb_path", CHAPTERS, ids=[p.name for p in CHAPTERS])
def test_glue_keys_in_outputs(nb_path):
    """Every number the prose glues is in that notebook's committed outputs."""
    problems = glue_problems(nb_path)
    assert not problems, (f"{nb_path.name}: re-execute the notebook (jupyter nbconvert "
                          f"--execute --inplace) or fix the key:\n- " + "\n- ".join(problems))


def _synthetic_notebook(tmp_path: Path, markdown: str, glued: dict[str, str],
                        name: str = "nb.ipynb") -> Path:
    """A notebook with one markdown cell and one code cell whose outputs hold ``glued``
    (key -> text/plain) the way ``myst_nb.glue(key, value, display=False)`` stores it."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    outputs = [nbformat.v4.new_output(
        "display_data", data={"application/papermill.record/text/plain": text},
        metadata={"scrapbook": {"name": key, "mime_prefix": "application/papermill.record/"}})
        for key, text in glued.items()]
    nb.cells = [nbformat.v4.new_markdown_cell(markdown),
                nbformat.v4.new_code_cell("glue(...)", outputs=outputs)]
    path = tmp_path / name
    nbformat.write(nb, path)
    return path


def test_glue_check_fails_on_a_missing_key(tmp_path):
    """The checker cannot pass a notebook whose prose uses a number it never glued."""
    md = ("Accuracy {glue:text}`acc:.3f` after {glue:text}`steps` steps; "
          "loss {glue}`loss`.\n\n```python\n{glue:text}`in_code_block`\n```\n")
    complete = _synthetic_notebook(tmp_path, md, {"acc": "0.5123", "steps": "40",
                                                  "loss": "0.69"}, "complete.ipynb")
    assert glue_problems(complete) == []
    missing = _synthetic_notebook(tmp_path, md, {"acc": "0.5123", "loss": "0.69"},
                                  "missing.ipynb")
    problems = glue_problems(missing)
    assert len(problems) == 1 and "'steps'" in problems[0], problems
    with pytest.raises(AssertionError, match="steps"):
        test_glue_keys_in_outputs(missing)


def test_glue_check_fails_on_bad_format_and_other_notebooks(tmp_path):
    """A format spec the stored value cannot take, a duplicated key, and keys of another
    notebook (``other.ipynb::key``) are checked too."""
    bad = _synthetic_notebook(tmp_path, "{glue:text}`name:.2f`", {"name": "'forty'"},
                              "bad.ipynb")
    assert len(glue_problems(bad)) == 1 and "format spec" in glue_problems(bad)[0]
    _synthetic_notebook(tmp_path, "", {"x": "1.25"}, "other.ipynb")
    ok = _synthetic_notebook(tmp_path, "{glue:text}`other.ipynb::x:.1f`", {}, "ok.ipynb")
    assert glue_problems(ok) == []
    gone = _synthetic_notebook(tmp_path, "{glue:text}`other.ipynb::y:.1f`", {}, "gone.ipynb")
    assert "'y'" in glue_problems(gone)[0]
    import nbformat

    dup = nbformat.read(_synthetic_notebook(tmp_path, "{glue}`x`", {"x": "1"}, "dup.ipynb"),
                        as_version=4)
    dup.cells.append(nbformat.v4.new_code_cell("glue(...)", outputs=dup.cells[1].outputs))
    nbformat.write(dup, tmp_path / "dup.ipynb")
    assert "more than once" in glue_problems(tmp_path / "dup.ipynb")[0]


# ------------------------------------------------------------------ literalinclude -------
# Chapters include course_lib's code with {literalinclude} (CONTRIBUTING.md, conventions):
# core lines between `# [core:NAME]` / `# [/core:NAME]` comments, whole functions by
# :pyobject:. A missing file, marker or object is a build warning (an error with -W); these
# tests name it without a build.
CORE_MODULES = ["surrogate", "kl", "grpo", "ppo", "reinforce", "dpo"]
INCLUDE = re.compile(r"^[ \t]*(`{3,}|:{3,})\{literalinclude\}[ \t]+(\S+)[ \t]*\n"
                     r"((?:[ \t]*:[\w-]+:.*\n)*)", re.MULTILINE)


def _pyobject_names(source: str) -> set[str]:
    """Top-level functions/classes and Class.method names of a module, as :pyobject: takes."""
    import ast

    names = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            names |= {f"{node.name}.{n.name}" for n in node.body
                      if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    return names


def literalinclude_problems(nb_path: Path) -> list[str]:
    """Included files that do not exist, markers or lines not in them, unknown :pyobject:."""
    import json

    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    problems = []
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "markdown":
            continue
        text = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        for m in INCLUDE.finditer(text + "\n"):
            path = (nb_path.parent / m.group(2)).resolve()
            if not path.is_file():
                problems.append(f"{m.group(2)}: no such file (paths are relative to book/)")
                continue
            source = path.read_text(encoding="utf-8")
            opts = dict(re.findall(r":([\w-]+):[ \t]*(.*)", m.group(3)))
            for key in ("start-after", "end-before", "start-at", "end-at"):
                if key in opts and opts[key].strip().strip('"') not in source:
                    problems.append(f"{m.group(2)}: {key} {opts[key]!r} not found")
            if "pyobject" in opts and opts["pyobject"].strip() not in _pyobject_names(source):
                problems.append(f"{m.group(2)}: no object {opts['pyobject'].strip()!r}")
    return problems


@pytest.mark.parametrize("nb_path", CHAPTERS, ids=[p.name for p in CHAPTERS])
def test_literalincludes_resolve(nb_path):
    problems = literalinclude_problems(nb_path)
    assert not problems, f"{nb_path.name}:\n- " + "\n- ".join(problems)


def test_literalinclude_check_fails_on_a_missing_marker(tmp_path):
    """The checker cannot pass an include whose marker, object or file is gone."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(
        "```{literalinclude} ../course_lib/grpo.py\n:start-after: \"[core:grpo_loss]\"\n"
        ":end-before: \"[/core:no_such]\"\n```\n\n"
        "```{literalinclude} ../course_lib/grpo.py\n:pyobject: no_such_function\n```\n\n"
        "```{literalinclude} ../course_lib/no_such.py\n```\n")]
    (tmp_path / "book").mkdir()
    path = tmp_path / "book" / "nb.ipynb"
    nbformat.write(nb, path)
    (tmp_path / "course_lib").symlink_to(ROOT / "course_lib")
    problems = literalinclude_problems(path)
    assert len(problems) == 3, problems
    assert "[/core:no_such]" in problems[0] and "no_such_function" in problems[1]


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_markers_paired(module):
    """Every `# [core:NAME]` has its `# [/core:NAME]` after it, inside function NAME."""
    import ast

    source = (ROOT / "course_lib" / f"{module}.py").read_text(encoding="utf-8")
    lines = source.splitlines()
    spans = {n.name: (n.lineno, n.end_lineno) for n in ast.parse(source).body
             if isinstance(n, ast.FunctionDef)}
    opened = {m.group(1): i for i, line in enumerate(lines, 1)
              if (m := re.search(r"# \[core:(\w+)\]", line))}
    closed = {m.group(1): i for i, line in enumerate(lines, 1)
              if (m := re.search(r"# \[/core:(\w+)\]", line))}
    public = [n for n in spans if not n.startswith("_")]
    assert sorted(opened) == sorted(closed) == sorted(public), (
        f"course_lib/{module}.py: markers open {sorted(opened)}, close {sorted(closed)}, "
        f"public functions {sorted(public)}")
    for name, start in opened.items():
        first, last = spans[name]
        assert first < start < closed[name] <= last + 1, (
            f"course_lib/{module}.py: the markers of {name} (lines {start}, {closed[name]}) "
            f"are not inside it (lines {first}-{last})")


# -------------------------------------------------------------------------- browser -------
def _missing_or_fail(reason: str) -> None:
    """Skip with a visible reason, or fail in CI where the browser test must run."""
    if IN_CI:
        pytest.fail(f"browser test cannot run in CI: {reason}")
    pytest.skip(reason)


def _find(names: list[str]) -> str | None:
    for name in names:
        path = name if os.path.isabs(name) else shutil.which(name)
        if path and os.path.exists(path):
            return path
    return None


def _pages() -> list[str]:
    """Every HTML page of the build, as paths relative to _build/html."""
    if not HTML.is_dir():
        return []
    return sorted(p.relative_to(HTML).as_posix() for p in HTML.rglob("*.html")
                  if "_static" not in p.parts and "_sources" not in p.parts)


PAGES = _pages()


@pytest.fixture(scope="module")
def server():
    if not (HTML / "index.html").exists():
        _missing_or_fail(f"{HTML} has no index.html: run `make book` first")
    handler = functools.partial(_QuietHandler, directory=str(HTML))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output clean
        pass


@pytest.fixture(scope="module")
def browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing_or_fail("selenium is not installed")
    chromium = _find([os.environ.get("CHROMIUM", ""), "/usr/bin/chromium", "chromium",
                      "chromium-browser", "google-chrome"])
    driver_path = _find([os.environ.get("CHROMEDRIVER", ""), "/usr/bin/chromedriver",
                         "chromedriver"])
    if not chromium or not driver_path:
        _missing_or_fail("Chromium or chromedriver not found (Debian: apt-get install "
                         "chromium chromium-driver)")
    profile = tempfile.mkdtemp(prefix="book-test-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={profile}"]:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _wait_for_mathjax(driver) -> object:
    """Resolve once MathJax has typeset the page (or at once if the page has no MathJax)."""
    return driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        const settle = () => {
          if (!(window.MathJax && MathJax.startup && MathJax.startup.promise)) {
            done(document.querySelector('.math') ? 'MathJax did not load' : null);
            return;
          }
          MathJax.startup.promise.then(() => done(null)).catch(e => done(String(e)));
        };
        if (document.readyState === 'complete') settle();
        else window.addEventListener('load', settle);
        """
    )


def _images_state(driver) -> list[dict]:
    """Wait (up to 10 s) for every image to finish loading, then report each image."""
    return driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        const imgs = Array.from(document.images);
        imgs.forEach(i => { i.loading = 'eager'; });
        const t0 = Date.now();
        const poll = () => {
          if (imgs.every(i => i.complete) || Date.now() - t0 > 10000) {
            done(imgs.map(i => ({src: i.currentSrc || i.src, w: i.naturalWidth})));
          } else setTimeout(poll, 100);
        };
        poll();
        """
    )


def _local_target(href: str, base: str) -> tuple[Path, str] | None:
    """(file, fragment) of a link into the book, or None for links leaving it."""
    if not href.startswith(base + "/"):
        return None
    url, frag = urldefrag(href)
    path = unquote(urlsplit(url).path).lstrip("/")
    target = HTML / path
    if path == "" or path.endswith("/") or target.is_dir():
        target = target / "index.html"
    return target, frag


@functools.cache
def _ids(path: Path) -> frozenset[str]:
    text = path.read_text(encoding="utf-8", errors="replace")
    return frozenset(re.findall(r"""\bid=["']([^"']+)["']""", text))


def _screenshot(driver, page: str, selector: str | None, suffix: str) -> None:
    name = page.replace("/", "_").removesuffix(".html")
    if selector is not None:
        found = driver.execute_script(  # instant: the theme's smooth scrolling would lag
            "const e = document.querySelector(arguments[0]); if (!e) return false;"
            "const y = e.getBoundingClientRect().top + window.scrollY - 150;"
            "window.scrollTo({top: y, behavior: 'instant'}); return true;",
            selector,
        )
        if not found:
            return
    else:
        driver.execute_script("window.scrollTo({top: 0, behavior: 'instant'});")
    driver.save_screenshot(str(SHOTS / f"{name}{suffix}.png"))


@pytest.mark.browser
def test_book_was_built():
    """The build has the pages the table of contents promises."""
    if not PAGES:
        _missing_or_fail(f"{HTML} is missing or empty: run `make book` first")
    toc = (ROOT / "_toc.yml").read_text()
    files = re.findall(r"(?:root|file):\s*(\S+)", toc)
    assert files, "no pages found in _toc.yml"
    missing = [f for f in files if f"{f}.html" not in PAGES]
    assert not missing, f"pages in _toc.yml but not in {HTML}: {missing}"


@pytest.mark.browser
@pytest.mark.parametrize("page", PAGES or ["(no build)"])
def test_page_in_browser(page, server, browser):
    if page == "(no build)":
        _missing_or_fail(f"{HTML} is missing: run `make book` first")
    browser.get_log("browser")  # drop entries of the previous page
    browser.get(f"{server}/{page}")
    problems: list[str] = []

    # -- equations ------------------------------------------------------------------------
    mj_error = _wait_for_mathjax(browser)
    if mj_error:
        problems.append(f"MathJax: {mj_error}")
    math = browser.execute_script(
        """
        const els = Array.from(document.querySelectorAll('.math'));
        const untypeset = els.filter(e => !e.querySelector('mjx-container'))
                             .map(e => e.textContent.trim().slice(0, 80));
        const errors = Array.from(document.querySelectorAll('mjx-merror'))
                             .map(e => e.textContent.slice(0, 80));
        const clone = document.body.cloneNode(true);
        clone.querySelectorAll('pre, code, script, style, mjx-assistive-mml, .output')
             .forEach(e => e.remove());
        return {n: els.length, containers: document.querySelectorAll('mjx-container').length,
                untypeset: untypeset, errors: errors, text: clone.innerText};
        """
    )
    if math["untypeset"]:
        problems.append(f"{len(math['untypeset'])} of {math['n']} equations not typeset, "
                        f"e.g. {math['untypeset'][:3]}")
    if math["errors"]:
        problems.append(f"TeX errors in equations: {math['errors'][:5]}")
    raw = sorted({m.group(0) for m in RAW_TEX.finditer(math["text"])})
    if raw:
        problems.append(f"raw TeX left in the text: {raw}")

    # -- images ---------------------------------------------------------------------------
    broken = [img["src"] for img in _images_state(browser) if not img["w"]]
    if broken:
        problems.append(f"images that did not load: {broken}")

    # -- console errors -------------------------------------------------------------------
    severe = [e["message"] for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    if severe:
        problems.append(f"console errors: {severe}")

    # -- internal links -------------------------------------------------------------------
    hrefs = browser.execute_script(
        "return Array.from(document.querySelectorAll('a[href]')).map(a => a.href);"
    )
    dead = []
    for href in sorted(set(hrefs)):
        target = _local_target(href, server)
        if target is None:
            continue
        path, frag = target
        if not path.is_file():
            dead.append(f"{href} (no file {path.relative_to(HTML)})")
        elif frag and path.suffix == ".html" and unquote(frag) not in _ids(path):
            dead.append(f"{href} (no id {frag!r} in {path.relative_to(HTML)})")
    if dead:
        problems.append(f"internal links that do not resolve: {dead}")

    # -- screenshots of the chapters ------------------------------------------------------
    if page.startswith("book/"):
        SHOTS.mkdir(parents=True, exist_ok=True)
        _screenshot(browser, page, None, "")
        _screenshot(browser, page, "div.math", "-equation")
        _screenshot(browser, page, ".cell_output img", "-figure")

    assert not problems, f"{page}:\n- " + "\n- ".join(problems)
