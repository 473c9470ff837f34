"""A PNG of what a Prefect user sees of a finished crawl2chat run: the pipeline's flow run page, its
Artifacts tab, and the report card it links to, with the card's plots loaded.

    .venv/bin/python scripts/screenshot_flow_run.py --out report-card.png

starts `prefect server start` on a free loopback port (stopped at the end), runs the pipeline on the
micro config of the tests (tests/support/pipeline.py) against it, and opens the run in headless
Chromium (the system's /usr/bin/chromium, through playwright, a dev dependency): about a minute on
two cores. --api-url uses a running server instead (its UI must know its API's address:
PREFECT_UI_API_URL), --flow-run-id a run already finished on it; --preset and --set choose another
config, as `crawl2chat run` does. --ui v1 (the default) is the UI that the run's "View at" link
opens; v2 is the one the server's front page opens.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a file: the repo's tests/ package is not installed

from tests.support.prefect_server import prefect_server  # noqa: E402  (the suite's server, stopped with all it started)

CHROMIUM = "/usr/bin/chromium"
RENDER_TIMEOUT_MS = 60_000
# The report card's images have loaded and one of them is the pretraining loss plot.
PLOTS_LOADED = """() => {
    const images = [...document.querySelectorAll('img[src^="data:image/png"]')];
    return images.some(i => i.alt.startsWith('Pretraining'))
        && images.every(i => i.complete && i.naturalWidth > 0);
}"""
# The tallest scrolling box: the v1 UI scrolls its content inside one, not the page, so a full-page
# screenshot would show no more than the window.
CONTENT_HEIGHT = """() => Math.max(document.documentElement.scrollHeight,
    ...[...document.querySelectorAll('*')].filter(e => /(auto|scroll)/.test(getComputedStyle(e).overflowY))
        .map(e => e.scrollHeight + e.getBoundingClientRect().top))"""


def run_pipeline(api_url: str, args: argparse.Namespace, work: Path) -> str:
    """Run the pipeline in this process against the server; return its flow run id."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.config import deep_merge, load_config, parse_override
    from flows.pipeline import pipeline
    from tests.support.pipeline import micro_config

    overrides: dict = {}
    for item in args.set or []:
        overrides = deep_merge(overrides, parse_override(item))
    if args.preset:
        config = load_config(args.preset, {**overrides, "work_dir": str(work)})
    else:
        config = micro_config(work, **overrides)
    with temporary_settings({PREFECT_API_URL: api_url}):
        state = pipeline(config, return_state=True)
    if not state.is_completed():
        raise SystemExit(f"the pipeline run ended {state.name}: {state.message}")
    return str(state.state_details.flow_run_id)


def screenshot(ui_url: str, flow_run_id: str, args: argparse.Namespace) -> str:
    """Open the flow run, its Artifacts tab and the report card there; write the PNG(s); return the
    card's URL. The card is cut below its pretraining loss plot unless --full."""
    from playwright.sync_api import sync_playwright

    base = ui_url if args.ui == "v1" else f"{ui_url}/v2"
    with sync_playwright() as p:
        # The system's Chromium, never a downloaded one; --no-sandbox since CI runs as root.
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], timeout=30_000)
        try:
            page = browser.new_page(viewport={"width": args.width, "height": 1000})
            page.set_default_timeout(RENDER_TIMEOUT_MS)
            page.goto(f"{base}/runs/flow-run/{flow_run_id}")
            # v1's tabs are list items of a tablist, v2's are tab buttons.
            page.get_by_role("tablist").get_by_text("Artifacts", exact=True).first.click()
            card_link = page.get_by_text("report-card", exact=True).first
            card_link.wait_for()
            if args.run_page_out:
                save(page, args.run_page_out)
            card_link.click()
            page.wait_for_url("**/artifacts/artifact/**")
            page.get_by_role("heading", name="crawl2chat report card").wait_for()
            page.wait_for_function(PLOTS_LOADED)
            height = min(int(page.evaluate(CONTENT_HEIGHT)), 30_000)
            page.set_viewport_size({"width": args.width, "height": height})
            page.wait_for_function(PLOTS_LOADED)
            if not args.full:
                plot = page.locator('img[alt^="Pretraining"]').bounding_box()
                height = min(height, int(plot["y"] + plot["height"]) + 24)
            save(page, args.out, clip={"x": 0, "y": 0, "width": args.width, "height": height})
            return page.url
        finally:
            browser.close()


def save(page, path: Path, **options) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), **options)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="where to write the PNG")
    parser.add_argument("--api-url", help="a running Prefect server's API (http://host:port/api); "
                                          "default: start one on a free loopback port")
    parser.add_argument("--flow-run-id", help="a finished pipeline run on that server: run none")
    parser.add_argument("--preset", help="a preset name or YAML file (default: the tests' micro config)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable)")
    parser.add_argument("--work-dir", type=Path, help="the run's work dir (default: a temporary one)")
    parser.add_argument("--ui", choices=("v1", "v2"), default="v1")
    parser.add_argument("--full", action="store_true", help="the whole card (default: down to the first loss plot)")
    parser.add_argument("--run-page-out", type=Path, help="also a PNG of the flow run's Artifacts tab")
    parser.add_argument("--width", type=int, default=1400)
    args = parser.parse_args(argv)
    if args.flow_run_id and not args.api_url:
        parser.error("--flow-run-id needs --api-url")
    if not Path(CHROMIUM).exists():
        parser.error(f"{CHROMIUM} is not installed (apt-get install chromium)")

    with tempfile.TemporaryDirectory(prefix="screenshot-flow-run-") as tmp, contextlib.ExitStack() as stack:
        # The UI asks the API at PREFECT_UI_API_URL, by default port 4200 whatever the server's own port:
        # a relative one points it at the server that served the page.
        api_url = args.api_url or stack.enter_context(prefect_server(
            Path(tmp), PREFECT_UI_API_URL="/api", PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT="false")).api_url
        flow_run_id = args.flow_run_id or run_pipeline(api_url, args, args.work_dir or Path(tmp) / "work")
        ui_url = api_url.rstrip("/").removesuffix("/api")
        card = screenshot(ui_url, flow_run_id, args)
    print(f"flow run: {ui_url}/runs/flow-run/{flow_run_id}\nreport card: {card}\nscreenshot: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
