"""`make screenshot`: docs/demo.png, the Overview of the demo sandbox at 120x40 as the README shows it.

The frame comes from the same pinned-clock world as the TUI snapshot tests (tests/tui.py), so a re-render
changes the picture only when the screen itself changed. Textual exports it as SVG; resvg (the `resvg-py`
wheel of the dev extra) turns that into a PNG, because GitHub shows an SVG's text in whatever font the
viewer has, and Textual's SVG asks for a web font a README cannot load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from textual.worker import WorkerFailed  # noqa: E402

from tests.tui import SIZE, PinnedClock, make_app, start_sandbox  # noqa: E402

# Textual's SVG names Fira Code first; DejaVu Sans Mono (Debian's default monospace) draws its box and block
# characters where Fira Code is not installed.
MONOSPACE = "DejaVu Sans Mono"


async def overview_svg(root: Path) -> str:
    """The first screen, once every load has finished and two frames in a row are the same."""
    with PinnedClock():
        box = start_sandbox(root)
        try:
            app = make_app(box)
            async with app.run_test(size=SIZE) as pilot:
                previous = ""
                for _ in range(50):
                    with contextlib.suppress(WorkerFailed):
                        await app.workers.wait_for_complete()
                    await pilot.pause(0.1)
                    current = app.export_screenshot(title="immich-tui --demo")
                    if current == previous:
                        break
                    previous = current
                return current
        finally:
            box.stop()


def render_png(svg: str) -> bytes:
    import resvg_py

    return resvg_py.svg_to_bytes(svg_string=svg, monospace_family=MONOSPACE, font_family=MONOSPACE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "demo.png", help="the PNG to write")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="immich-screenshot-") as tmp:
        svg = asyncio.run(overview_svg(Path(tmp)))
    png = render_png(svg)
    args.out.write_bytes(png)
    print(f"{args.out}: {len(png)} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
