"""The web dashboard (Streamlit): order book, pipeline health, exports, trader desk."""
