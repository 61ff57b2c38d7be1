from dashboard import views
from dashboard.state import sources

src = sources()
views.order_book_page(src.order_book, src.settings.dashboard_stale_seconds)
