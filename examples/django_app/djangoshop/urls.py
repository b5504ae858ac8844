from django.urls import path

from djangoshop import views

urlpatterns = [path("orders", views.checkout)]
