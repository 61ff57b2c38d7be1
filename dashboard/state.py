"""Process-wide objects shared by every browser session of the dashboard."""

from __future__ import annotations

import streamlit as st

from dashboard.sources import Sources
from marketstream.settings import get_settings


@st.cache_resource
def sources() -> Sources:
    # One Sources per process: its topic tails and database pool serve all sessions.
    return Sources(get_settings())
