#!/usr/bin/python3
"""Checks ptk's documentation site.

    check_site.py pages SOURCE_DIR EXAMPLE_OUTPUT_DIR
        every numbered example has a tutorial page that embeds the program
        (\\include or \\snippet) and its output (\\verbinclude NN-name.txt); every
        page's embedded file exists; the main page links every tutorial in order;
        docs/CMakeLists.txt lists every page.
    check_site.py render HTML_DIR CHROMIUM
        headless Chromium renders the main page and a tutorial page; each must show
        the navigation tree, and the tutorial its embedded code block.
"""
import os
import re
import subprocess
import sys
import tempfile

EMBED = re.compile(r"[\\@](include|snippet|verbinclude|dontinclude|includelineno)\{?[a-z]*\}?\s+(\S+)")


def pages(src, outputs):
    errors = []
    examples = sorted(f[:-4] for f in os.listdir(os.path.join(src, "examples"))
                      if re.match(r"^\d\d-.*\.cpp$", f))
    tut_dir = os.path.join(src, "docs", "tutorials")
    tutorials = {f[:-3]: os.path.join(tut_dir, f) for f in os.listdir(tut_dir) if f.endswith(".md")}
    with open(os.path.join(src, "docs", "mainpage.md")) as f:
        mainpage = f.read()
    with open(os.path.join(src, "docs", "CMakeLists.txt")) as f:
        listed = f.read()
    order = []
    for ex in examples:
        page = tutorials.get(ex)
        if page is None:
            errors.append(f"examples/{ex}.cpp has no tutorial page docs/tutorials/{ex}.md")
            continue
        text = open(page).read()
        if not re.search(r"[\\@](include|snippet)\{?[a-z]*\}?\s+" + re.escape(ex) + r"\.cpp", text):
            errors.append(f"docs/tutorials/{ex}.md does not embed examples/{ex}.cpp")
        if not re.search(r"[\\@]verbinclude\s+" + re.escape(ex) + r"\.txt", text):
            errors.append(f"docs/tutorials/{ex}.md does not embed the output {ex}.txt")
        anchor = re.search(r"\{#(\w+)\}", text)
        if not anchor:
            errors.append(f"docs/tutorials/{ex}.md has no page anchor")
        else:
            pos = mainpage.find("@subpage " + anchor.group(1) + "\n")
            if pos < 0:
                errors.append(f"docs/mainpage.md does not link {anchor.group(1)}")
            order.append(pos)
        if f"tutorials/{ex}.md" not in listed:
            errors.append(f"docs/CMakeLists.txt does not list tutorials/{ex}.md")
    if order != sorted(order):
        errors.append("docs/mainpage.md lists the tutorials out of the examples' order")
    for name in list(tutorials) + ["../mainpage", "../design"]:
        path = tutorials.get(name) or os.path.join(tut_dir, name + ".md")
        if not os.path.exists(path):
            continue
        for kind, target in EMBED.findall(open(path).read()):
            places = [os.path.join(src, "examples", target), os.path.join(outputs, target)]
            if not any(os.path.exists(p) for p in places):
                errors.append(f"{os.path.relpath(path, src)} embeds {target}, which does not exist")
    for e in errors:
        print("check_site:", e, file=sys.stderr)
    print(f"check_site: {len(examples)} examples, {len(tutorials)} tutorial pages, {len(errors)} problems")
    return 1 if errors else 0


def render(html, chromium, page):
    with tempfile.TemporaryDirectory() as profile:
        r = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                            f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom",
                            "file://" + os.path.abspath(os.path.join(html, page))],
                           capture_output=True, text=True, timeout=120)
    return r.stdout


def render_check(html, chromium):
    errors = []
    main = render(html, chromium, "index.html")
    # nav-tree-contents is filled in by the site's scripts: present only if they ran.
    if 'id="nav-tree-contents"' not in main or "tutorial_01.html" not in main:
        errors.append("index.html: no navigation tree leading to the tutorials")
    tutorial = render(html, chromium, "tutorial_07.html")
    if 'id="nav-tree-contents"' not in tutorial or 'class="item selected"' not in tutorial:
        errors.append("tutorial_07.html: no navigation tree showing where the page is")
    if 'class="fragment"' not in tutorial or "ptk::spawn" not in tutorial:
        errors.append("tutorial_07.html: the embedded example program is missing")
    for e in errors:
        print("check_site:", e, file=sys.stderr)
    print(f"check_site: rendered index.html ({len(main)} bytes) and tutorial_07.html ({len(tutorial)} bytes)")
    return 1 if errors else 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "pages":
        sys.exit(pages(sys.argv[2], sys.argv[3]))
    if len(sys.argv) == 4 and sys.argv[1] == "render":
        sys.exit(render_check(sys.argv[2], sys.argv[3]))
    print(__doc__, file=sys.stderr)
    sys.exit(2)
