from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from cloud_app import api, views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("api/states/", api.StatesView.as_view(), name="api-states"),
    path("api/states/<str:state>/households/", api.StateHouseholdsView.as_view(), name="api-state-households"),
    path("api/households/", api.HouseholdsView.as_view(), name="api-households"),
    # str, not path: no household id holds a '/' (fogwire.limits), and the HTML API page resolves every prefix of
    # a path with one, recursively: a household "a/a/a/..." made it fail.
    path("api/households/<str:household>/", api.HouseholdView.as_view(), name="api-household"),
    path("api/power/", api.PowerView.as_view(), name="api-power"),
    path("api/edges/", api.EdgesView.as_view(), name="api-edges"),
    path("api/edges/<str:edge>/history/", api.EdgeHistoryView.as_view(), name="api-edge-history"),
    path("api/tuples/recent/", api.RecentTuplesView.as_view(), name="api-recent"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
]
