from dashboard import views
from dashboard.state import sources

src = sources()
views.exports_page(src.exports, str(src.settings.export_dir), retention_days=src.settings.export_retention_days)
