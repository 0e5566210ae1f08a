"""No web views: this project is a notebook and command-line analysis kit."""

urlpatterns: list = []
