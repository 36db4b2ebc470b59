from django.urls import path

from storefront import views

app_name = "storefront"

urlpatterns = [
    path("", views.home, name="home"),
    path("c/<slug:slug>/", views.category, name="category"),
    path("new/", views.new_arrivals, name="new"),
    path("sale/", views.sale, name="sale"),
    path("journal/", views.journal, name="journal"),
    path("journal/<slug:slug>/", views.guide, name="guide"),
    path("p/<slug:product_id>/", views.product_page, name="product"),
    path("img/<slug:product_id>.svg", views.product_image, name="image"),
    path("cart/", views.cart, name="cart"),
    path("cart/add/", views.cart_add, name="cart-add"),
    path("cart/remove/", views.cart_remove, name="cart-remove"),
    path("checkout/", views.checkout, name="checkout"),
    path("order/", views.order, name="order"),
    path("login/", views.login, name="login"),
    path("logout/", views.logout, name="logout"),
]
