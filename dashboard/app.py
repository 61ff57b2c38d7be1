"""Entry script for ``streamlit run`` (``python -m dashboard`` passes the right flags)."""

import streamlit as st

from dashboard import views
from dashboard.state import sources

st.set_page_config(page_title="marketstream", page_icon=":material/candlestick_chart:", layout="wide")
page = st.navigation([
    st.Page("pages/order_book.py", title="Order book", icon=":material/menu_book:", default=True, url_path="order-book"),
    st.Page("pages/health.py", title="Pipeline health", icon=":material/monitor_heart:", url_path="health"),
    st.Page("pages/exports.py", title="Exports", icon=":material/download:", url_path="exports"),
    st.Page("pages/desk.py", title="Trader desk", icon=":material/bolt:", url_path="desk"),
])
# On every page: why the figures are empty or stale when nobody started the pipeline.
views.pipeline_notice(sources().pipeline_notice, st.sidebar)
page.run()
