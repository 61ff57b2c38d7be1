from dashboard import time_travel, views
from dashboard.state import sources

src = sources()
if time_travel.requested():  # ?t=<second> in the URL
    time_travel.time_travel_page(time_travel.loaders(src.settings))
else:
    views.order_book_page(src.order_book, src.settings.dashboard_stale_seconds)
    time_travel.entry_button()
