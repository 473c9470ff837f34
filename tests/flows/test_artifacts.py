"""The report card where a Prefect user looks, in a real UI: scripts/screenshot_flow_run.py runs the
micro pipeline against its own `prefect server start`, opens the pipeline's flow run in headless
Chromium, its Artifacts tab and the report card there, and shoots it once every plot in the card
has loaded (the script waits for each image's naturalWidth > 0, the pretraining loss plot among
them). About a minute: the server's start, one pipeline run and the browser.

That the artifacts are on the top-level run at all, and what they hold, is
tests/flows/test_pipeline.py's (against the test harness, which serves no UI).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
SCRIPT = REPO / "scripts" / "screenshot_flow_run.py"

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the server is stopped through /proc")


def browser_missing() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is not installed (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (a dev dependency: pip install -e '.[dev]')"
    return None


def test_the_screenshot_script_shows_the_report_card_and_its_loss_plot_in_the_ui(tmp_path):
    """In the v1 UI, where a run's "View at" link leads (the v2 UI renders the same card: see
    docs/results.md)."""
    missing = browser_missing()
    if missing:
        if os.environ.get("CI"):  # CI installs both (.ci/run): there, a skip would hide a broken page
            pytest.fail(missing)
        pytest.skip(missing)
    from PIL import Image

    out, run_page = tmp_path / "card.png", tmp_path / "run.png"
    # Nothing of this test process's Prefect settings (the harness's API) reaches the script.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "client-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--run-page-out", str(run_page),
                           "--ui", "v1", "--work-dir", str(tmp_path / "work")],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    flow_run = re.search(r"^flow run: (\S+/runs/flow-run/\S+)$", done.stdout, re.M)
    card = re.search(r"^report card: (\S+/artifacts/artifact/\S+)$", done.stdout, re.M)
    assert flow_run and card, done.stdout
    # The card down to its first loss plot: taller than a window, as wide as the page was.
    with Image.open(out) as shot:
        assert shot.format == "PNG" and shot.width == 1400 and shot.height > 1000
    with Image.open(run_page) as shot:
        assert shot.format == "PNG" and shot.size == (1400, 1000)
    assert (tmp_path / "work" / "report.md").is_file() and (tmp_path / "work" / "pretrain_loss.png").is_file()
