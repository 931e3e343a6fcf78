"""A real headless browser (Debian's chromium-headless-shell) opening Snakemake's HTML report:
every figure it embeds is shown in turn through the report's own viewer and must decode, and
the page must fetch nothing over the network."""

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

BROWSER = "chromium-headless-shell"
# Runs in the report after it has loaded: show each image result in the report's content view
# (its global `app`), read what the browser decoded, then list every resource fetched.
PROBE = """
<script>
// Runs once the report's scripts have run. The report renders asynchronously (React's
// createRoot): render it, and show each figure, synchronously. A copy of each <img> the
// report's viewer made stays in the page, so the load event waits until the browser has
// decoded every one of them.
const probe = {images: [], resources: [], error: null};
const shown = document.createElement("div");
shown.style.display = "none";
document.body.appendChild(shown);
try {
  ReactDOM.flushSync(() => root.render(e(App)));
  for (const [path, r] of Object.entries(results)) {
    if (!r.mime_type.startsWith("image/")) continue;
    ReactDOM.flushSync(() => app.setView({content: "img", contentPath: r.data_uri}));
    const img = Array.from(document.images).find(i => i.src === r.data_uri);
    probe.images.push({path, shown: !!img});
    if (img) shown.appendChild(img.cloneNode());
  }
} catch (err) {
  probe.error = String(err);
}
window.addEventListener("load", () => {
  const copies = Array.from(shown.children);
  probe.images.filter(i => i.shown).forEach((info, k) => {
    info.width = copies[k].naturalWidth;
    info.height = copies[k].naturalHeight;
  });
  probe.resources = performance.getEntriesByType("resource").map(x => x.name);
  const pre = document.createElement("pre");
  pre.id = "report-probe";
  pre.textContent = JSON.stringify(probe);
  document.body.appendChild(pre);
});
</script>
"""


def browser() -> str:
    """The browser's path; installed with apt-get where it is missing and this runs as root,
    else the test is skipped."""
    if shutil.which(BROWSER):
        return shutil.which(BROWSER)
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip(f"{BROWSER} is not installed and installing it needs root and apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", BROWSER], check=True, env=env,
                   capture_output=True)
    return shutil.which(BROWSER)


def _run(exe: str, page: Path, *args: str) -> subprocess.CompletedProcess:
    # no name resolves: anything the page tried to fetch from the network would fail (and show
    # in the resource list below)
    return subprocess.run([exe, "--no-sandbox", "--disable-gpu", "--host-resolver-rules=MAP * ~NOTFOUND",
                           "--virtual-time-budget=60000", "--window-size=1400,1000", *args, page.as_uri()],
                          capture_output=True, text=True, timeout=300)


def open_report(report: Path, screenshot: Path) -> dict:
    """What the browser saw: each image result's decoded size, the resources the page fetched;
    and a screenshot of the page with the last figure shown."""
    exe = browser()
    page = report.with_name(report.stem + ".probe.html")
    head, tag, tail = report.read_text().rpartition("</body>")  # the last one: scripts hold others
    page.write_text(head + PROBE + tag + tail)
    dom = _run(exe, page, "--dump-dom")
    found = re.search(r'<pre id="report-probe">(.*?)</pre>', dom.stdout, re.S)
    assert found, f"the report's probe never ran:\n{dom.stderr[-2000:]}"
    _run(exe, page, f"--screenshot={screenshot}")
    return json.loads(html.unescape(found.group(1)))
