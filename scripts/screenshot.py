"""Take the README's screenshot: the app on the bundled demo case, segmented, on the Segmentation page.

Usage: ``.venv/bin/python scripts/screenshot.py [--out assets/screenshot_segmentation.png]`` (needs chromium, as the
browser tests do; runs the app on a free loopback port with a temporary work folder).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import e2e_util as e2e  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "assets" / "screenshot_segmentation.png"))
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, e2e.running_server(Path(tmp) / "work") as server, \
            sync_playwright() as pw:
        browser = e2e.launch_chromium(pw)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1250})
            page.set_default_timeout(120_000)
            page.goto(server.url)
            e2e.wait_idle(page, 120)
            e2e.goto_sidebar_page(page, "Case browser", 120)
            page.get_by_role("button", name="Open case").click()
            e2e.wait_text(page, "Selected case:", 120)
            e2e.wait_idle(page, 120)
            e2e.goto_sidebar_page(page, "Segmentation", 120)
            page.get_by_role("button", name="Segment whole volume").click()
            e2e.wait_text(page, "Whole-volume prediction of model", 300)
            e2e.wait_idle(page, 300)
            page.screenshot(path=args.out)
        finally:
            browser.close()
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
