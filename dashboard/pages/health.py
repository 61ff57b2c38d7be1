from dashboard import views
from dashboard.state import sources

src = sources()
views.health_page(src.health, src.settings.dashboard_health_window_seconds,
                  src.settings.airflow_ui_url, src.settings.spark_ui_url,
                  stale_after_seconds=src.settings.dashboard_stale_seconds)
