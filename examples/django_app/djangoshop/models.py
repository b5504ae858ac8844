"""The shop's one table."""

from django.db import models


class Order(models.Model):
    email = models.EmailField()
    sku = models.CharField(max_length=64)
    quantity = models.PositiveIntegerField(default=1)
    price = models.DecimalField(max_digits=10, decimal_places=2)
    currency = models.CharField(max_length=8)
    created = models.DateTimeField(auto_now_add=True)

    @property
    def value(self) -> float:
        return float(self.price * self.quantity)
