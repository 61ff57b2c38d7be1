"""``python -m dashboard``: run the Streamlit app on the configured address and port."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from marketstream.settings import load_settings

APP = Path(__file__).resolve().parent / "app.py"


def command(settings) -> list[str]:
    return [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.port", str(settings.dashboard_port),
        "--server.address", settings.dashboard_address,
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        # Pages come from st.navigation in app.py, not from the pages/ folder scan.
        "--client.showSidebarNavigation", "true",
        "--server.fileWatcherType", "none",
        # Viewers, not developers: no "Deploy" button or developer menu.
        "--client.toolbarMode", "viewer",
    ]


def main() -> None:
    settings = load_settings()  # fail here, with the variable's name, on a bad setting
    argv = command(settings)
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()
