from dashboard import views
from dashboard.state import sources

src = sources()
views.desk_page(src.desk_days, src.desk_data)
